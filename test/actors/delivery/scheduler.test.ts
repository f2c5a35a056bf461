// The delivery scheduler on a real LMDB spool, with a stand-in dispatch (real SMTP peers
// are the end-to-end tests' business) and TestClock driving time: retry backoff, expiry
// with its failure DSN, the one delay notice, holds, the per-queue bound, graceful stop.
import { after, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Clock, Deferred, Effect, Exit, Fiber, Queue, Scope } from "effect";
import { TestClock } from "effect/testing";
import { open, type RootDatabase } from "lmdb";
import { everyone, type Attempt } from "../../../actors/delivery/attempt.ts";
import { makeClassifier } from "../../../actors/delivery/classify.ts";
import { makeNotices } from "../../../actors/delivery/notices.ts";
import type { Decision, OutcomePolicy } from "../../../actors/delivery/outcome.ts";
import { makeScheduler, MIN_SCAN_GAP_MS, type Scheduler, type SchedulerOptions } from "../../../actors/delivery/scheduler.ts";
import { queueOf, type QueueEntry } from "../../../actors/queue/entry.ts";
import { openSpool, type GeneratedMessage, type Spool } from "../../../actors/queue/spool.ts";
import { parseReply } from "../../../protocol/smtp-reply.ts";
import { acceptMessage } from "../../support/spool.ts";

const dirs: string[] = [];
const roots: RootDatabase[] = [];
after(async () => {
  await Promise.all(roots.map((r) => r.close()));
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
});

const freshSpool = async (): Promise<Spool> => {
  const dir = await mkdtemp(join(tmpdir(), "tern-scheduler-"));
  dirs.push(dir);
  const root = open({ path: join(dir, "tern.lmdb"), maxDbs: 64 });
  roots.push(root);
  return openSpool(root);
};

/** Runs a test program in a scope, on a TestClock that starts at 0. */
const runTest = <A, E>(program: Effect.Effect<A, E, Scope.Scope>) =>
  Effect.runPromise(program.pipe(Effect.scoped, Effect.provide(TestClock.layer({ warningDelay: "1 minute" }))));

const MINUTE = 60_000;
const POLL_MS = 1_000;
/** Long enough for the scan that follows a poll or a wake to have run. */
const A_SCAN = POLL_MS + MIN_SCAN_GAP_MS;

/** A message accepted now (TestClock time), one entry per recipient domain. */
const accept = acceptMessage;

/** The next hop's answer to every recipient of `entry`, as a parsed SMTP reply. */
const reply = (entry: QueueEntry, text: string): Attempt => ({
  server: `mx.${queueOf(entry.route)}[192.0.2.1]`,
  mx: { host: `mx.${queueOf(entry.route)}`, ip: "192.0.2.1" },
  results: everyone(entry.recipients, parseReply(text)!),
});
const deferredReply = (entry: QueueEntry) => reply(entry, "451 4.3.0 try later");
const delivered = (entry: QueueEntry) => reply(entry, "250 2.0.0 ok");
/** A stand-in dispatch whose next hop always says "try later". */
const deferred = (entry: QueueEntry) => Effect.succeed(deferredReply(entry));

interface Recorded {
  readonly entry: QueueEntry;
  readonly decision: Decision;
  readonly queued: ReadonlyArray<GeneratedMessage>;
}

interface Harness {
  readonly spool: Spool;
  readonly scheduler: Scheduler;
  /** Every dispatch, with the (test) time it started. */
  readonly calls: Array<{ readonly id: string; readonly at: number }>;
  /** The next committed outcome of this entry (others are passed over). */
  readonly recordedFor: (entryId: string) => Effect.Effect<Recorded>;
  readonly logs: Array<{ readonly event: string; readonly fields: Record<string, unknown> }>;
}

