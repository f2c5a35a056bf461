#!/usr/bin/env node
// The `tern` command: runs the compiled bundle, dist/cli.js (scripts/build.mjs). In a
// checkout whose sources changed since the last build, it builds first, so `npx tern`
// never runs stale code; with nothing changed that check costs a few milliseconds.
import { ensureBuilt } from "../scripts/build.mjs";

try {
  await ensureBuilt({ quiet: true });
} catch (error) {
  console.error(`tern: ${error instanceof Error ? error.message : String(error)}`);
  process.exit(1);
}
await import("../dist/cli.js");
