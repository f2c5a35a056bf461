// Samples what a node allocates, collected or not, for bench/heap-profile.ts to summarise.
// Loaded into each node a bench starts:
//   TERN_NODE_EXEC_ARGV="--import ./bench/heap-sampling.mjs" TERN_HEAP_PROFILE_DIR=/tmp/heap npm run bench -- …
// node --heap-prof keeps only what is still alive when the profile is written, so it
// cannot show the churn a garbage collector pays for (a view made per line and dropped at
// once). V8's sampling profiler can include collected objects when asked through the
// inspector; that is what this does. The profile is written when the node exits, or at once
// on SIGUSR2, as DIR/Heap.<pid>.<ms since start>.heapprofile (DIR: TERN_HEAP_PROFILE_DIR,
// else the working directory). Plain JavaScript: the node runs from the bundle, without tsx.
import { writeFileSync } from "node:fs";
import { Session } from "node:inspector";
import { join } from "node:path";

const SAMPLING_INTERVAL_BYTES = 16 * 1024;
const started = Date.now();
const session = new Session();
session.connect();
// An in-process inspector session answers synchronously, so `write` also works in an exit handler.
session.post("HeapProfiler.enable");
session.post("HeapProfiler.startSampling", {
  samplingInterval: SAMPLING_INTERVAL_BYTES,
  includeObjectsCollectedByMajorGC: true,
  includeObjectsCollectedByMinorGC: true,
});

let written = false;
const write = () => {
  if (written) return;
  written = true;
  session.post("HeapProfiler.stopSampling", (error, result) => {
    if (error) return console.error(`heap-sampling: ${error.message}`);
    const file = join(process.env.TERN_HEAP_PROFILE_DIR ?? process.cwd(), `Heap.${process.pid}.${Date.now() - started}.heapprofile`);
    writeFileSync(file, JSON.stringify(result.profile));
  });
};
process.on("SIGUSR2", write);
process.on("exit", write);
