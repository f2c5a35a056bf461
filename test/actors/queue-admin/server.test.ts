// Queue administration as `tern queue` sees it: the module served over the real NATS at
// 127.0.0.1:4222 (a subject prefix of its own per run) and asked through the client the
// CLI uses, over a real spool and scheduler with a stand-in dispatch, on TestClock.
// What a whole node does with these commands is in test/e2e/queue-admin.test.ts.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Clock, Deferred, Effect, Queue, type Scope } from "effect";
import { TestClock } from "effect/testing";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { open, type RootDatabase } from "lmdb";
import { everyone, type Attempt } from "../../../actors/delivery/attempt.ts";
import { makeClassifier } from "../../../actors/delivery/classify.ts";
import { makeNotices } from "../../../actors/delivery/notices.ts";
import { makeScheduler, MIN_SCAN_GAP_MS } from "../../../actors/delivery/scheduler.ts";
import { serveQueueAdmin } from "../../../actors/queue-admin/server.ts";
import { askQueueAdmin } from "../../../actors/queue-admin/client.ts";
import { queueOf, type QueueEntry } from "../../../actors/queue/entry.ts";
import { openSpool, type Spool } from "../../../actors/queue/spool.ts";
import type { QueueAdminReply, QueueAdminRequest } from "../../../protocol/queue-admin.ts";
import { makeSubjects, type Subjects } from "../../../protocol/subjects.ts";
import { parseReply } from "../../../protocol/smtp-reply.ts";
import { acceptMessage } from "../../support/spool.ts";

const NODE = "n1";
const MINUTE = 60_000;
const HOLD_MS = 5 * MINUTE;

let nc: NatsConnection;
const dirs: string[] = [];
const roots: RootDatabase[] = [];

before(async () => {
  nc = await connect({ servers: ["nats://127.0.0.1:4222"], name: "tern-test-queue-admin" });
});

after(async () => {
  await nc.drain();
  await Promise.all(roots.map((r) => r.close()));
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
});

const runTest = <A, E>(program: Effect.Effect<A, E, Scope.Scope>) =>
  Effect.runPromise(program.pipe(Effect.scoped, Effect.provide(TestClock.layer({ warningDelay: "1 minute" }))));

/** One message, one remote destination: its only queue entry. */
const accept = (spool: Spool, sender: string, recipients: ReadonlyArray<string>) =>
  Effect.map(acceptMessage(spool, sender, recipients), (entries) => entries[0]!);

const answer = (entry: QueueEntry, text: string): Attempt => ({
  server: `mx.${queueOf(entry.route)}[192.0.2.1]`,
  mx: { host: `mx.${queueOf(entry.route)}`, ip: "192.0.2.1" },
  results: everyone(entry.recipients, parseReply(text)!),
});

/**
 * One node's queue administration on NATS, over a scheduler whose stand-in next hops:
 * slow.test begins its transaction at once and answers only when the test lets it (its
 * entry stays in flight); waiting.test waits for a connection until the test gives it one,
 * then asks whether it may begin; held.test rate-limits us; everything else says "try
 * later" (for an hour).
 */
