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
import { queueOf, type MessageRecord, type QueueEntry } from "../queue/entry.ts";
import type { StoreError } from "../../protocol/errors.ts";
import type { EventDraft } from "../../protocol/events.ts";
import type { GeneratedMessage, Spool } from "../queue/spool.ts";
import type { Attempt } from "./attempt.ts";
import type { Dispatch } from "./dispatch.ts";
import { dsnParamsOf } from "./dsn.ts";
import type { Notices } from "./notices.ts";
import { decide, type Decision, type OutcomePolicy } from "./outcome.ts";
import type { Log } from "../../protocol/log.ts";

export interface SchedulerHooks {
  /**
   * After the outcome is committed. `tookMs`: how long the attempt (the dispatch) took, by
   * the Clock; undefined for an outcome reached without one (an operator's bounce).
   */
  readonly recorded: (
    entry: QueueEntry,
    attempt: Attempt,
    decision: Decision,
    notices: { readonly queued: ReadonlyArray<GeneratedMessage>; readonly suppressed: boolean },
    tookMs?: number,
  ) => void;
  readonly log: Log;
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
  /**
   * An operator's hold of an entry in flight, after the spool stored it: "stopped" when its
   * transaction has not begun (waiting for a connection or the site's budget; it will not
   * begin, and the entry goes back held and unsent), "sending" when it has (or the attempt
   * ended meanwhile): that attempt still goes out.
   */
  readonly holdInFlight: (entryId: string) => "stopped" | "sending";
  /** An operator's release of an entry in flight: its transaction may begin after all. */
  readonly releaseInFlight: (entryId: string) => void;
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

/** Builds the events of an outcome before it is recorded (actors/delivery/events.ts). */
export type OutcomeEvents = (
  entry: QueueEntry,
  message: MessageRecord | undefined,
  attempt: Attempt,
  decision: Decision,
  dsns: ReadonlyArray<GeneratedMessage>,
  now: number,
) => ReadonlyArray<EventDraft>;

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
  /** The events an outcome reports, committed with it (none when absent). */
  readonly events?: OutcomeEvents | undefined;
  /** When the scope closes: how long attempts in flight may take to be recorded before they are interrupted. */
  readonly graceMs: number;
}

/** Scans triggered by completions are at least this far apart (a scan walks every due queue). */
export const MIN_SCAN_GAP_MS = 20;

/**
 * What the scheduler's pieces share. Read and written synchronously by `submit`'s intake,
 * the scan, `holds` and the attempts' completions (plain code paths, no interruption point).
 */
interface State {
  readonly options: SchedulerOptions;
  readonly clock: Clock.Clock;
  /** Batches claimed by `submit`, waiting for the intake fiber to fork their attempts. */
  readonly submitted: Queue.Queue<ReadonlyArray<QueueEntry>>;
  // One pending wake is enough: a wake that arrives while the scan is busy makes the next one come sooner.
  readonly wakes: Queue.Queue<void>;
  // Completed when the scheduler has stopped and the last attempt in flight is recorded.
  readonly drained: Deferred.Deferred<void>;
  readonly inFlight: Set<string>;
  /** Entries in flight that an operator held, or whose transaction began (see SendGate). */
  readonly gates: Map<string, SendGate>;
  readonly perQueue: Map<string, number>;
  readonly held: Map<string, number>;
  running: boolean;
}

/**
 * Whether a claimed entry's transaction may begin. The attempt asks once its next hop is
 * ready (`mayStart`, right before MAIL FROM or the mailbox write): a hold seen then stops
 * it; once begun, a hold waits for the attempt's outcome.
 */
interface SendGate {
  held: boolean;
  begun: boolean;
}

const gateOf = (state: State, entryId: string): SendGate => {
  let gate = state.gates.get(entryId);
  if (!gate) state.gates.set(entryId, (gate = { held: false, begun: false }));
  return gate;
};

