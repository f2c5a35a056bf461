// A bucket made before the cluster had three servers (or before nats.replicas was raised)
// is put on three replicas when a node opens it, keeping its keys; its TTL is put right
// the same way. On a three-server NATS cluster of the test's own.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { jetstreamManager } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { differingLimits, openBucket } from "../../cluster/kv-bucket.ts";
import { startNatsCluster, type TestNatsCluster } from "../support/nats-cluster.ts";
import { eventually } from "../support/tern-node.ts";

let nats: TestNatsCluster;
let nc: NatsConnection;

before(async () => {
  nats = await startNatsCluster();
  nc = await connect({ servers: [...nats.urls] });
});

after(async () => {
  await nc?.close();
  await nats?.dispose();
});

const peersOf = async (stream: string) =>
  eventually(async () => {
    const info = await (await jetstreamManager(nc)).streams.info(stream);
    const peers = [info.cluster?.leader, ...(info.cluster?.replicas ?? []).map((peer) => peer.name)].filter(Boolean);
    return info.cluster?.leader ? { replicas: info.config.num_replicas, maxAge: info.config.max_age, peers: new Set(peers).size } : undefined;
  }, 10_000, `${stream} with a leader`);

test("a new bucket is created on the replicas asked for", async () => {
  await openBucket(nc, "fresh", { history: 1, replicas: 3 }, 5_000);
  assert.deepEqual(await peersOf("KV_fresh"), { replicas: 3, maxAge: 0, peers: 3 });
});

test("an existing single-replica bucket is raised to three replicas and keeps its keys", async () => {
  const old = await new Kvm(nc).create("grown", { history: 1, replicas: 1 });
  await old.put("alice", "node-a");
  assert.equal((await peersOf("KV_grown")).replicas, 1);

  const kv = await openBucket(nc, "grown", { history: 1, replicas: 3, ttlMs: 60_000 }, 5_000);
  assert.deepEqual(await eventually(async () => {
    const now = await peersOf("KV_grown");
    return now.peers === 3 ? now : undefined;
  }, 10_000, "three peers"), { replicas: 3, maxAge: 60_000 * 1_000_000, peers: 3 });
  assert.equal((await kv.get("alice"))?.string(), "node-a");
});

test("only the limits that differ are named", () => {
  assert.deepEqual(differingLimits({ num_replicas: 1, max_age: 5 }, { num_replicas: 3, max_age: 5 }), ["num_replicas"]);
  assert.deepEqual(differingLimits({ num_replicas: 3 }, { num_replicas: 3 }), []);
});
