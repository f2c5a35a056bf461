// Where this installation of Tern lives, and how to start its CLI again. The same code
// runs from the sources (nodes/*.ts under tsx) and from the bundle (dist/*.js, one chunk
// per command), so nothing may count folders up from its own file: the root is the
// nearest folder above with Tern's package.json.
import { existsSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const findRoot = (from: string): string => {
  for (let dir = from; ; dir = dirname(dir)) {
    const manifest = join(dir, "package.json");
    if (existsSync(manifest) && (JSON.parse(readFileSync(manifest, "utf8")) as { name?: unknown }).name === "tern") return dir;
    if (dirname(dir) === dir) return from; // not found: an installation without its package.json
  }
};

/** The folder holding Tern's package.json. */
export const installRoot: string = findRoot(dirname(fileURLToPath(import.meta.url)));

/** Tern's version (package.json), "unknown" without one. */
export const ternVersion: string = (() => {
  try {
    return String((JSON.parse(readFileSync(join(installRoot, "package.json"), "utf8")) as { version?: unknown }).version ?? "unknown");
  } catch {
    return "unknown";
  }
})();

/**
 * The command line that runs this same `tern` again: node, its flags (tsx's loader when
 * running from the sources) and the entry script (dist/cli.js, bin/tern.js or nodes/cli.ts).
 */
export const selfCommand = (): { readonly command: string; readonly args: ReadonlyArray<string> } => ({
  command: process.execPath,
  args: [...process.execArgv, process.argv[1]!],
});