const policyOf = (policy: Partial<Omit<OutcomePolicy, "classify">>): OutcomePolicy => ({
  maxAgeMs: 5 * 24 * 60 * MINUTE,
  delayNoticeMs: 4 * 60 * MINUTE,
  retry: { baseMs: 10 * MINUTE, maxMs: 60 * MINUTE },
  ...policy,
  classify: makeClassifier(),
});

/** A scheduler in the current scope over `spool`, dispatching through `respond` (given the body loader and the gate too). */
const harness = (
  spool: Spool,
  respond: (entry: QueueEntry, body: () => Uint8Array | undefined, mayStart: () => boolean) => Effect.Effect<Attempt>,
  options: Partial<Omit<SchedulerOptions, "spool" | "dispatch" | "hooks" | "notices">> = {},
) =>
  Effect.gen(function* () {
    const calls: Harness["calls"] = [];
    const logs: Harness["logs"] = [];
    const recorded = yield* Queue.unbounded<Recorded>();
    const scheduler = yield* makeScheduler({
      spool,
      dispatch: (entry, _message, body, mayStart) =>
        Effect.flatMap(Clock.currentTimeMillis, (at) => {
          calls.push({ id: entry.id, at });
          return respond(entry, body, mayStart);
        }),
      maxInFlight: 100,
      maxInFlightPerQueue: 10,
      pollMs: POLL_MS,
      policy: policyOf({}),
      holdMs: 5 * MINUTE,
      notices: makeNotices({ hostname: "tern.test", routeOf: (a) => ({ kind: "remote", domain: a.split("@")[1]! }), maxReturnBytes: 1_000_000 }, spool),
      hooks: {
        recorded: (entry, _attempt, decision, notices) => void Queue.offerUnsafe(recorded, { entry, decision, queued: notices.queued }),
        log: (event, fields = {}) => void logs.push({ event, fields }),
      },
      graceMs: 10_000,
      ...options,
    });
    const recordedFor = (entryId: string): Effect.Effect<Recorded> =>
      Effect.flatMap(Queue.take(recorded), (r) => (r.entry.id === entryId ? Effect.succeed(r) : recordedFor(entryId)));
    return { spool, scheduler, calls, recordedFor, logs } satisfies Harness;
  });

const now = Clock.currentTimeMillis;
const attemptsOf = (h: Harness, id: string) => h.calls.filter((c) => c.id === id);
/** Moves the clock to `at` (never backwards). */
const adjustTo = (at: number) => Effect.flatMap(now, (t) => TestClock.adjust(Math.max(0, at - t)));

test("a deferred entry is not attempted again before its backoff, and is attempted once it is due", () =>
  runTest(
    Effect.gen(function* () {
      const spool = yield* Effect.promise(freshSpool);
      const [entry] = yield* accept(spool, "s@x.test", ["r@a.test"]);
      const h = yield* harness(spool, deferred);

      const first = yield* h.recordedFor(entry!.id);
      assert.equal(first.decision.outcomes[0]!.status, "deferred");
      const waiting = spool.entry(entry!.id)!;
      assert.equal(waiting.attempts, 1);
      // 10 minutes, ±20% jitter (backoff.ts)
      assert.ok(waiting.nextAttemptAt >= 8 * MINUTE && waiting.nextAttemptAt <= 12 * MINUTE, `next attempt at ${waiting.nextAttemptAt}`);

      yield* adjustTo(waiting.nextAttemptAt - 1);
      assert.equal(attemptsOf(h, entry!.id).length, 1, "no attempt before the backoff is over");

      yield* TestClock.adjust(A_SCAN);
      const second = yield* h.recordedFor(entry!.id);
      assert.equal(second.entry.attempts, 1);
      const calls = attemptsOf(h, entry!.id);
      assert.equal(calls.length, 2);
      assert.ok(calls[1]!.at >= waiting.nextAttemptAt && calls[1]!.at <= waiting.nextAttemptAt + A_SCAN, `second attempt at ${calls[1]!.at}`);
      assert.equal(spool.entry(entry!.id)!.attempts, 2);
    }),
  ));