const node = Effect.gen(function* () {
  const dir = yield* Effect.promise(() => mkdtemp(join(tmpdir(), "tern-queue-admin-")));
  dirs.push(dir);
  const root = open({ path: join(dir, "tern.lmdb"), maxDbs: 64 });
  roots.push(root);
  const spool = openSpool(root);
  const subjects = makeSubjects(`admin_${randomBytes(6).toString("hex")}`);
  const slow = yield* Deferred.make<Attempt>();
  const connection = yield* Deferred.make<void>();
  const calls: string[] = [];
  const recorded = yield* Queue.unbounded<string>();
  const scheduler = yield* makeScheduler({
    spool,
    dispatch: (entry, _message, _body, mayStart) => {
      calls.push(entry.id);
      const queue = queueOf(entry.route);
      if (queue === "slow.test") return Effect.suspend(() => (mayStart?.(), Deferred.await(slow)));
      if (queue === "waiting.test") {
        return Effect.flatMap(Deferred.await(connection), () =>
          Effect.sync(() => (mayStart?.() === false ? { server: "mx.waiting.test", results: everyone(entry.recipients, { _tag: "OperatorHold" as const }) } : answer(entry, "250 2.0.0 sent"))),
        );
      }
      if (queue === "held.test") return Effect.succeed(answer(entry, "421 4.7.28 rate limited, slow down"));
      return Effect.succeed(answer(entry, "451 4.3.0 try later"));
    },
    maxInFlight: 100,
    maxInFlightPerQueue: 10,
    pollMs: 1_000,
    policy: { maxAgeMs: 5 * 24 * 60 * MINUTE, delayNoticeMs: 24 * 60 * MINUTE, retry: { baseMs: 60 * MINUTE, maxMs: 60 * MINUTE }, classify: makeClassifier() },
    holdMs: HOLD_MS,
    notices: makeNotices({ hostname: "tern.test", routeOf: (a) => ({ kind: "remote", domain: a.split("@")[1]! }), maxReturnBytes: 1_000_000 }, spool),
    hooks: { recorded: (entry) => void Queue.offerUnsafe(recorded, entry.id), log: () => undefined },
    // The slow attempt is still waiting when the test ends.
    graceMs: 0,
  });
  const log: Array<{ event: string; fields: Record<string, unknown> }> = [];
  const drain = { draining: false };
  yield* serveQueueAdmin(nc, subjects, { nodeId: NODE, spool, scheduler, draining: () => drain.draining, log: (event, fields = {}) => void log.push({ event, fields }) });
  const recordedFor = (id: string): Effect.Effect<void> => Effect.flatMap(Queue.take(recorded), (r) => (r === id ? Effect.void : recordedFor(id)));
  return { spool, subjects, scheduler, calls, recordedFor, log, drain, releaseSlow: (attempt: Attempt) => Deferred.succeed(slow, attempt), connect: () => Deferred.succeed(connection, undefined) };
});

/** Asks node n1, as `tern queue --node n1` does; returns its reply or fails the test with its error. */
const ask = (subjects: Subjects, request: QueueAdminRequest) =>
  Effect.promise(() => askQueueAdmin(nc, subjects, request, { node: NODE, timeoutMs: 5_000 })).pipe(
    Effect.map(([answer]) => {
      if (!answer!.ok) assert.fail(`${answer!.node}: ${answer!.detail}`);
      return answer!.reply;
    }),
  );

const askFailing = (subjects: Subjects, request: QueueAdminRequest) =>
  Effect.promise(() => askQueueAdmin(nc, subjects, request, { node: NODE, timeoutMs: 5_000 })).pipe(
    Effect.map(([answer]) => {
      if (answer!.ok) assert.fail(`expected a failure, got ${JSON.stringify(answer!.reply)}`);
      return answer!;
    }),
  );

const entriesOf = (reply: QueueAdminReply) => {
  assert.equal(reply._tag, "List");
  return reply._tag === "List" ? reply.entries : [];
};

const changed = (reply: QueueAdminReply) => {
  assert.equal(reply._tag, "Changed");
  return reply._tag === "Changed" ? { entries: reply.entries, recipients: reply.recipients, skipped: reply.skipped, notices: reply.notices } : undefined;
};

