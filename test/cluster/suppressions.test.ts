// The suppression list's KV bucket on the machine's NATS: adds that keep the first record,
// removes, reads; and the watch that keeps a node's view: the entries already there when
// it starts (and an empty bucket) make the view loaded, later changes by another node
// arrive within moments, and a view made by a second watcher agrees.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { jetstreamManager } from "@nats-io/jetstream";
import { Effect, Exit, Scope } from "effect";
import { openSuppressions } from "../../cluster/suppressions.ts";
import { makeSuppressionList, type SuppressionList } from "../../actors/suppression/list.ts";
import { makeSubjects, type Subjects } from "../../protocol/subjects.ts";
import { suppressionKey, type SuppressionRecord } from "../../protocol/suppression.ts";
import { eventually, uniqueCluster } from "../support/tern-node.ts";

let nc: NatsConnection;
let subjects: Subjects;
const scopes: Scope.Closeable[] = [];

before(async () => {
  subjects = makeSubjects(uniqueCluster());
  nc = await connect({ servers: "127.0.0.1:4222", inboxPrefix: subjects.nodeInbox("n1") });
});

after(async () => {
  for (const scope of scopes) await Effect.runPromise(Scope.close(scope, Exit.void));
  await (await jetstreamManager(nc)).streams.delete(`KV_${subjects.suppressionsBucket}`).catch(() => undefined);
  await nc.close();
});

const bucketOf = () => openSuppressions(nc, { bucket: subjects.suppressionsBucket, replicas: 1, watcherPrefix: subjects.nodeInbox("n1") });

const record = (address: string, scope = "global"): SuppressionRecord => ({ address, scope, reason: "bad-mailbox", at: 1_000, node: "n1" });

/** A watch feeding a fresh view, stopped after the tests. */
const follow = async (): Promise<{ list: SuppressionList; loads: number[] }> => {
  const scope = await Effect.runPromise(Scope.make());
  scopes.push(scope);
  const list = makeSuppressionList();
  const loads: number[] = [];
  await Effect.runPromise(
    Scope.provide(scope)(bucketOf().follow(list, { loaded: (n) => void loads.push(n), failed: () => undefined, malformed: () => undefined })),
  );
  return { list, loads };
};

test("a watch of an empty bucket is loaded at once, then sees adds and removes made elsewhere", async () => {
  const { list, loads } = await follow();
  await eventually(() => (list.loaded() ? true : undefined), 5_000, "the first load");
  assert.deepEqual(loads, [0]);
  const { store } = bucketOf();
  assert.equal(await Effect.runPromise(store.create(suppressionKey("global", "gone@dest.test"), record("gone@dest.test"))), true);
  await eventually(() => list.lookup("", "Gone@dest.test"), 5_000, "the add in the view");
  assert.equal(await Effect.runPromise(store.remove(suppressionKey("global", "gone@dest.test"))), true);
  assert.equal(await Effect.runPromise(store.remove(suppressionKey("global", "gone@dest.test"))), false);
  await eventually(() => (list.lookup("", "gone@dest.test") === undefined ? true : undefined), 5_000, "the removal in the view");
});

test("adds keep the first record; a key removed before can be added again", async () => {
  const { store } = bucketOf();
  const key = suppressionKey("acme.example", "a@dest.test");
  assert.equal(await Effect.runPromise(store.create(key, record("a@dest.test", "acme.example"))), true);
  assert.equal(await Effect.runPromise(store.create(key, { ...record("A@dest.test", "acme.example"), reason: "complaint" })), false);
  assert.deepEqual(await Effect.runPromise(store.get(key)), record("a@dest.test", "acme.example"));
  await Effect.runPromise(store.remove(key));
  assert.equal(await Effect.runPromise(store.get(key)), undefined);
  assert.equal(await Effect.runPromise(store.create(key, { ...record("a@dest.test", "acme.example"), reason: "manual" })), true);
  assert.equal((await Effect.runPromise(store.get(key)))?.reason, "manual");
});

test("a watch started later loads every entry there, deleted ones left out", async () => {
  const { store } = bucketOf();
  for (let n = 0; n < 50; n++) await Effect.runPromise(store.create(suppressionKey("global", `bulk${n}@dest.test`), record(`bulk${n}@dest.test`)));
  await Effect.runPromise(store.remove(suppressionKey("global", "bulk7@dest.test")));
  const { list, loads } = await follow();
  await eventually(() => (list.loaded() ? true : undefined), 5_000, "the first load");
  // 49 bulk entries and the one the previous test left.
  assert.deepEqual(loads, [50]);
  assert.equal(list.size(), 50);
  assert.equal(list.lookup("", "bulk7@dest.test"), undefined);
  assert.deepEqual(list.lookup("", "bulk8@dest.test"), { scope: "global", reason: "bad-mailbox" });
  assert.deepEqual(list.lookup("x@acme.example", "a@dest.test"), { scope: "acme.example", reason: "manual" });
});
