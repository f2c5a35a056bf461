// Tests start nodes with the same launcher as the benchmarks.
export * from "../../bench/lib/tern-process.ts";