test("list selects by queue and sender and pages on; entries show their attempts, in-flight and suspended state; shape counts them", () =>
  runTest(
    Effect.gen(function* () {
      const n = yield* node;
      const first = yield* accept(n.spool, "s@x.test", ["r1@a.test", "r2@a.test"]);
      const bobs = yield* accept(n.spool, "Bob@x.test", ["r3@a.test"]);
      const slow = yield* accept(n.spool, "s@x.test", ["r@slow.test"]);
      const other = yield* accept(n.spool, "s@x.test", ["r@b.test"]);
      n.scheduler.submit([first, bobs, slow, other]);
      for (const entry of [first, bobs, other]) yield* n.recordedFor(entry.id);

      const inA = entriesOf(yield* ask(n.subjects, { _tag: "List", queue: "A.TEST" }));
      assert.deepEqual(inA.map((e) => e.id).sort(), [first.id, bobs.id].sort());
      const shown = inA.find((e) => e.id === first.id)!;
      assert.deepEqual(
        { queue: shown.queue, sender: shown.sender, recipients: shown.recipients, attempts: shown.attempts, reason: shown.reason, inFlight: shown.inFlight, suspended: shown.suspended },
        { queue: "a.test", sender: "s@x.test", recipients: ["r1@a.test", "r2@a.test"], attempts: 1, reason: "temporary-reply", inFlight: false, suspended: false },
      );
      assert.equal(shown.nextAttemptAt >= 48 * MINUTE, true, "deferred for about an hour");
      assert.match(JSON.stringify(shown.history?.at(-1)), /try later/);

      const bySender = entriesOf(yield* ask(n.subjects, { _tag: "List", sender: "bob@X.test" }));
      assert.deepEqual(bySender.map((e) => e.id), [bobs.id], "senders match whatever their case");

      const page1 = entriesOf(yield* ask(n.subjects, { _tag: "List", limit: 2 }));
      const page2 = entriesOf(yield* ask(n.subjects, { _tag: "List", limit: 2, after: page1[1]!.id }));
      assert.deepEqual([...page1, ...page2].map((e) => e.id).sort(), [first.id, bobs.id, slow.id, other.id].sort(), "two pages hold every entry once");

      const [inFlight] = entriesOf(yield* ask(n.subjects, { _tag: "List", queue: "slow.test" }));
      assert.equal(inFlight!.inFlight, true);

      assert.deepEqual(yield* ask(n.subjects, { _tag: "Suspend", queue: "B.test" }), { _tag: "Suspended", node: NODE, queue: "b.test", suspended: true });
      const [suspended] = entriesOf(yield* ask(n.subjects, { _tag: "List", queue: "b.test" }));
      assert.equal(suspended!.suspended, true);
      const shape = yield* ask(n.subjects, { _tag: "Shape" });
      assert.equal(shape._tag, "Shape");
      if (shape._tag === "Shape") {
        assert.equal(shape.total.entries, 4);
        assert.equal(shape.inFlight, 1);
        assert.deepEqual(shape.queues.map((q) => [q.queue, q.entries, q.suspended]), [["a.test", 2, false], ["b.test", 1, true], ["slow.test", 1, false]]);
      }
      assert.deepEqual(yield* ask(n.subjects, { _tag: "Resume", queue: "b.test" }), { _tag: "Suspended", node: NODE, queue: "b.test", suspended: false });
      assert.deepEqual(n.log.map((l) => l.event), ["queue.suspended", "queue.resumed"]);

      const missing = yield* ask(n.subjects, { _tag: "Show", id: "nope.0" });
      assert.deepEqual(missing, { _tag: "Show", node: NODE, id: "nope.0", entries: [] });
    }),
  ));

test("retry makes deferred entries due now and lifts a hold; entries in flight are passed over and counted", () =>
  runTest(
    Effect.gen(function* () {
      const n = yield* node;
      const deferred = yield* accept(n.spool, "s@x.test", ["r1@a.test", "r2@a.test"]);
      const limited = yield* accept(n.spool, "s@x.test", ["r@held.test"]);
      const slow = yield* accept(n.spool, "s@x.test", ["r@slow.test"]);
      n.scheduler.submit([deferred, limited, slow]);
      yield* n.recordedFor(deferred.id);
      yield* n.recordedFor(limited.id);
      const heldAt = yield* Clock.currentTimeMillis;

      const shape = yield* ask(n.subjects, { _tag: "Shape" });
      assert.deepEqual(shape._tag === "Shape" ? shape.held : undefined, [{ queue: "held.test", until: heldAt + HOLD_MS }]);

      assert.deepEqual(changed(yield* ask(n.subjects, { _tag: "Retry", queue: "a.test" })), { entries: 1, recipients: 2, skipped: 0, notices: 0 });
      assert.equal(n.spool.entry(deferred.id)!.reason, "retry-now");
      yield* TestClock.adjust(MIN_SCAN_GAP_MS);
      yield* n.recordedFor(deferred.id);
      assert.equal(n.calls.filter((id) => id === deferred.id).length, 2, "attempted again at once");

      assert.deepEqual(changed(yield* ask(n.subjects, { _tag: "Retry", queue: "slow.test" })), { entries: 0, recipients: 0, skipped: 1, notices: 0 });

      // The held destination: retrying it lifts the hold, and its entry goes now, within the hold time.
      assert.deepEqual(changed(yield* ask(n.subjects, { _tag: "Retry", queue: "held.test" })), { entries: 1, recipients: 1, skipped: 0, notices: 0 });
      yield* TestClock.adjust(MIN_SCAN_GAP_MS);
      yield* n.recordedFor(limited.id);
      assert.equal(n.calls.filter((id) => id === limited.id).length, 2);
      assert.ok((yield* Clock.currentTimeMillis) < heldAt + HOLD_MS);
      assert.deepEqual(n.log.filter((l) => l.event === "queue.retry").map((l) => l.fields.queue), ["a.test", "slow.test", "held.test"]);
    }),
  ));

