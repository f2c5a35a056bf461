// scripts/build.mjs puts each build in a directory of its own and swaps dist/cli.js, a
// one-line entry, by a rename: a tern started while a build runs finds a complete build,
// old or new, never none; and the build before stays for the terns it started.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { setImmediate as nextTurn } from "node:timers/promises";
import { projectRoot, run } from "../support/tern-node.ts";

const dist = join(projectRoot, "dist");

/** The build dist/cli.js runs, read as a starting tern would find it; undefined when missing. */
const currentBuild = (): string | undefined => {
  try {
    return /import\("\.\/(build-[^/]+)\/cli\.js"\)/.exec(readFileSync(join(dist, "cli.js"), "utf8"))?.[1];
  } catch {
    return undefined;
  }
};

test("a build swaps dist/cli.js atomically: while it runs, the entry always names a complete build; the previous build is kept", async () => {
  const before = currentBuild();
  assert.ok(before, "npm test builds first: dist/cli.js names a build");
  const build = spawn(process.execPath, [join(projectRoot, "scripts/build.mjs")], { stdio: "ignore" });
  const exited = new Promise<number | null>((resolve) => build.once("exit", resolve));
  let running = true;
  void exited.then(() => (running = false));
  const problems = new Set<string>();
  let reads = 0;
  while (running) {
    const name = currentBuild();
    reads++;
    if (name === undefined) problems.add("dist/cli.js missing or naming no build");
    else if (!existsSync(join(dist, name, "cli.js"))) problems.add(`dist/cli.js names ${name}, which is not complete`);
    await nextTurn();
  }
  assert.equal(await exited, 0);
  assert.deepEqual([...problems], [], `${reads} reads while building`);
  const after = currentBuild();
  assert.ok(after && after !== before, "the entry names the new build");
  assert.ok(existsSync(join(dist, before, "cli.js")), "the build before is kept for a tern that started from it");

  const help = await run(process.execPath, [join(dist, "cli.js"), "--help"]);
  assert.match(help.stdout + help.stderr, /usage: tern node/);
});