test("an entry still deferred at the queue lifetime fails as expired and queues a failure DSN to its sender", () =>
  runTest(
    Effect.gen(function* () {
      const spool = yield* Effect.promise(freshSpool);
      // DSNs to x.test wait in their (suspended) queue, where the test can read them.
      yield* spool.suspend("x.test");
      const [entry] = yield* accept(spool, "s@x.test", ["r@a.test"]);
      const h = yield* harness(spool, deferred, { policy: policyOf({ maxAgeMs: 60 * MINUTE, delayNoticeMs: 24 * 60 * MINUTE }) });

      let outcome = yield* h.recordedFor(entry!.id);
      while (outcome.decision.outcomes[0]!.status === "deferred") {
        assert.equal(outcome.queued.length, 0, "no notice while the entry is deferred within its lifetime");
        yield* adjustTo(spool.entry(entry!.id)!.nextAttemptAt + A_SCAN);
        outcome = yield* h.recordedFor(entry!.id);
      }
      assert.equal(outcome.decision.outcomes[0]!.status, "expired");
      const lastAt = outcome.decision.record.at;
      assert.ok(lastAt >= 60 * MINUTE && lastAt <= 60 * MINUTE + A_SCAN, `the last attempt falls at the expiry time, not a backoff later (${lastAt})`);
      assert.equal(spool.entry(entry!.id), undefined, "the expired entry left the queue");

      const dsns = yield* Effect.promise(() => spool.list({ queue: "x.test" }, 10));
      assert.equal(dsns.length, 1);
      assert.equal(dsns[0]!.sender, "", "a DSN goes from the null sender");
      assert.deepEqual(dsns[0]!.recipients, ["s@x.test"]);
      assert.deepEqual(spool.message(dsns[0]!.messageId)?.attributes, { dsnFor: entry!.messageId, action: "failed" });
      const text = Buffer.from(spool.body(dsns[0]!.messageId)!).toString();
      assert.match(text, /Action: failed\r\nStatus: 4\.4\.7/);
    }),
  ));

test("the delay notice goes out once, at the first attempt after delayNoticeMs", () =>
  runTest(
    Effect.gen(function* () {
      const spool = yield* Effect.promise(freshSpool);
      yield* spool.suspend("x.test");
      const [entry] = yield* accept(spool, "s@x.test", ["r@a.test"]);
      const delayNoticeMs = 30 * MINUTE;
      const h = yield* harness(spool, deferred, { policy: policyOf({ delayNoticeMs, retry: { baseMs: 10 * MINUTE, maxMs: 20 * MINUTE } }) });

      const notices: Array<{ at: number; actions: ReadonlyArray<unknown> }> = [];
      const pastDelay = () => notices.filter((n) => n.at >= delayNoticeMs);
      while (pastDelay().length < 4) {
        const outcome = yield* h.recordedFor(entry!.id);
        notices.push({ at: outcome.decision.record.at, actions: outcome.queued.map((m) => m.attributes?.action) });
        yield* adjustTo(spool.entry(entry!.id)!.nextAttemptAt + A_SCAN);
      }
      const withNotice = notices.filter((n) => n.actions.length > 0);
      assert.equal(withNotice.length, 1, `one notice over ${notices.length} attempts: ${JSON.stringify(notices)}`);
      assert.deepEqual(withNotice[0]!.actions, ["delayed"]);
      assert.equal(withNotice[0]!.at, pastDelay()[0]!.at, "at the first attempt past delayNoticeMs");
      assert.equal(spool.entry(entry!.id)!.delayNotified, true);
      const queued = yield* Effect.promise(() => spool.list({ queue: "x.test" }, 10));
      assert.deepEqual(queued.map((e) => spool.message(e.messageId)?.attributes?.action), ["delayed"]);
    }),
  ));

