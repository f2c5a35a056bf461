// The spool's per-queue indexes: due order per destination, suspension, outcomes
// committed with their DSNs, and the page-by-page walks queue administration uses.
import { test } from "node:test";
import assert from "node:assert/strict";
import { Effect } from "effect";
import { newMessageId, type QueueEntry } from "../../../actors/queue/entry.ts";
import { temporaryLmdb } from "../../support/lmdb.ts";
import { openSpool, type Spool } from "../../../actors/queue/spool.ts";

const lmdb = temporaryLmdb("tern-spool-");

const openAt = (dir: string) => {
  const root = lmdb.openAt(dir);
  return { root, spool: openSpool(root) };
};

const fresh = async () => {
  const { dir } = await lmdb.fresh();
  return { dir, ...openAt(dir) };
};

const accept = async (spool: Spool, at: number, sender: string, recipients: string[]) => {
  const id = newMessageId(at);
  const body = spool.openBody(id);
  body.append(Buffer.from(`Subject: ${id}\r\n\r\nbody\r\n`));
  const byDomain = new Map<string, string[]>();
  for (const r of recipients) byDomain.set(r.split("@")[1]!, [...(byDomain.get(r.split("@")[1]!) ?? []), r]);
  const routes = [...byDomain].map(([domain, rcpts]) => ({ route: { kind: "remote" as const, domain }, recipients: rcpts }));
  return Effect.runPromise(spool.accept({ id, sender, receivedAt: at, body, routes }));
};

const queues = (spool: Spool, now: number) => [...spool.dueQueues(now)].map((q) => q.queue);

test("due work is found per queue, oldest first, and a rescheduled entry moves its queue's head", async () => {
  const { spool } = await fresh();
  const t = 1_000_000;
  const [a1] = await accept(spool, t, "s@x.test", ["r@a.test"]);
  const [b1] = await accept(spool, t + 10, "s@x.test", ["r@b.test"]);
  const [a2] = await accept(spool, t + 20, "s@x.test", ["r@a.test"]);
  assert.deepEqual(queues(spool, t + 100), ["a.test", "b.test"]);
  assert.deepEqual(queues(spool, t + 5), ["a.test"]);
  assert.deepEqual(spool.dueIn("a.test", t + 100, 10).map((e) => e.id), [a1!.id, a2!.id]);
  assert.deepEqual(spool.dueIn("a.test", t + 100, 10, (id) => id === a1!.id).map((e) => e.id), [a2!.id]);

  await Effect.runPromise(spool.settle(a1!, { ...a1!, nextAttemptAt: t + 500, attempts: 1, reason: "temporary-reply" }, []));
  assert.deepEqual([...spool.dueQueues(t + 100)].map((q) => [q.queue, q.at]), [["b.test", t + 10], ["a.test", t + 20]]);
  await Effect.runPromise(spool.settle(a2!, undefined, []));
  await Effect.runPromise(spool.settle(b1!, undefined, []));
  assert.deepEqual(queues(spool, t + 100), []);
  assert.deepEqual([...spool.dueQueues(t + 1000)].map((q) => [q.queue, q.at]), [["a.test", t + 500]]);
  assert.equal(spool.depth(), 1);
});

test("an outcome and the DSN it causes are committed together; the original goes once its last entry is done", async () => {
  const { spool } = await fresh();
  const [entry] = await accept(spool, 2_000_000, "s@x.test", ["r@a.test"]);
  const dsnId = newMessageId(2_000_100);
  const created = await Effect.runPromise(
    spool.settle(entry!, undefined, [{ id: dsnId, sender: "", receivedAt: 2_000_100, body: Buffer.alloc(150_000, 65), routes: [{ route: { kind: "remote", domain: "x.test" }, recipients: ["s@x.test"] }] }]),
  );
  assert.equal(created.length, 1);
  assert.equal(created[0]!.sender, "");
  assert.equal(spool.hasMessage(entry!.messageId), false);
  assert.equal(spool.body(dsnId)?.length, 150_000, "a DSN larger than one chunk reads back whole");
  assert.deepEqual(queues(spool, 2_000_200), ["x.test"]);
  // Settling an entry an operator removed records nothing, and queues no DSN.
  const again = await Effect.runPromise(spool.settle(entry!, undefined, [{ id: newMessageId(1), sender: "", receivedAt: 1, body: Buffer.from("x"), routes: [{ route: { kind: "remote", domain: "x.test" }, recipients: ["s@x.test"] }] }]));
  assert.equal(again.length, 0);
  assert.equal(spool.depth(), 1);
});