test("bounce fails entries now with a DSN to their sender (none for the null sender); delete removes entries without one; both need a selection", () =>
  runTest(
    Effect.gen(function* () {
      const n = yield* node;
      yield* n.spool.suspend("x.test"); // DSNs wait there, where the test reads them
      const bounced = yield* accept(n.spool, "s@x.test", ["r1@a.test", "r2@a.test"]);
      const slow = yield* accept(n.spool, "s@x.test", ["r@slow.test"]);
      const nullSender = yield* accept(n.spool, "", ["r3@a.test"]);
      const kept = yield* accept(n.spool, "other@x.test", ["r@b.test"]);
      n.scheduler.submit([bounced, slow, nullSender, kept]);
      for (const entry of [bounced, nullSender, kept]) yield* n.recordedFor(entry.id);

      const noSelection = yield* askFailing(n.subjects, { _tag: "Bounce" });
      assert.deepEqual(noSelection, { ok: false, node: NODE, detail: "name a queue (--domain) or a sender (--sender)" });

      assert.deepEqual(changed(yield* ask(n.subjects, { _tag: "Bounce", sender: "s@x.test", reason: "cleanup\r\nafter outage" })), { entries: 1, recipients: 2, skipped: 1, notices: 1 });
      assert.deepEqual(changed(yield* ask(n.subjects, { _tag: "Bounce", queue: "a.test", sender: "" })), { entries: 1, recipients: 1, skipped: 0, notices: 0 });
      assert.equal(n.spool.entry(bounced.id), undefined);
      assert.equal(n.spool.entry(nullSender.id), undefined);
      assert.equal(n.spool.entry(slow.id)?.attempts, 0, "the entry in flight waits for its attempt's outcome");

      const dsns = entriesOf(yield* ask(n.subjects, { _tag: "List", queue: "x.test" }));
      assert.equal(dsns.length, 1, "one DSN: to s@x.test, none for the null sender");
      assert.deepEqual({ sender: dsns[0]!.sender, recipients: dsns[0]!.recipients }, { sender: "", recipients: ["s@x.test"] });
      const text = Buffer.from(n.spool.body(n.spool.entry(dsns[0]!.id)!.messageId)!).toString();
      assert.match(text, /Final-Recipient: rfc822; r1@a\.test\r\nAction: failed\r\nStatus: 5\.0\.0/);
      assert.match(text, /returned by the mail system administrator: cleanup after outage/i);

      assert.equal((yield* askFailing(n.subjects, { _tag: "Delete" })).detail, "name a queue (--domain) or a sender (--sender)");
      assert.deepEqual(changed(yield* ask(n.subjects, { _tag: "Delete", queue: "b.test" })), { entries: 1, recipients: 1, skipped: 0, notices: 0 });
      assert.equal(n.spool.entry(kept.id), undefined);
      assert.equal(n.spool.hasMessage(kept.messageId), false, "the message goes with its last entry");
      assert.deepEqual(entriesOf(yield* ask(n.subjects, { _tag: "List", queue: "x.test" })).length, 1, "no DSN for a deletion");
      assert.deepEqual(n.log.filter((l) => l.event === "queue.deleted").map((l) => l.fields.entry), [kept.id]);

      // The attempt in flight is recorded as it comes back, bounce or not.
      yield* n.releaseSlow(answer(slow, "250 2.0.0 ok"));
      yield* n.recordedFor(slow.id);
      assert.equal(n.spool.entry(slow.id), undefined);
    }),
  ));

const acted = (reply: QueueAdminReply) => {
  assert.equal(reply._tag, "Acted");
  return reply._tag === "Acted" ? { entries: reply.entries.map((e) => [e.id, e.outcome]), notices: reply.notices } : undefined;
};