test("a rate-limited destination is held for holdMs: its other mail waits, then goes", () =>
  runTest(
    Effect.gen(function* () {
      const spool = yield* Effect.promise(freshSpool);
      const [limited] = yield* accept(spool, "s@x.test", ["r1@a.test"]);
      const holdMs = 5 * MINUTE;
      const h = yield* harness(spool, (entry) => Effect.succeed(entry.id === limited!.id ? reply(entry, "421 4.7.28 rate limited, slow down") : delivered(entry)), {
        holdMs,
        // The deferred entry itself comes back only much later.
        policy: policyOf({ retry: { baseMs: 60 * MINUTE, maxMs: 60 * MINUTE } }),
      });
      const first = yield* h.recordedFor(limited!.id);
      assert.equal(first.decision.holdQueue, "rate-limited");
      const heldAt = yield* now;
      assert.deepEqual([...h.scheduler.holds()], [["a.test", heldAt + holdMs]]);

      // New mail for the held destination, and for another one.
      const [waits] = yield* accept(spool, "s@x.test", ["r2@a.test"]);
      const [other] = yield* accept(spool, "s@x.test", ["r@b.test"]);
      h.scheduler.submit([waits!, other!]);
      yield* h.recordedFor(other!.id);
      yield* adjustTo(heldAt + holdMs - 1);
      assert.equal(attemptsOf(h, waits!.id).length, 0, "nothing goes to a held destination");
      assert.equal(attemptsOf(h, other!.id).length, 1, "other destinations are not held");

      yield* TestClock.adjust(A_SCAN);
      const released = yield* h.recordedFor(waits!.id);
      assert.equal(released.decision.outcomes[0]!.status, "delivered");
      assert.ok(attemptsOf(h, waits!.id)[0]!.at >= heldAt + holdMs);
      assert.deepEqual([...h.scheduler.holds()], [], "the hold is over");
    }),
  ));

test("at most maxInFlightPerQueue entries of one queue are in flight; a completion makes room for the next", () =>
  runTest(
    Effect.gen(function* () {
      const spool = yield* Effect.promise(freshSpool);
      const entries: QueueEntry[] = [];
      for (let n = 0; n < 5; n++) entries.push(...(yield* accept(spool, "s@x.test", [`r${n}@busy.test`])));
      entries.sort((a, b) => (a.id < b.id ? -1 : 1)); // the queue's order: arrival, then id
      const [elsewhere] = yield* accept(spool, "s@x.test", ["r@calm.test"]);
      // Each attempt to busy.test waits until the test lets it answer.
      const gates = new Map<string, Deferred.Deferred<Attempt>>();
      const h = yield* harness(
        spool,
        (entry) => {
          if (queueOf(entry.route) !== "busy.test") return Effect.succeed(delivered(entry));
          const gate = Deferred.makeUnsafe<Attempt>();
          gates.set(entry.id, gate);
          return Deferred.await(gate);
        },
        // Attempts still waiting at the end are not worth a grace period.
        { maxInFlightPerQueue: 2, graceMs: 0 },
      );
      yield* h.recordedFor(elsewhere!.id);
      yield* TestClock.adjust(3 * A_SCAN); // several scans
      const busy = () => h.calls.filter((c) => c.id !== elsewhere!.id).map((c) => c.id);
      assert.deepEqual(busy(), [entries[0]!.id, entries[1]!.id], "the two oldest, no more");
      assert.equal(h.scheduler.inFlight(), 2);
      assert.equal(h.scheduler.isInFlight(entries[0]!.id), true);

      yield* Deferred.succeed(gates.get(entries[0]!.id)!, delivered(entries[0]!));
      yield* h.recordedFor(entries[0]!.id);
      yield* TestClock.adjust(3 * A_SCAN);
      assert.deepEqual(busy(), [entries[0]!.id, entries[1]!.id, entries[2]!.id], "one more once one finished");
      assert.equal(h.scheduler.inFlight(), 2);
    }),
  ));

