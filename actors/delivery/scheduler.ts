// Takes due entries from the spool, queue by queue (destination domain or mailbox),
// dispatches them with a bound on entries in flight overall and per queue, and records
// each outcome durably: delivered and failed recipients leave the entry, deferred ones
// wait again on the retry schedule, expired ones fail, and the DSNs this calls for are
// committed in the same transaction. An entry leaves the spool only after its next hop
// answered (invariant 2).
//
// The scheduler lives in a Scope: two fibers forked there (intake of just-committed
// entries, and the scan of the due index), and one fiber per attempt in a FiberSet of
// that scope. Time comes from the Clock and waits are Effect sleeps, so TestClock drives
// backoff, expiry, delay notices and holds in tests. Closing the scope stops taking work,
// waits up to `graceMs` for attempts in flight to be recorded (their outcome must be
// committed before the store closes), then interrupts the rest.
import { Clock, Deferred, Effect, Fiber, FiberSet, Queue, Random, type Scope } from "effect";
import { queueOf, type QueueEntry } from "../queue/entry.ts";
import type { StoreError } from "../../protocol/errors.ts";
import type { GeneratedMessage, Spool } from "../queue/spool.ts";
import type { Attempt } from "./attempt.ts";
import type { Dispatch } from "./dispatch.ts";
import { dsnParamsOf } from "./dsn.ts";
import type { Notices } from "./notices.ts";
import { decide, type Decision, type OutcomePolicy } from "./outcome.ts";

export interface SchedulerHooks {
  /** After the outcome is committed. */
  readonly recorded: (entry: QueueEntry, attempt: Attempt, decision: Decision, notices: { readonly queued: ReadonlyArray<GeneratedMessage>; readonly suppressed: boolean }) => void;
  readonly log: (event: string, fields: Record<string, unknown>) => void;
}

export interface Scheduler {
  /**
   * Entries just committed: dispatched at once when there is room, else left for the
   * due-index scan. Synchronous and cheap (called from the SMTP session's commit
   * callback): it only offers the batch to the scheduler's intake queue.
   */
  readonly submit: (entries: ReadonlyArray<QueueEntry>) => void;
  readonly inFlight: () => number;
  readonly isInFlight: (entryId: string) => boolean;
  /** Queues held back now after trouble (rate limiting, unreachable), with the time they are released. */
  readonly holds: () => ReadonlyMap<string, number>;
  /** Lifts a hold (an operator's retry) and scans at once. */
  readonly release: (queue: string | undefined) => void;
  readonly wake: () => void;
  /**
   * Records an outcome reached without an attempt (an operator's bounce), exactly as an
   * attempt's; false when the entry is in flight (its attempt will be recorded instead)
   * or the scheduler has stopped.
   */
  readonly recordNow: (entry: QueueEntry, outcome: Attempt) => Effect.Effect<boolean, StoreError>;
  /**
   * Stops taking work, waits (up to `graceMs`) for attempts in flight to be recorded, then
   * interrupts the rest. Closing the scheduler's scope does the same with `options.graceMs`.
   */
  readonly stop: (graceMs: number) => Effect.Effect<void>;
}

export interface SchedulerOptions {
  readonly spool: Spool;
  readonly dispatch: Dispatch;
  readonly maxInFlight: number;
  /** Entries of one queue in flight at once, so one large backlog cannot take every slot. */
  readonly maxInFlightPerQueue: number;
  readonly pollMs: number;
  readonly policy: OutcomePolicy;
  /** How long a queue is held after its destination rate-limited us or could not be reached. */
  readonly holdMs: number;
  readonly notices: Notices;
  readonly hooks: SchedulerHooks;
  /** When the scope closes: how long attempts in flight may take to be recorded before they are interrupted. */
  readonly graceMs: number;
}

/** Scans triggered by completions are at least this far apart (a scan walks every due queue). */
export const MIN_SCAN_GAP_MS = 20;

