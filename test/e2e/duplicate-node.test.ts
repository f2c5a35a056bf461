// A second node started with the id of a node already running in the cluster refuses to
// start (it would claim the same mailboxes and spool identity), while a node restarted
// right after kill -9, whose old record is still in the members bucket, starts.
import { test } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { makeDataDir, removeDataDir, startTernNode, uniqueCluster, type TernNode } from "../support/tern-node.ts";

const membership = { heartbeatMs: 1_000, ttlMs: 5_000 };

test("a node id already alive in the cluster is refused; the same id restarted after kill -9 starts", async () => {
  const cluster = uniqueCluster();
  const dir = await makeDataDir();
  const running: TernNode[] = [];
  try {
    const first = await startTernNode({ cluster, nodeId: "a", dataDir: join(dir, "first"), membership });
    running.push(first);
    await first.waitForEvent("cluster.member.up", { member: "a" }, 10_000);

    await assert.rejects(
      startTernNode({ cluster, nodeId: "a", dataDir: join(dir, "twin"), membership }).then((twin) => running.push(twin)),
      (error: Error) => /exited \(\d+\) before node\.started/.test(error.message) && /node id "a" is already running in this cluster/.test(error.message),
    );

    // A crashed node's record stays until the TTL; its restart must not take it for a twin.
    await first.kill("SIGKILL");
    running.length = 0;
    const restarted = await startTernNode({ cluster, nodeId: "a", dataDir: join(dir, "first"), membership });
    running.push(restarted);
  } finally {
    await Promise.all(running.map((node) => node.kill("SIGTERM")));
    await removeDataDir(dir);
  }
});
