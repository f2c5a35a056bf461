// Takes due entries from the spool, queue by queue (destination domain or mailbox),
// dispatches them with a bound on entries in flight overall and per queue, and records
// each outcome durably: delivered and failed recipients leave the entry, deferred ones
// wait again on the retry schedule, expired ones fail, and the DSNs this calls for are
// committed in the same transaction. An entry leaves the spool only after its next hop
// answered (invariant 2).
import { Effect } from "effect";
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
  /** Entries just committed: dispatched at once when there is room, else left for the due-index scan. */
  readonly submit: (entries: ReadonlyArray<QueueEntry>) => void;
  readonly inFlight: () => number;
  readonly isInFlight: (entryId: string) => boolean;
  /** Queues held back after trouble (rate limiting, unreachable), with the time they are released. */
  readonly holds: () => ReadonlyMap<string, number>;
  /** Lifts a hold (an operator's retry) and scans at once. */
  readonly release: (queue: string | undefined) => void;
  readonly wake: () => void;
  /**
   * Records an outcome reached without an attempt (an operator's bounce), exactly as an
   * attempt's; false when the entry is in flight (its attempt will be recorded instead).
   */
  readonly recordNow: (entry: QueueEntry, outcome: Attempt) => Effect.Effect<boolean, StoreError>;
  /** Stops taking work and waits (up to `graceMs`) for attempts in flight to be recorded. */
  readonly stop: (graceMs: number) => Promise<void>;
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
}

/** Scans triggered by completions are at least this far apart (a scan walks every due queue). */
const MIN_SCAN_GAP_MS = 20;

export const startScheduler = (options: SchedulerOptions): Scheduler => {
  const { spool, hooks } = options;
  const inFlight = new Set<string>();
  const perQueue = new Map<string, number>();
  const held = new Map<string, number>();
  let running = true;
  let wakeUp: (() => void) | undefined;
  let woken = false; // a wake that arrived while the loop was busy

  const hold = (queue: string, ms: number) => held.set(queue, Math.max(held.get(queue) ?? 0, Date.now() + ms));

  const isHeld = (queue: string, now: number) => {
    const until = held.get(queue);
    if (until === undefined) return false;
    if (until > now) return true;
    held.delete(queue);
    return false;
  };

  const record = (entry: QueueEntry, attempt: Attempt) =>
    Effect.gen(function* () {
      const message = spool.message(entry.messageId);
      const now = Date.now();
      const decision = decide(entry, attempt, now, Math.random(), options.policy, dsnParamsOf(message?.attributes));
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
    inFlight.delete(entry.id);
    const queue = queueOf(entry.route);
    const left = (perQueue.get(queue) ?? 1) - 1;
    if (left > 0) perQueue.set(queue, left);
    else perQueue.delete(queue);
    wake(); // room again: entries left to the scan need not wait for the poll
  };

  const dispatch = (entry: QueueEntry) => {
    inFlight.add(entry.id);
    const queue = queueOf(entry.route);
    perQueue.set(queue, (perQueue.get(queue) ?? 0) + 1);
    Effect.runFork(attempt(entry));
  };

  const queueRoom = (queue: string) => options.maxInFlightPerQueue - (perQueue.get(queue) ?? 0);

  // Visits due queues in order of their earliest entry; in-flight entries keep their due
  // time until recorded, so the scan passes over them.
  const scan = () => {
    let room = options.maxInFlight - inFlight.size;
    if (room <= 0) return;
    const now = Date.now();
    for (const { queue } of spool.dueQueues(now)) {
      if (room <= 0 || !running) break;
      const take = Math.min(room, queueRoom(queue));
      if (take <= 0 || isHeld(queue, now)) continue;
      const due = spool.dueIn(queue, now, take, (id) => inFlight.has(id));
      due.forEach(dispatch);
      room -= due.length;
    }
  };

  const pause = () =>
    new Promise<void>((resolve) => {
      if (woken) {
        woken = false;
        return void setTimeout(resolve, MIN_SCAN_GAP_MS);
      }
      const timer = setTimeout(finish, options.pollMs);
      function finish() {
        clearTimeout(timer);
        wakeUp = undefined;
        setTimeout(resolve, MIN_SCAN_GAP_MS);
      }
      wakeUp = finish;
    });

  const wake = () => {
    if (wakeUp) wakeUp();
    else woken = true;
  };

  const loop = async () => {
    while (running) {
      try {
        scan();
      } catch (error) {
        hooks.log("queue.scan.failed", { error: String(error) });
      }
      await pause();
    }
  };
  const looping = loop();

  const submit = (entries: ReadonlyArray<QueueEntry>) => {
    const now = Date.now();
    for (const entry of entries) {
      if (!running) return;
      if (inFlight.size >= options.maxInFlight) return wake(); // the scan finds the rest
      const queue = queueOf(entry.route);
      if (inFlight.has(entry.id) || spool.isSuspended(queue) || isHeld(queue, now) || queueRoom(queue) <= 0) continue;
      dispatch(entry);
    }
  };

  return {
    submit,
    inFlight: () => inFlight.size,
    isInFlight: (entryId) => inFlight.has(entryId),
    holds: () => held,
    release: (queue) => {
      if (queue === undefined) held.clear();
      else held.delete(queue);
      wake();
    },
    wake,
    recordNow: (entry, outcome) =>
      Effect.suspend(() => {
        if (inFlight.has(entry.id)) return Effect.succeed(false);
        inFlight.add(entry.id);
        return record(entry, outcome).pipe(
          Effect.as(true),
          Effect.ensuring(Effect.sync(() => inFlight.delete(entry.id))),
        );
      }),
    stop: async (graceMs) => {
      running = false;
      wakeUp?.();
      await looping;
      const deadline = Date.now() + graceMs;
      while (inFlight.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    },
  };
};