export const makeScheduler = (options: SchedulerOptions): Effect.Effect<Scheduler, never, Scope.Scope> =>
  Effect.gen(function* () {
    const { spool, hooks } = options;
    // Read synchronously by `submit`'s intake, the scan and `holds` (plain code paths).
    const clock = yield* Clock.Clock;
    const attempts = yield* FiberSet.make<void, never>();
    const submitted = yield* Queue.unbounded<ReadonlyArray<QueueEntry>>();
    // One pending wake is enough: a wake that arrives while the scan is busy makes the next one come sooner.
    const wakes = yield* Queue.dropping<void>(1);
    // Completed when the scheduler has stopped and the last attempt in flight is recorded.
    const drained = yield* Deferred.make<void>();
    const inFlight = new Set<string>();
    const perQueue = new Map<string, number>();
    const held = new Map<string, number>();
    let running = true;

    const wake = () => void Queue.offerUnsafe(wakes, undefined);

    const hold = (queue: string, ms: number) => held.set(queue, Math.max(held.get(queue) ?? 0, clock.currentTimeMillisUnsafe() + ms));

    const isHeld = (queue: string, now: number) => {
      const until = held.get(queue);
      if (until === undefined) return false;
      if (until > now) return true;
      held.delete(queue);
      return false;
    };

    const left = (entryId: string) => {
      inFlight.delete(entryId);
      if (!running && inFlight.size === 0) Deferred.doneUnsafe(drained, Effect.void);
    };

    const record = (entry: QueueEntry, attempt: Attempt) =>
      Effect.gen(function* () {
        const message = spool.message(entry.messageId);
        const now = yield* Clock.currentTimeMillis;
        const random = yield* Random.next;
        const decision = decide(entry, attempt, now, random, options.policy, dsnParamsOf(message?.attributes));
        const notices = message ? options.notices(entry, message, decision.notices, now) : { messages: [], suppressed: false };
        const created = yield* spool.settle(entry, decision.next, notices.messages);
        if (decision.holdQueue) hold(queueOf(entry.route), options.holdMs);
        hooks.recorded(entry, attempt, decision, { queued: notices.messages.filter((m) => created.some((e) => e.messageId === m.id)), suppressed: notices.suppressed });
        submit(created);
      });

    const attempt = (entry: QueueEntry) =>
      Effect.gen(function* () {
        const message = spool.message(entry.messageId);
        if (!message) {
          hooks.log("queue.body.missing", { entry: entry.id, msg: entry.messageId });
          return yield* spool.finish(entry);
        }
        const outcome = yield* options.dispatch(entry, message, () => spool.body(entry.messageId) ?? new Uint8Array());
        yield* record(entry, outcome);
      }).pipe(
        // Not recorded: the entry is still due. Holding its queue keeps a failing disk from
        // turning into a loop of repeated deliveries.
        Effect.catch((error) =>
          Effect.sync(() => {
            hold(queueOf(entry.route), options.holdMs);
            hooks.log("queue.record.failed", { entry: entry.id, error: error.detail });
          }),
        ),
        Effect.catchDefect((defect) =>
          Effect.sync(() => {
            hold(queueOf(entry.route), options.holdMs);
            hooks.log("queue.attempt.crashed", { entry: entry.id, error: String(defect) });
          }),
        ),
        Effect.ensuring(Effect.sync(() => done(entry))),
      );

    const done = (entry: QueueEntry) => {
      const queue = queueOf(entry.route);
      const count = (perQueue.get(queue) ?? 1) - 1;
      if (count > 0) perQueue.set(queue, count);
      else perQueue.delete(queue);
      left(entry.id);
      wake(); // room again: entries left to the scan need not wait for the poll
    };

    /** Counts the entry as in flight; its attempt is forked right after. */
    const claim = (entry: QueueEntry) => {
      inFlight.add(entry.id);
      const queue = queueOf(entry.route);
      perQueue.set(queue, (perQueue.get(queue) ?? 0) + 1);
    };

    // `select` claims the entries it returns; claiming and forking happen without an
    // interruption point between them, so an entry counted in flight always has an
    // attempt that will let it go.
    const launch = (select: () => ReadonlyArray<QueueEntry>) =>
      Effect.uninterruptible(
        Effect.suspend(() => Effect.forEach(select(), (entry) => FiberSet.run(attempts, attempt(entry)), { discard: true })),
      );

    const queueRoom = (queue: string) => options.maxInFlightPerQueue - (perQueue.get(queue) ?? 0);

    /**
     * Runs a selection that claims entries into `found`. Should a store read throw part
     * way, what was claimed so far still goes (each claimed entry needs its attempt).
     */
    const claiming = (fill: (found: QueueEntry[]) => void): ReadonlyArray<QueueEntry> => {
      const found: QueueEntry[] = [];
      try {
        fill(found);
      } catch (error) {
        hooks.log("queue.scan.failed", { error: String(error) });
      }
      return found;
    };

    // Visits due queues in order of their earliest entry; in-flight entries keep their due
    // time until recorded, so the scan passes over them.
    const claimDue = () =>
      claiming((found) => {
        let room = options.maxInFlight - inFlight.size;
        if (room <= 0 || !running) return;
        const now = clock.currentTimeMillisUnsafe();
        for (const { queue } of spool.dueQueues(now)) {
          if (room <= 0) break;
          const take = Math.min(room, queueRoom(queue));
          if (take <= 0 || isHeld(queue, now)) continue;
          for (const entry of spool.dueIn(queue, now, take, (id) => inFlight.has(id))) {
            claim(entry);
            found.push(entry);
            room--;
          }
        }
      });

    /**
     * Claims the just-committed entries that can go now; the rest wait for the scan. Runs
     * synchronously in `submit`, right after the commit: were the claim left to the intake
     * fiber, the scan could take, send and settle an entry first and the intake would send
     * its stale copy again.
     */
    const claimSubmitted = (entries: ReadonlyArray<QueueEntry>) =>
      claiming((found) => {
        const now = clock.currentTimeMillisUnsafe();
        for (const entry of entries) {
          if (!running) return;
          if (inFlight.size >= options.maxInFlight) return wake(); // the scan finds the rest
          const queue = queueOf(entry.route);
          if (inFlight.has(entry.id) || spool.isSuspended(queue) || isHeld(queue, now) || queueRoom(queue) <= 0) continue;
          claim(entry);
          found.push(entry);
        }
      });

    /** Forks the attempts of entries `submit` claimed. */
    const intake = Effect.forever(Effect.flatMap(Queue.takeAll(submitted), (batches) => launch(() => batches.flat())));

    // After each scan: wait for a wake (a completion, an operator) or the poll interval,
    // then leave at least MIN_SCAN_GAP_MS before the next scan.
    const scanner = Effect.forever(
      launch(claimDue).pipe(
        Effect.andThen(Queue.take(wakes).pipe(Effect.timeoutOption(options.pollMs))),
        Effect.andThen(Effect.sleep(MIN_SCAN_GAP_MS)),
      ),
    );

    const loops = [yield* Effect.forkScoped(intake), yield* Effect.forkScoped(scanner)];

    const submit = (entries: ReadonlyArray<QueueEntry>) => {
      if (!running || entries.length === 0) return;
      const claimed = claimSubmitted(entries);
      if (claimed.length > 0) Queue.offerUnsafe(submitted, claimed);
    };

    /** Claimed by `submit` but never forked (the intake stopped first): no longer in flight, still due. */
    const unclaimUnlaunched = Effect.flatMap(Queue.clear(submitted), (batches) =>
      Effect.sync(() => batches.flat().forEach(done)),
    );

    const stop = (graceMs: number) =>
      Effect.gen(function* () {
        if (running) {
          running = false;
          if (inFlight.size === 0) Deferred.doneUnsafe(drained, Effect.void);
        }
        yield* Fiber.interruptAll(loops);
        yield* unclaimUnlaunched;
        const recorded = yield* Deferred.await(drained).pipe(Effect.timeoutOption(graceMs));
        if (recorded._tag === "None") hooks.log("queue.stop.interrupted", { inFlight: inFlight.size });
        yield* FiberSet.clear(attempts);
      });

    // Added after the FiberSet and the loops, so it runs before their finalizers interrupt them.
    yield* Effect.addFinalizer(() => stop(options.graceMs));

    return {
      submit,
      inFlight: () => inFlight.size,
      isInFlight: (entryId) => inFlight.has(entryId),
      holds: () => {
        const now = clock.currentTimeMillisUnsafe();
        for (const queue of [...held.keys()]) isHeld(queue, now);
        return held;
      },
      release: (queue) => {
        if (queue === undefined) held.clear();
        else held.delete(queue);
        wake();
      },
      wake,
      recordNow: (entry, outcome) =>
        Effect.suspend(() => {
          if (!running || inFlight.has(entry.id)) return Effect.succeed(false);
          inFlight.add(entry.id);
          return record(entry, outcome).pipe(
            Effect.as(true),
            Effect.ensuring(Effect.sync(() => left(entry.id))),
          );
        }),
      stop,
    } satisfies Scheduler;
  });