test("a suspended queue leaves the due order until resumed, also across a reopen", async () => {
  const { dir, root, spool } = await fresh();
  await accept(spool, 3_000_000, "s@x.test", ["r@a.test"]);
  await accept(spool, 3_000_000, "s@x.test", ["r@b.test"]);
  await Effect.runPromise(spool.suspend("a.test"));
  assert.deepEqual(queues(spool, 3_000_100), ["b.test"]);
  await lmdb.close(root);
  const reopened = openAt(dir).spool;
  assert.equal(reopened.isSuspended("a.test"), true);
  assert.deepEqual(queues(reopened, 3_000_100), ["b.test"]);
  await accept(reopened, 3_000_050, "s@x.test", ["r2@a.test"]);
  assert.deepEqual(queues(reopened, 3_000_100), ["b.test"], "new mail for a suspended queue waits too");
  await Effect.runPromise(reopened.resume("a.test"));
  assert.deepEqual(queues(reopened, 3_000_100), ["a.test", "b.test"]);
  assert.equal(reopened.dueIn("a.test", 3_000_100, 10).length, 2);
});

test("a held entry leaves the due order, also across a reopen; retry-now passes it over; release makes it due now with the hold's time kept", async () => {
  const { dir, root, spool } = await fresh();
  const t = 4_000_000;
  const [held] = await accept(spool, t, "s@x.test", ["r@a.test"]);
  const [other] = await accept(spool, t + 10, "s@x.test", ["r2@a.test"]);
  assert.deepEqual(await Effect.runPromise(spool.hold([held!], t + 100)), [held!.id]);
  assert.deepEqual(await Effect.runPromise(spool.hold([held!], t + 150)), [], "held already: nothing changes");
  assert.deepEqual(spool.dueIn("a.test", t + 10_000, 10).map((e) => e.id), [other!.id], "the held entry is not due, its neighbour is");
  await Effect.runPromise(spool.settle(other!, undefined, []));
  assert.deepEqual(queues(spool, Number.MAX_SAFE_INTEGER - 1), [], "a queue of held entries only has no due head");
  assert.equal(spool.depth(), 1, "it still counts as queued");
  assert.equal((await spool.list({ queue: "a.test" }, 10)).length, 1, "and is listed");

  await lmdb.close(root);
  const reopened = openAt(dir).spool;
  assert.deepEqual({ heldAt: reopened.entry(held!.id)!.heldAt, reason: reopened.entry(held!.id)!.reason }, { heldAt: t + 100, reason: "held" });
  assert.deepEqual(queues(reopened, t + 10_000), [], "held after a restart");
  assert.deepEqual(await Effect.runPromise(reopened.redate([held!], t + 200)), { entries: 0, recipients: 0 }, "retry-now leaves it held");

  assert.deepEqual(await Effect.runPromise(reopened.release([held!], t + 1_100)), [held!.id]);
  assert.deepEqual(await Effect.runPromise(reopened.release([held!], t + 1_200)), [], "not held any more");
  const released = reopened.entry(held!.id)!;
  assert.deepEqual(
    { heldAt: released.heldAt, heldMs: released.heldMs, nextAttemptAt: released.nextAttemptAt, reason: released.reason },
    { heldAt: undefined, heldMs: 1_000, nextAttemptAt: t + 1_100, reason: "released" },
  );
  assert.deepEqual(reopened.dueIn("a.test", t + 1_100, 10).map((e) => e.id), [held!.id]);
});

test("an entry held while its attempt was in flight stays held when the attempt defers it, with the attempt recorded", async () => {
  const { spool } = await fresh();
  const t = 5_000_000;
  const [entry] = await accept(spool, t, "s@x.test", ["r@a.test"]);
  // The attempt took `entry` before the hold; its outcome is decided from that copy.
  await Effect.runPromise(spool.hold([entry!], t + 50));
  await Effect.runPromise(spool.settle(entry!, { ...entry!, attempts: 1, nextAttemptAt: t + 60_000, reason: "temporary-reply" }, []));
  const after = spool.entry(entry!.id)!;
  assert.deepEqual(
    { attempts: after.attempts, heldAt: after.heldAt, reason: after.reason, due: spool.dueIn("a.test", t + 120_000, 10).length },
    { attempts: 1, heldAt: t + 50, reason: "held", due: 0 },
  );
});

