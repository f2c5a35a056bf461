// Three nodes of one cluster on the shared NATS: each sees the others join within
// seconds, sees a node stopped with SIGTERM leave at once and a node killed with -9 leave
// within the members bucket's TTL; the changes are logged and published as node-up /
// node-down events; `tern cluster status` lists the members with their fields.
import { test } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { connect } from "@nats-io/transport-node";
import { followStreamEvents } from "../../cluster/events-client.ts";
import { eventually, makeDataDir, projectRoot, removeDataDir, run, startTernNode, uniqueCluster, type TernNode, ternCli } from "../support/tern-node.ts";

const HEARTBEAT_MS = 1_000;
const TTL_MS = 3_000;

test("members see joins, graceful leaves at once and killed nodes within the TTL; tern cluster status lists them", async () => {
  const cluster = uniqueCluster();
  const dir = await makeDataDir();
  const nodes: TernNode[] = [];
  try {
    for (const id of ["a", "b", "c"]) {
      nodes.push(await startTernNode({ cluster, nodeId: id, dataDir: join(dir, id), membership: { heartbeatMs: HEARTBEAT_MS, ttlMs: TTL_MS } }));
    }
    const [a, b, c] = nodes as [TernNode, TernNode, TernNode];
    // a started first: it sees b and c come up (and itself).
    for (const member of ["a", "b", "c"]) await a.waitForEvent("cluster.member.up", { member }, 10_000);
    await c.waitForEvent("cluster.member.up", { member: "c" }, 10_000);

    const cli = (...args: string[]) => run(process.execPath, [...ternCli, "cluster", "status", "--config", join(dir, "a", "config-a.json"), ...args]);
    const listed = await eventually(async () => {
      const result = await cli("--json");
      assert.equal(result.code, 0, result.stderr);
      const reply = JSON.parse(result.stdout) as { members: Array<Record<string, unknown>> };
      return reply.members.length === 3 ? reply.members : undefined;
    }, 10_000, "three members listed");
    assert.deepEqual(listed.map((m) => m.node), ["a", "b", "c"]);
    for (const member of listed) {
      assert.equal(member.version, "0.1.0");
      assert.equal(member.ready, true, JSON.stringify(member));
      assert.deepEqual(member.problems, []);
      assert.equal(member.queueDepth, 0);
      assert.equal(member.outboundConnections, 0);
      assert.ok(typeof member.startedAt === "number" && member.startedAt <= Date.now());
    }
    assert.equal((listed[1]!.ports as { smtp: number }).smtp, b.ports.smtp);
    const table = await cli();
    assert.equal(table.code, 0, table.stderr);
    assert.match(table.stdout, /^NODE\s+VERSION\s+UPTIME\s+READY\s+QUEUE\s+OUTBOUND/m);
    assert.match(table.stdout, /^b\s+0\.1\.0\s+\d+s\s+yes\s+0\s+0\s+/m);
    assert.match(table.stdout, /^3 members$/m);

    // SIGTERM: b deletes its record as it stops; a sees it leave at its next reading.
    const stoppedAt = Date.now();
    await b.kill("SIGTERM");
    const left = await a.waitForEvent("cluster.member.down", { member: "b" }, 5_000);
    assert.equal(left.reason, "left");
    assert.ok(Date.now() - stoppedAt < 2_500, `graceful leave seen after ${Date.now() - stoppedAt} ms`);

    // kill -9: c's record expires with the bucket's TTL.
    const killedAt = Date.now();
    await c.kill("SIGKILL");
    const expired = await a.waitForEvent("cluster.member.down", { member: "c" }, TTL_MS + 5_000);
    const seenAfter = Date.now() - killedAt;
    assert.equal(expired.reason, "expired");
    assert.ok(seenAfter <= TTL_MS + 2_500, `killed node seen gone after ${seenAfter} ms (TTL ${TTL_MS} ms)`);

    const after = JSON.parse((await cli("--json")).stdout) as { members: Array<{ node: string }> };
    assert.deepEqual(after.members.map((m) => m.node), ["a"]);

    // The changes are on the events stream, once each although every node saw them.
    const nc = await connect({ servers: ["nats://127.0.0.1:4222"] });
    try {
      const seen: string[] = [];
      for await (const { event } of followStreamEvents(nc, { cluster, tenant: "cluster", start: "first", timeoutMs: 3_000 })) {
        if (event.type === "node-up" || event.type === "node-down") seen.push(`${event.type} ${event.member}${event.reason ? ` ${event.reason}` : ""}`);
      }
      assert.deepEqual(seen.filter((e) => e.startsWith("node-down")), ["node-down b left", "node-down c expired"]);
      assert.deepEqual(seen.filter((e) => e.startsWith("node-up")).sort(), ["node-up a", "node-up b", "node-up c"]);
    } finally {
      await nc.close();
    }
  } finally {
    await Promise.all(nodes.map((node) => node.kill("SIGTERM")));
    await removeDataDir(dir);
  }
});