const mayStartFor = (state: State, entryId: string) => () => {
  // Left the queue while its attempt waited for a connection: an operator deleted it (its
  // body may be gone with it) or a drain handed it to a peer, which sends it now.
  if (state.options.spool.entry(entryId) === undefined) return false;
  const gate = gateOf(state, entryId);
  if (gate.held) return false;
  gate.begun = true;
  return true;
};

// ---- holds and wakes ----

const wake = (state: State) => void Queue.offerUnsafe(state.wakes, undefined);

const hold = (state: State, queue: string, ms: number) =>
  state.held.set(queue, Math.max(state.held.get(queue) ?? 0, state.clock.currentTimeMillisUnsafe() + ms));

const isHeld = (state: State, queue: string, now: number) => {
  const until = state.held.get(queue);
  if (until === undefined) return false;
  if (until > now) return true;
  state.held.delete(queue);
  return false;
};

const currentHolds = (state: State): ReadonlyMap<string, number> => {
  const now = state.clock.currentTimeMillisUnsafe();
  for (const queue of [...state.held.keys()]) isHeld(state, queue, now);
  return state.held;
};

// ---- claiming: an entry counted in flight always has an attempt that will let it go ----

/** Counts the entry as in flight; its attempt is forked right after. */
const claim = (state: State, entry: QueueEntry) => {
  state.inFlight.add(entry.id);
  const queue = queueOf(entry.route);
  state.perQueue.set(queue, (state.perQueue.get(queue) ?? 0) + 1);
};

const left = (state: State, entryId: string) => {
  state.inFlight.delete(entryId);
  state.gates.delete(entryId);
  if (!state.running && state.inFlight.size === 0) Deferred.doneUnsafe(state.drained, Effect.void);
};

/** The entry's attempt ended (or it was claimed and never launched): it lets go of its claim. */
const done = (state: State, entry: QueueEntry) => {
  const queue = queueOf(entry.route);
  const count = (state.perQueue.get(queue) ?? 1) - 1;
  if (count > 0) state.perQueue.set(queue, count);
  else state.perQueue.delete(queue);
  left(state, entry.id);
  wake(state); // room again: entries left to the scan need not wait for the poll
};

const queueRoom = (state: State, queue: string) => state.options.maxInFlightPerQueue - (state.perQueue.get(queue) ?? 0);

/**
 * Runs a selection that claims entries into `found`. Should a store read throw part
 * way, what was claimed so far still goes (each claimed entry needs its attempt).
 */
const claiming = (state: State, fill: (found: QueueEntry[]) => void): ReadonlyArray<QueueEntry> => {
  const found: QueueEntry[] = [];
  try {
    fill(found);
  } catch (error) {
    state.options.hooks.log("queue.scan.failed", { level: "error", error: String(error) });
  }
  return found;
};