test("by message id or entry id: hold keeps entries from every attempt until released; retry leaves them held; a message not here names no entry", () =>
  runTest(
    Effect.gen(function* () {
      const n = yield* node;
      const [a, b] = yield* acceptMessage(n.spool, "s@x.test", ["r1@a.test", "r@b.test"]);
      const id = a!.messageId;
      n.scheduler.submit([a!, b!]);
      yield* n.recordedFor(a!.id);
      yield* n.recordedFor(b!.id);

      assert.deepEqual(acted(yield* ask(n.subjects, { _tag: "Act", action: "hold", id })), { entries: [[a!.id, "done"], [b!.id, "done"]], notices: 0 });
      assert.deepEqual(acted(yield* ask(n.subjects, { _tag: "Act", action: "hold", id: b!.id })), { entries: [[b!.id, "held"]], notices: 0 });
      const shown = yield* ask(n.subjects, { _tag: "Show", id });
      assert.deepEqual(shown._tag === "Show" ? shown.entries.map((e) => [e.id, e.heldAt !== undefined, e.reason]) : [], [[a!.id, true, "held"], [b!.id, true, "held"]]);
      assert.deepEqual(acted(yield* ask(n.subjects, { _tag: "Act", action: "retry", id })), { entries: [[a!.id, "held"], [b!.id, "held"]], notices: 0 });
      assert.deepEqual(changed(yield* ask(n.subjects, { _tag: "Retry" })), { entries: 0, recipients: 0, skipped: 0, notices: 0 }, "a retry of everything leaves held entries held");

      // Their retry time (an hour) passes twice over: no attempt.
      yield* TestClock.adjust(120 * MINUTE);
      assert.deepEqual([a!.id, b!.id].map((e) => n.calls.filter((c) => c === e).length), [1, 1]);

      assert.deepEqual(acted(yield* ask(n.subjects, { _tag: "Act", action: "release", id: a!.id })), { entries: [[a!.id, "done"]], notices: 0 });
      yield* TestClock.adjust(MIN_SCAN_GAP_MS);
      yield* n.recordedFor(a!.id);
      assert.deepEqual([a!.id, b!.id].map((e) => n.calls.filter((c) => c === e).length), [2, 1], "the released entry went at once, the held one did not");
      assert.deepEqual(acted(yield* ask(n.subjects, { _tag: "Act", action: "release", id })), { entries: [[a!.id, "not-held"], [b!.id, "done"]], notices: 0 });
      assert.equal(n.spool.entry(b!.id)!.heldMs, 120 * MINUTE + MIN_SCAN_GAP_MS, "the time on hold is kept, so it does not count in the queue life");

      assert.deepEqual(acted(yield* ask(n.subjects, { _tag: "Act", action: "delete", id: "0NOTQUEUEDHERE000" })), { entries: [], notices: 0 });
      const missing = yield* ask(n.subjects, { _tag: "Show", id: "0NOTQUEUEDHERE000" });
      assert.deepEqual(missing._tag === "Show" ? missing.entries : undefined, []);
      assert.deepEqual(
        n.log.filter((l) => l.event === "queue.held" || l.event === "queue.released").map((l) => [l.event, l.fields.entry, l.fields.queueId]),
        [["queue.held", a!.id, id], ["queue.held", b!.id, id], ["queue.released", a!.id, id], ["queue.released", b!.id, id]],
      );
    }),
  ));

