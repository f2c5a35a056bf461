// Idempotency keys across a cluster: two node processes serve the API in one queue group,
// so a retried submit may land on either. The key is claimed in the cluster's KV bucket;
// a retry on the other node gets the first node's reply and queues nothing, is refused
// with Unavailable while that node is down (never a second copy), and a claim whose node
// queued nothing is taken over. Real nodes, the machine's NATS, a sink through dnsmasq.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { Kvm } from "@nats-io/kv";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { keyOf } from "../../cluster/api-keys.ts";
import { connectTern, TernApiError, type TernClient } from "../../cluster/client.ts";
import type { SubmitReply } from "../../protocol/api.ts";
import { makeSubjects } from "../../protocol/subjects.ts";
import { startDnsmasq, type RunningDnsmasq } from "../support/dnsmasq.ts";
import { startSink, type Sink } from "../support/sink.ts";
import { eventually, makeDataDir, removeDataDir, sleep, startTernNode, uniqueCluster, type TernNode } from "../support/tern-node.ts";

const cluster = uniqueCluster();
const subjects = makeSubjects(cluster);
let dns: RunningDnsmasq;
let sink: Sink;
let dirA: string;
let dirB: string;
let nodeA: TernNode | undefined;
let nodeB: TernNode | undefined;
let tern: TernClient;

const config = (nodeId: string, dataDir: string) => ({
  nodeId,
  cluster,
  dataDir,
  localDomains: ["example.test"],
  users: [{ address: "alice@example.test", password: "pw" }],
  dns: { servers: [`${dns.host}:${dns.port}`], timeoutMs: 1000, tries: 2, allowedTargetNetworks: ["127.0.0.0/8"] },
  delivery: { remotePort: sink.port, retryBaseMs: 200, retryMaxMs: 1000, pollMs: 50, connectTimeoutMs: 2000 },
  api: { idempotencyTtlMs: 600_000 },
});

before(async () => {
  sink = await startSink();
  dns = await startDnsmasq({
    mx: [{ domain: "remote.test", host: "mx.remote.test", preference: 10 }],
    hosts: [{ name: "mx.remote.test", address: "127.0.0.1" }],
  });
  [dirA, dirB] = await Promise.all([makeDataDir(), makeDataDir()]);
  tern = await connectTern({ cluster });
});

after(async () => {
  await Promise.all([nodeA?.kill("SIGTERM"), nodeB?.kill("SIGTERM")]);
  // The bucket of this run's keys is of no use to anyone after it.
  await (await jetstreamManager(tern.nc)).streams.delete(`KV_${subjects.apiKeysBucket}`).catch(() => undefined);
  await tern?.close();
  await Promise.all([sink?.close(), dns?.stop(), removeDataDir(dirA), removeDataDir(dirB)]);
});

const envelopeTo = (to: string) => ({ from: "alice@example.test", to: [to] });
const submitKeyed = (to: string, key: string) => tern.submitRaw(`Subject: ${key}\r\n\r\nonce only\r\n`, envelopeTo(to), { idempotencyKey: key });
const copiesAt = (to: string) => sink.received.filter((m) => m.to.includes(to)).length;

/** The sink got one copy; a while later still one (a second copy would have had time to arrive). */
const exactlyOneCopy = async (to: string) => {
  await eventually(() => (copiesAt(to) > 0 ? true : undefined), 20_000, `${to} at the sink`);
  await sleep(1_500);
  assert.equal(copiesAt(to), 1, `exactly one copy to ${to}`);
};

test("a retry on another node gets the first reply; while the first node is down it is refused, never queued twice", async () => {
  nodeA = await startTernNode(config("a", dirA));
  const first = await submitKeyed("order1@remote.test", "order-1");
  assert.equal(first.node, "a");
  assert.equal(first.duplicate, false);

  nodeB = await startTernNode(config("b", dirB));
  await nodeA.kill("SIGTERM");
  // Only B serves the API now, and A holds the key.
  await assert.rejects(submitKeyed("order1@remote.test", "order-1"), (error: TernApiError) => {
    assert.equal(error.code, "Unavailable");
    assert.match(error.message, /node a took this idempotency key first and does not answer/);
    return true;
  });
  // Unkeyed submits do not depend on other nodes.
  const unkeyed = await tern.submitRaw("Subject: plain\r\n\r\nno key\r\n", envelopeTo("plain@remote.test"));
  assert.equal(unkeyed.node, "b");

  nodeA = await startTernNode(config("a", dirA));
  // Either node may take each retry: retry until B has answered one from A's record.
  const replies: SubmitReply[] = [];
  for (let n = 0; n < 30 && nodeB.events("api.idempotency.answered").length === 0; n++) replies.push(await submitKeyed("order1@remote.test", "order-1"));
  assert.ok(nodeB.events("api.idempotency.answered").length > 0, "a retry reached B and B answered it");
  for (const reply of replies) assert.deepEqual(reply, { ...first, duplicate: true });
  await exactlyOneCopy("order1@remote.test");
  assert.deepEqual(nodeB.events("message.accepted").map((line) => line.queueId), [unkeyed.messageId], "B committed only the unkeyed message");
});

test("concurrent submits with one key racing on two nodes queue one message, and every reply names it", async () => {
  nodeA ??= await startTernNode(config("a", dirA));
  nodeB ??= await startTernNode(config("b", dirB));
  const replies = await Promise.all(Array.from({ length: 40 }, () => submitKeyed("race@remote.test", "race-1")));
  const ids = new Set(replies.map((r) => r.messageId));
  assert.equal(ids.size, 1, `one message id, got ${[...ids].join(", ")}`);
  assert.equal(replies.filter((r) => !r.duplicate).length, 1, "one reply is the commit, the others duplicates");
  // The other node took some of the submits and answered them from the first node's reply.
  const committed = replies.find((r) => !r.duplicate)!;
  await (committed.node === "a" ? nodeB : nodeA).waitForEvent("api.idempotency.answered", { queueId: committed.messageId }, 5_000);
  await exactlyOneCopy("race@remote.test");
});

test("a claim whose node queued nothing is taken over; one naming a node that never answers blocks the key", async () => {
  const kv = await new Kvm(jetstream(tern.nc)).open(subjects.apiKeysBucket);
  // As if A had claimed the key and stopped before its commit: A has no record of it.
  await kv.create(keyOf("default", "orphan-1"), "a");
  const reply = await submitKeyed("orphan@remote.test", "orphan-1");
  assert.equal(reply.duplicate, false);
  assert.equal((await kv.get(keyOf("default", "orphan-1")))?.string(), reply.node, "the committing node holds the claim now");
  const again = await submitKeyed("orphan@remote.test", "orphan-1");
  assert.equal(again.messageId, reply.messageId);
  await exactlyOneCopy("orphan@remote.test");

  // A claim by a node that does not answer may stand for a message that exists.
  await kv.create(keyOf("default", "ghost-1"), "ghost");
  await assert.rejects(submitKeyed("ghost@remote.test", "ghost-1"), (error: TernApiError) => error.code === "Unavailable");
  await sleep(500);
  assert.equal(copiesAt("ghost@remote.test"), 0);
});