// Visits due queues in order of their earliest entry; in-flight entries keep their due
// time until recorded, so the scan passes over them.
const claimDue = (state: State) =>
  claiming(state, (found) => {
    const { options, inFlight } = state;
    let room = options.maxInFlight - inFlight.size;
    if (room <= 0 || !state.running) return;
    const now = state.clock.currentTimeMillisUnsafe();
    for (const { queue } of options.spool.dueQueues(now)) {
      if (room <= 0) break;
      const take = Math.min(room, queueRoom(state, queue));
      if (take <= 0 || isHeld(state, queue, now)) continue;
      for (const entry of options.spool.dueIn(queue, now, take, (id) => inFlight.has(id))) {
        claim(state, entry);
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
const claimSubmitted = (state: State, entries: ReadonlyArray<QueueEntry>) =>
  claiming(state, (found) => {
    const { options, inFlight } = state;
    const now = state.clock.currentTimeMillisUnsafe();
    for (const entry of entries) {
      if (!state.running) return;
      if (inFlight.size >= options.maxInFlight) return wake(state); // the scan finds the rest
      const queue = queueOf(entry.route);
      if (inFlight.has(entry.id) || options.spool.isSuspended(queue) || isHeld(state, queue, now) || queueRoom(state, queue) <= 0) continue;
      claim(state, entry);
      found.push(entry);
    }
  });

/** `Scheduler.submit`: claims synchronously (see `claimSubmitted`), then hands the batch to the intake. */
const submit = (state: State, entries: ReadonlyArray<QueueEntry>) => {
  if (!state.running || entries.length === 0) return;
  const claimed = claimSubmitted(state, entries);
  if (claimed.length > 0) Queue.offerUnsafe(state.submitted, claimed);
};

// ---- recording ----

/**
 * Decides the outcome, commits it with its DSNs and events, and submits the entries this
 * created. `message`: the entry's message record, as its caller read it (once per attempt).
 */
const record = (state: State, entry: QueueEntry, attempt: Attempt, message: MessageRecord | undefined, startedAt?: number) =>
  Effect.gen(function* () {
    const { options } = state;
    const now = yield* Clock.currentTimeMillis;
    const random = yield* Random.next;
    const decision = decide(entry, attempt, now, random, options.policy, dsnParamsOf(message?.attributes));
    const notices = message ? options.notices(entry, message, decision.notices, now) : { messages: [], suppressed: false };
    const events = options.events?.(entry, message, attempt, decision, notices.messages, now) ?? [];
    const created = yield* options.spool.settle(entry, decision.next, notices.messages, { attempt: decision.record, events });
    if (decision.holdQueue) hold(state, queueOf(entry.route), options.holdMs);
    const queued = notices.messages.filter((m) => created.some((e) => e.messageId === m.id));
    options.hooks.recorded(entry, attempt, decision, { queued, suppressed: notices.suppressed }, startedAt === undefined ? undefined : now - startedAt);
    submit(state, created);
  });

/** One claimed entry's attempt: dispatch and record; whatever happens, it lets go of its claim. */
const attempt = (state: State, entry: QueueEntry) =>
  Effect.gen(function* () {
    const { spool, hooks } = state.options;
    const message = spool.message(entry.messageId);
    if (!message) {
      hooks.log("queue.body.missing", { level: "error", entry: entry.id, queueId: entry.messageId });
      return yield* spool.finish(entry);
    }
    const startedAt = yield* Clock.currentTimeMillis;
    const outcome = yield* state.options.dispatch(entry, message, () => spool.body(entry.messageId), mayStartFor(state, entry.id));
    yield* record(state, entry, outcome, message, startedAt);
  }).pipe(
    // Not recorded: the entry is still due. Holding its queue keeps a failing disk from
    // turning into a loop of repeated deliveries.
    Effect.catch((error) => Effect.sync(() => attemptFailed(state, entry, "queue.record.failed", error.detail))),
    Effect.catchDefect((defect) => Effect.sync(() => attemptFailed(state, entry, "queue.attempt.crashed", String(defect)))),
    Effect.ensuring(Effect.sync(() => done(state, entry))),
  );

const attemptFailed = (state: State, entry: QueueEntry, event: string, error: string) => {
  hold(state, queueOf(entry.route), state.options.holdMs);
  state.options.hooks.log(event, { level: "error", entry: entry.id, queueId: entry.messageId, error });
};

/** `Scheduler.recordNow`: claims the entry (not its queue) while its outcome is recorded. */
const recordNow = (state: State, entry: QueueEntry, outcome: Attempt) =>
  Effect.suspend(() => {
    if (!state.running || state.inFlight.has(entry.id)) return Effect.succeed(false);
    state.inFlight.add(entry.id);
    return record(state, entry, outcome, state.options.spool.message(entry.messageId)).pipe(
      Effect.as(true),
      Effect.ensuring(Effect.sync(() => left(state, entry.id))),
    );
  });

// ---- the scheduler ----

/** Claimed by `submit` but never forked (the intake stopped first): no longer in flight, still due. */
const unclaimUnlaunched = (state: State) =>
  Effect.flatMap(Queue.clear(state.submitted), (batches) => Effect.sync(() => batches.flat().forEach((entry) => done(state, entry))));

/** `Scheduler.stop`: stops taking work, waits up to `graceMs` for attempts in flight to be recorded, interrupts the rest. */
const stopScheduler = (state: State, loops: ReadonlyArray<Fiber.Fiber<never>>, attempts: FiberSet.FiberSet<void, never>, graceMs: number) =>
  Effect.gen(function* () {
    if (state.running) {
      state.running = false;
      if (state.inFlight.size === 0) Deferred.doneUnsafe(state.drained, Effect.void);
    }
    yield* Fiber.interruptAll(loops);
    yield* unclaimUnlaunched(state);
    const recorded = yield* Deferred.await(state.drained).pipe(Effect.timeoutOption(graceMs));
    if (recorded._tag === "None") state.options.hooks.log("queue.stop.interrupted", { level: "warn", inFlight: state.inFlight.size });
    yield* FiberSet.clear(attempts);
  });


export const makeScheduler = (options: SchedulerOptions): Effect.Effect<Scheduler, never, Scope.Scope> =>
  Effect.gen(function* () {
    const clock = yield* Clock.Clock;
    const attempts = yield* FiberSet.make<void, never>();
    const state: State = {
      options,
      clock,
      submitted: yield* Queue.unbounded<ReadonlyArray<QueueEntry>>(),
      wakes: yield* Queue.dropping<void>(1),
      drained: yield* Deferred.make<void>(),
      inFlight: new Set(),
      gates: new Map(),
      perQueue: new Map(),
      held: new Map(),
      running: true,
    };

    // `select` claims the entries it returns; claiming and forking happen without an
    // interruption point between them, so an entry counted in flight always has an
    // attempt that will let it go.
    const launch = (select: () => ReadonlyArray<QueueEntry>) =>
      Effect.uninterruptible(
        Effect.suspend(() => Effect.forEach(select(), (entry) => FiberSet.run(attempts, attempt(state, entry)), { discard: true })),
      );

    /** Forks the attempts of entries `submit` claimed. */
    const intake = Effect.forever(Effect.flatMap(Queue.takeAll(state.submitted), (batches) => launch(() => batches.flat())));

    // After each scan: wait for a wake (a completion, an operator) or the poll interval,
    // then leave at least MIN_SCAN_GAP_MS before the next scan.
    const scanner = Effect.forever(
      launch(() => claimDue(state)).pipe(
        Effect.andThen(Queue.take(state.wakes).pipe(Effect.timeoutOption(options.pollMs))),
        Effect.andThen(Effect.sleep(MIN_SCAN_GAP_MS)),
      ),
    );

    const loops = [yield* Effect.forkScoped(intake), yield* Effect.forkScoped(scanner)];

    const stop = (graceMs: number) => stopScheduler(state, loops, attempts, graceMs);

    // Added after the FiberSet and the loops, so it runs before their finalizers interrupt them.
    yield* Effect.addFinalizer(() => stop(options.graceMs));

    return {
      submit: (entries) => submit(state, entries),
      inFlight: () => state.inFlight.size,
      isInFlight: (entryId) => state.inFlight.has(entryId),
      holdInFlight: (entryId) => {
        if (!state.inFlight.has(entryId)) return "sending"; // the attempt ended meanwhile: it was made
        const gate = gateOf(state, entryId);
        gate.held = true;
        return gate.begun ? "sending" : "stopped";
      },
      releaseInFlight: (entryId) => {
        const gate = state.gates.get(entryId);
        if (gate) gate.held = false;
      },
      holds: () => currentHolds(state),
      release: (queue) => {
        if (queue === undefined) state.held.clear();
        else state.held.delete(queue);
        wake(state);
      },
      wake: () => wake(state),
      recordNow: (entry, outcome) => recordNow(state, entry, outcome),
      stop,
    } satisfies Scheduler;
  });
