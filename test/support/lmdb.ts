// Real LMDB environments in temporary directories for unit tests, closed and removed when
// the test file ends.
import { after } from "node:test";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { open, type RootDatabase } from "lmdb";

export const temporaryLmdb = (prefix: string) => {
  const dirs: string[] = [];
  const roots: RootDatabase[] = [];
  after(async () => {
    await Promise.all(roots.map((r) => r.close()));
    await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
  });
  /** Opens (or reopens, as after a restart) the environment in `dir`. */
  const openAt = (dir: string): RootDatabase => {
    const root = open({ path: join(dir, "tern.lmdb"), maxDbs: 64 });
    roots.push(root);
    return root;
  };
  const fresh = async () => {
    const dir = await mkdtemp(join(tmpdir(), prefix));
    dirs.push(dir);
    return { dir, root: openAt(dir) };
  };
  /** Closes an environment now (a restart); the end of the file leaves it alone. */
  const close = async (root: RootDatabase) => {
    roots.splice(roots.indexOf(root), 1);
    await root.close();
  };
  return { openAt, fresh, close };
};