test("by id, an attempt still waiting for a connection: a hold stops it before its transaction, and it goes back held, unsent and not counted; a release lets it go", () =>
  runTest(
    Effect.gen(function* () {
      const n = yield* node;
      const waiting = yield* accept(n.spool, "s@x.test", ["r@waiting.test"]);
      n.scheduler.submit([waiting]);
      yield* Effect.yieldNow;
      assert.ok(n.scheduler.isInFlight(waiting.id), "claimed, waiting for its connection");
      assert.deepEqual(acted(yield* ask(n.subjects, { _tag: "Act", action: "hold", id: waiting.messageId })), { entries: [[waiting.id, "done"]], notices: 0 });

      yield* n.connect();
      yield* n.recordedFor(waiting.id);
      const after = n.spool.entry(waiting.id)!;
      assert.deepEqual(
        { attempts: after.attempts, held: after.heldAt !== undefined, reason: after.reason, result: after.history?.at(-1)?.results[0]?.result._tag },
        { attempts: 0, held: true, reason: "held", result: "OperatorHold" },
        "not sent, not counted, still held",
      );

      assert.deepEqual(acted(yield* ask(n.subjects, { _tag: "Act", action: "release", id: waiting.messageId })), { entries: [[waiting.id, "done"]], notices: 0 });
      yield* TestClock.adjust(MIN_SCAN_GAP_MS);
      yield* n.recordedFor(waiting.id);
      assert.equal(n.spool.entry(waiting.id), undefined, "sent once released");
      assert.equal(n.calls.filter((id) => id === waiting.id).length, 2);
    }),
  ));

test("a draining node refuses what would change its entries (by id and by selection) and still answers what only reads them", () =>
  runTest(
    Effect.gen(function* () {
      const n = yield* node;
      const queued = yield* accept(n.spool, "s@x.test", ["r@later.test"]);
      n.drain.draining = true;
      for (const request of [
        { _tag: "Act", action: "hold", id: queued.messageId },
        { _tag: "Act", action: "delete", id: queued.messageId },
        { _tag: "Retry", queue: "later.test" },
        { _tag: "Bounce", queue: "later.test" },
        { _tag: "Delete", sender: "s@x.test" },
      ] as const) {
        const refused = yield* askFailing(n.subjects, request);
        assert.match(refused.ok ? "" : refused.detail, /^draining: this node is handing its queue to other nodes/, request._tag);
      }
      const shown = yield* ask(n.subjects, { _tag: "Show", id: queued.messageId });
      assert.deepEqual(shown._tag === "Show" ? shown.entries.map((e) => [e.id, e.heldAt]) : undefined, [[queued.id, undefined]], "shown, and not held");
      assert.equal(entriesOf(yield* ask(n.subjects, { _tag: "List", queue: "later.test" })).length, 1);

      n.drain.draining = false;
      assert.deepEqual(acted(yield* ask(n.subjects, { _tag: "Act", action: "hold", id: queued.messageId })), { entries: [[queued.id, "done"]], notices: 0 });
    }),
  ));

test("by id with an attempt in flight: a hold waits for its outcome and keeps the entry held; retry, bounce and delete pass it over until then", () =>
  runTest(
    Effect.gen(function* () {
      const n = yield* node;
      yield* n.spool.suspend("x.test"); // the DSN waits there
      const slow = yield* accept(n.spool, "s@x.test", ["r@slow.test"]);
      n.scheduler.submit([slow]);
      const id = slow.messageId;
      for (const action of ["retry", "bounce", "delete"] as const) {
        assert.deepEqual(acted(yield* ask(n.subjects, { _tag: "Act", action, id })), { entries: [[slow.id, "in-flight"]], notices: 0 }, action);
      }
      // Stored, and said to be held only after the attempt under way, which still goes out.
      assert.deepEqual(acted(yield* ask(n.subjects, { _tag: "Act", action: "hold", id })), { entries: [[slow.id, "held-after-attempt"]], notices: 0 });
      assert.notEqual(n.spool.entry(slow.id)!.heldAt, undefined);

      yield* n.releaseSlow(answer(slow, "451 4.3.0 try later"));
      yield* n.recordedFor(slow.id);
      const after = n.spool.entry(slow.id)!;
      assert.deepEqual({ attempts: after.attempts, held: after.heldAt !== undefined, reason: after.reason }, { attempts: 1, held: true, reason: "held" });

      assert.deepEqual(acted(yield* ask(n.subjects, { _tag: "Act", action: "bounce", id: slow.id, reason: "held too long" })), { entries: [[slow.id, "done"]], notices: 1 });
      assert.equal(n.spool.entry(slow.id), undefined, "a held entry can be bounced");
      const [dsn] = entriesOf(yield* ask(n.subjects, { _tag: "List", queue: "x.test" }));
      assert.match(Buffer.from(n.spool.body(n.spool.entry(dsn!.id)!.messageId)!).toString(), /returned by the mail system administrator: held too long/i);
    }),
  ));