test("closing the scheduler's scope waits for the attempt in flight to be recorded, and takes no new work", () =>
  runTest(
    Effect.gen(function* () {
      const spool = yield* Effect.promise(freshSpool);
      const [entry] = yield* accept(spool, "s@x.test", ["r@a.test"]);
      const gate = yield* Deferred.make<Attempt>();
      const started = yield* Deferred.make<void>();
      const scope = yield* Scope.make();
      const h = yield* Scope.provide(scope)(harness(spool, () => Deferred.succeed(started, undefined).pipe(Effect.andThen(Deferred.await(gate)))));
      yield* Deferred.await(started);

      const closing = yield* Effect.forkChild(Scope.close(scope, Exit.void));
      yield* TestClock.adjust(5_000); // within the 10 s grace
      assert.equal(closing.pollUnsafe(), undefined, "still waiting for the attempt");
      const [late] = yield* accept(spool, "s@x.test", ["r@late.test"]);
      h.scheduler.submit([late!]);

      yield* Deferred.succeed(gate, deferredReply(entry!));
      yield* Fiber.join(closing);
      assert.equal(spool.entry(entry!.id)?.attempts, 1, "the outcome was committed before the scope closed");
      yield* TestClock.adjust(10 * A_SCAN);
      assert.equal(attemptsOf(h, late!.id).length, 0, "nothing new after the stop");
    }),
  ));

test("an attempt still running after the grace period is interrupted; its entry stays queued", () =>
  runTest(
    Effect.gen(function* () {
      const spool = yield* Effect.promise(freshSpool);
      const [entry] = yield* accept(spool, "s@x.test", ["r@a.test"]);
      const started = yield* Deferred.make<void>();
      const scope = yield* Scope.make();
      const h = yield* Scope.provide(scope)(harness(spool, () => Deferred.succeed(started, undefined).pipe(Effect.andThen(Effect.never))));
      yield* Deferred.await(started);

      const closing = yield* Effect.forkChild(Scope.close(scope, Exit.void));
      yield* TestClock.adjust(10_000);
      yield* Fiber.join(closing);
      assert.equal(h.scheduler.inFlight(), 0);
      assert.deepEqual(h.logs.map((l) => l.event), ["queue.stop.interrupted"]);
      const kept = spool.entry(entry!.id);
      assert.equal(kept?.attempts, 0, "not recorded, still queued (invariant 2)");
    }),
  ));

test("an entry deleted while its attempt waits for a connection is not sent: the attempt may not start, and its body reads as gone, never as empty", () =>
  runTest(
    Effect.gen(function* () {
      const spool = yield* Effect.promise(freshSpool);
      const [entry] = yield* accept(spool, "s@x.test", ["r@a.test"]);
      const waiting = yield* Deferred.make<void>();
      const connected = yield* Deferred.make<void>();
      const seen = yield* Deferred.make<{ readonly started: boolean; readonly body: number | "gone" }>();
      yield* harness(spool, (queued, body, mayStart) =>
        Effect.gen(function* () {
          yield* Deferred.succeed(waiting, undefined);
          yield* Deferred.await(connected); // a connection or the site's budget comes free
          const started = mayStart();
          const bytes = body();
          const read: number | "gone" = bytes === undefined ? "gone" : bytes.length;
          yield* Deferred.succeed(seen, { started, body: read });
          return started ? delivered(queued) : { server: "mx.a.test", results: everyone(queued.recipients, { _tag: "OperatorHold" as const }) };
        }),
      );
      yield* Deferred.await(waiting);
      // tern queue delete: the message's last entry, so its record and body go too.
      yield* spool.finish(entry!);
      yield* Deferred.succeed(connected, undefined);
      assert.deepEqual(yield* Deferred.await(seen), { started: false, body: "gone" });
      assert.equal(spool.entry(entry!.id), undefined, "nothing recorded brings it back");
    }),
  ));