test("shape counts entries per queue and age; walks, lists and retry-now go page by page", async () => {
  const { spool } = await fresh();
  const now = Date.now();
  for (let n = 0; n < 1_205; n++) await accept(spool, now - 30 * 60_000, n % 5 === 0 ? "bulk@x.test" : "s@x.test", [`r${n}@big.test`]);
  await accept(spool, now - 2 * 60_000, "s@x.test", ["r@small.test"]);
  await Effect.runPromise(spool.suspend("idle.test"));
  const shape = await spool.shape(now, 10);
  assert.equal(shape.total.entries, 1_206);
  assert.deepEqual(shape.queues.map((q) => [q.queue, q.entries, q.suspended]), [["big.test", 1_205, false], ["small.test", 1, false], ["idle.test", 0, true]]);
  assert.equal(shape.queues[0]!.buckets[SHAPE_INDEX_40M], 1_205, "30 minutes old: the 20–40 minute bucket");
  assert.equal(shape.queues[1]!.buckets[0], 1, "2 minutes old: the first bucket");

  let bulk = 0;
  let pages = 0;
  await Effect.runPromise(
    spool.walk({ sender: "BULK@x.test" }, (page) =>
      Effect.sync(() => {
        pages++;
        bulk += page.length;
      }),
    ),
  );
  assert.equal(bulk, 241);
  assert.ok(pages >= 2, "more than one page");
  const listed = await spool.list({ queue: "big.test" }, 5);
  assert.equal(listed.length, 5);
  const next = await spool.list({ queue: "big.test" }, 5, listed[4]!.id);
  assert.equal(next.length, 5);
  assert.ok(!next.some((e) => listed.some((l) => l.id === e.id)), "the next page starts after the cursor");

  const later: QueueEntry = { ...listed[0]!, nextAttemptAt: now + 3_600_000 };
  await Effect.runPromise(spool.settle(listed[0]!, later, []));
  const moved = await Effect.runPromise(spool.redate([later, listed[1]!], now));
  assert.deepEqual(moved, { entries: 1, recipients: 1 }, "only entries not yet due move");
  assert.equal(spool.entry(later.id)?.reason, "retry-now");
});

const SHAPE_INDEX_40M = 3;

/** Appends `bytes` in 16 KB pieces, waiting when the writer asks to, as a session does. */
const write = async (body: ReturnType<Spool["openBody"]>, bytes: number) => {
  for (let sent = 0; sent < bytes; sent += 16_384) await body.append(Buffer.alloc(Math.min(16_384, bytes - sent), 0x61));
};

test("a discarded body leaves nothing behind: its chunks and incoming mark go at once, also with writes in flight", async () => {
  const { spool } = await fresh();
  assert.deepEqual([spool.incomingBodies(), spool.bodyBytes()], [0, 0]);
  const bodies = Array.from({ length: 10 }, (_, n) => spool.openBody(newMessageId(4_000_000 + n)));
  await Promise.all(bodies.map((body) => write(body, 1_000_000)));
  await Promise.all(bodies.map((body) => body.flushed()));
  assert.equal(spool.incomingBodies(), 10);
  assert.ok(spool.bodyBytes() >= 10_000_000, `${spool.bodyBytes()} bytes on disk while receiving`);
  for (const body of bodies) {
    body.append(Buffer.alloc(70_000, 0x62)); // a chunk write still in flight when the discard starts
    body.discard();
    body.discard(); // a second discard is harmless
    assert.equal(body.append(Buffer.from("late")), undefined, "appends after the discard are dropped");
  }
  await spool.discardsSettled();
  assert.deepEqual([spool.incomingBodies(), spool.bodyBytes()], [0, 0]);
});

test("a committed body is never discarded, and a discarded one is never committed", async () => {
  const { spool } = await fresh();
  const route = [{ route: { kind: "remote" as const, domain: "a.test" }, recipients: ["r@a.test"] }];
  const keptId = newMessageId(5_000_000);
  const kept = spool.openBody(keptId);
  await write(kept, 200_000);
  const [entry] = await Effect.runPromise(spool.accept({ id: keptId, sender: "s@x.test", receivedAt: 5_000_000, body: kept, routes: route }));
  kept.discard(); // the session's release runs after every transaction, committed or not
  await spool.discardsSettled();
  assert.equal(spool.body(entry!.messageId)?.length, 200_000);
  assert.equal(spool.incomingBodies(), 0);

  const droppedId = newMessageId(5_000_001);
  const dropped = spool.openBody(droppedId);
  await write(dropped, 100_000);
  dropped.discard();
  const refused = await Effect.runPromise(Effect.flip(spool.accept({ id: droppedId, sender: "s@x.test", receivedAt: 5_000_001, body: dropped, routes: route })));
  assert.equal(refused._tag, "StoreError");
  await spool.discardsSettled();
  assert.equal(spool.depth(), 1);
  assert.equal(spool.hasMessage(droppedId), false);
  assert.equal(spool.incomingBodies(), 0);
});

