// Builds the runtime: one esbuild bundle of the TypeScript sources, in dist/build-…/ with
// the entry dist/cli.js (ESM for Node 20), with a chunk per command (nodes/cli.ts loads each command by a dynamic import),
// so `tern queue list` loads the queue command and what it shares with the rest, not the
// node. Dependencies are bundled too (fewer files to resolve and read at start), except
// those esbuild cannot carry: native addons and packages that find files next to themselves
// at run time, which node loads from node_modules as usual.
//
//   node scripts/build.mjs              build
//   node scripts/build.mjs --if-stale   build only when a source is newer than the last build
//
// Plain JavaScript, so it runs with node alone, before anything is built. Also imported by
// bin/tern.js (`ensureBuilt`), so `npx tern` in a checkout being edited runs what is there.
import { existsSync, mkdirSync, readdirSync, renameSync, rmSync, statSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const dist = join(root, "dist");
/** Written last by a build that succeeded: its time is the build's. */
const stamp = join(dist, ".built");

/** What the bundle is made of: a change to any of these makes it stale. */
const SOURCE_DIRS = ["nodes", "actors", "protocol", "cluster"];
const SOURCE_FILES = ["package.json", "package-lock.json", "tsconfig.json", "scripts/build.mjs"];

/**
 * Left to node to load from node_modules: native addons (lmdb and its msgpackr, with the
 * optional msgpackr-extract), which esbuild cannot bundle.
 */
const EXTERNAL = ["lmdb", "msgpackr", "msgpackr-extract", "@lmdb/*", "@msgpackr-extract/*"];

/** The newest modification time under the sources, directories included (a deleted file changes its directory). */
const newestSource = () => {
  let newest = 0;
  const visit = (path) => {
    const stats = statSync(path, { throwIfNoEntry: false });
    if (!stats) return;
    newest = Math.max(newest, stats.mtimeMs);
    if (stats.isDirectory()) for (const name of readdirSync(path)) visit(join(path, name));
  };
  for (const dir of SOURCE_DIRS) visit(join(root, dir));
  for (const file of SOURCE_FILES) visit(join(root, file));
  return newest;
};

/** Whether dist/ is missing or older than a source. */
export const isStale = () => {
  const built = statSync(stamp, { throwIfNoEntry: false });
  return !built || !existsSync(join(dist, "cli.js")) || newestSource() > built.mtimeMs;
};

export const build = async ({ quiet = false } = {}) => {
  const started = Date.now();
  let esbuild;
  try {
    esbuild = await import("esbuild");
  } catch {
    throw new Error("esbuild is not installed: `npm ci` (with dev dependencies) installs it, then `npm run build` builds dist/");
  }
  // Each build goes to a directory of its own, dist/build-<time>-<pid>/, and dist/cli.js is
  // a one-line entry that imports the current one. The entry is replaced by a rename, which
  // is atomic: a tern starting meanwhile runs the old build or the new one, never half of
  // one, and never finds dist/cli.js missing. A tern already running keeps loading its
  // lazily imported chunks from its own build's directory, so the previous build is kept
  // (older ones are removed).
  mkdirSync(dist, { recursive: true });
  const name = `build-${Date.now().toString(36)}-${process.pid}`;
  const building = join(dist, `${name}.partial`);
  rmSync(building, { recursive: true, force: true });
  const result = await esbuild.build({
    absWorkingDir: root,
    entryPoints: { cli: "nodes/cli.ts" },
    outdir: building,
    chunkNames: "chunks/[name]-[hash]",
    bundle: true,
    splitting: true,
    format: "esm",
    platform: "node",
    target: "node20",
    external: EXTERNAL,
    // Bundled CommonJS modules call require() for node's built-ins; ESM has none, so every
    // output file gets one.
    banner: { js: 'import { createRequire as __ternRequire } from "node:module"; const require = __ternRequire(import.meta.url);' },
    sourcemap: "linked",
    // No keepNames: it wraps every function expression in a __name(fn, "name") call, run each
    // time a closure is made (1.5% of a relaying node's CPU). Without minifying, functions keep
    // their own names; only one renamed to avoid a clash between modules shows as e.g. `send2`
    // in a stack trace. Effect's errors take their name from their tag, and spans are named
    // by string.
    legalComments: "none",
    logLevel: "warning",
    metafile: true,
  });
  renameSync(building, join(dist, name));
  const entry = join(dist, `cli.js.${process.pid}`);
  writeFileSync(entry, `// The current build (scripts/build.mjs replaces this file when it builds).\nawait import("./${name}/cli.js");\n`);
  renameSync(entry, join(dist, "cli.js"));
  writeFileSync(stamp, `${new Date().toISOString()} ${name}\n`);
  removeOldBuilds(name);
  if (!quiet) {
    const outputs = Object.entries(result.metafile.outputs).filter(([path]) => path.endsWith(".js"));
    const bytes = outputs.reduce((sum, [, output]) => sum + output.bytes, 0);
    console.error(`tern: built dist/cli.js (${outputs.length} files, ${(bytes / 1024 / 1024).toFixed(1)} MB) in ${Date.now() - started} ms`);
  }
};

/**
 * Removes the builds before the previous one, keeping `current` and the newest other (a tern
 * started before this build may still load chunks from it), and what a build that failed
 * more than 10 minutes ago left (a younger one may be a build still running).
 */
const removeOldBuilds = (current) => {
  const builds = readdirSync(dist)
    .filter((entry) => entry.startsWith("build-") && entry !== current)
    .map((entry) => ({ entry, time: statSync(join(dist, entry)).mtimeMs }))
    .sort((a, b) => b.time - a.time);
  const [, ...older] = builds.filter((b) => !b.entry.endsWith(".partial"));
  const abandoned = builds.filter((b) => b.entry.endsWith(".partial") && Date.now() - b.time > 10 * 60_000);
  for (const { entry } of [...older, ...abandoned]) rmSync(join(dist, entry), { recursive: true, force: true });
  // What the single-directory layout of earlier versions left at the top.
  for (const legacy of ["chunks", "cli.js.map"]) rmSync(join(dist, legacy), { recursive: true, force: true });
};

/** Builds when dist/ is missing or stale; true when it built. */
export const ensureBuilt = async (options = {}) => {
  if (!isStale()) return false;
  await build(options);
  return true;
};

if (import.meta.url === pathToFileURL(process.argv[1] ?? "").href) {
  const ifStale = process.argv.includes("--if-stale");
  try {
    if (ifStale) await ensureBuilt();
    else await build();
  } catch (error) {
    console.error(`tern: build failed: ${error instanceof Error ? error.message : String(error)}`);
    process.exit(1);
  }
}