test("a message with a send-at time is due then, and its idempotency record is committed with it, kept across a reopen and pruned once expired", async () => {
  const { dir, spool, root } = await fresh();
  const t = 5_000_000;
  const id = newMessageId(t);
  const body = spool.openBody(id);
  body.append(Buffer.from("Subject: later\r\n\r\nbody\r\n"));
  const [entry] = await Effect.runPromise(
    spool.accept({
      id,
      sender: "s@x.test",
      receivedAt: t,
      body,
      routes: [{ route: { kind: "remote", domain: "a.test" }, recipients: ["r@a.test"] }],
      notBefore: t + 60_000,
      remember: { scope: "acme", key: "order-7", value: { messageId: id }, expiresAt: t + 1_000 },
    }),
  );
  assert.deepEqual([entry!.nextAttemptAt, entry!.createdAt, entry!.reason], [t + 60_000, t + 60_000, "scheduled"]);
  assert.deepEqual(queues(spool, t + 59_999), []);
  assert.deepEqual(queues(spool, t + 60_000), ["a.test"]);
  assert.equal(spool.recall("other", "order-7", t), undefined, "keys are scoped");
  await root.close();
  const reopened = openAt(dir).spool;
  assert.deepEqual(reopened.recall("acme", "order-7", t + 999), { messageId: id });
  assert.equal(reopened.recall("acme", "order-7", t + 1_000), undefined, "expired records are not answered");
  assert.equal(await Effect.runPromise(reopened.forgetExpired(t + 500, 100)), 0);
  assert.equal(await Effect.runPromise(reopened.forgetExpired(t + 1_000, 100)), 1);
  assert.equal(reopened.recall("acme", "order-7", t), undefined);
});

test("entries per queue are counted as they are committed and settled, and counted again from disk at a reopen", async () => {
  const { dir, root } = await lmdb.fresh();
  const commits: string[] = [];
  const spool = openSpool(root, undefined, { committed: (operation, seconds) => void (seconds >= 0 && commits.push(operation)) });
  const t = 6_000_000;
  const depths = (s: Spool) => Object.fromEntries(s.queueDepths());
  const [a1, b1] = await accept(spool, t, "s@x.test", ["r@a.test", "r@b.test"]);
  const [a2] = await accept(spool, t + 10, "s@x.test", ["q@a.test"]);
  assert.deepEqual(depths(spool), { "a.test": 2, "b.test": 1 });
  assert.deepEqual(commits, ["accept", "accept"], "each commit is timed, by operation");

  // Deferred: still queued, counted once; delivered and removed: gone; an empty queue is not listed.
  await Effect.runPromise(spool.settle(a1!, { ...a1!, nextAttemptAt: t + 500, attempts: 1, reason: "temporary-reply" }, []));
  await Effect.runPromise(spool.settle(b1!, undefined, []));
  await Effect.runPromise(spool.redate([a1!], t + 100));
  assert.deepEqual(depths(spool), { "a.test": 2 });
  await Effect.runPromise(spool.suspend("a.test"));
  assert.deepEqual(depths(spool), { "a.test": 2 }, "a suspended queue still holds its entries");
  await Effect.runPromise(spool.finish(a2!));
  await Effect.runPromise(spool.finish(a2!)); // already gone: moves nothing
  assert.deepEqual(depths(spool), { "a.test": 1 });
  assert.equal(spool.depth(), 1);

  await root.close();
  assert.deepEqual(depths(openAt(dir).spool), { "a.test": 1 });
});

test("the oldest queued message is the first by arrival, not counting those waiting for a send-at time", async () => {
  const { spool } = await fresh();
  const t = 7_000_000;
  assert.equal(spool.oldestArrival(t), undefined);
  const id = newMessageId(t);
  const body = spool.openBody(id);
  body.append(Buffer.from("Subject: later\r\n\r\nbody\r\n"));
  await Effect.runPromise(
    spool.accept({ id, sender: "s@x.test", receivedAt: t, body, routes: [{ route: { kind: "remote", domain: "a.test" }, recipients: ["r@a.test"] }], notBefore: t + 60_000 }),
  );
  assert.equal(spool.oldestArrival(t + 1_000), undefined, "a scheduled message is not late");
  const [now] = await accept(spool, t + 2_000, "s@x.test", ["r@b.test"]);
  assert.equal(spool.oldestArrival(t + 3_000), t + 2_000);
  assert.equal(spool.oldestArrival(t + 60_000), t, "once its time came, it counts from its arrival");
  await Effect.runPromise(spool.settle(now!, undefined, []));
  assert.equal(spool.oldestArrival(t + 3_000), undefined);
});
