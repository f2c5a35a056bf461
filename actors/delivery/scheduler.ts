// Takes due entries from the spool (by the due-time index), dispatches them with a
// bounded number in flight, and records each outcome durably: delivered and failed
// recipients leave the entry; deferred ones wait again on the retry schedule.
// An entry leaves the spool only after its next hop answered (invariant 2).
import { Effect } from "effect";
import type { QueueEntry, RecipientResult } from "../queue/entry.ts";
import type { Spool } from "../queue/spool.ts";
import { retryDelayMs, type RetrySchedule } from "./backoff.ts";
import type { Dispatch } from "./dispatch.ts";

export interface SchedulerHooks {
  readonly finished: (entry: QueueEntry, results: ReadonlyArray<RecipientResult>, server: string) => void;
  readonly log: (event: string, fields: Record<string, unknown>) => void;
}

export interface Scheduler {
  /** Entries just committed: dispatched at once when there is room, else left for the due-index scan. */
  readonly submit: (entries: ReadonlyArray<QueueEntry>) => void;
  readonly inFlight: () => number;
  /** Stops taking work and waits (up to `graceMs`) for attempts in flight to be recorded. */
  readonly stop: (graceMs: number) => Promise<void>;
}

export interface SchedulerOptions {
  readonly spool: Spool;
  readonly dispatch: Dispatch;
  readonly maxInFlight: number;
  readonly pollMs: number;
  readonly retry: RetrySchedule;
  readonly hooks: SchedulerHooks;
}

export const startScheduler = (options: SchedulerOptions): Scheduler => {
  const { spool, hooks } = options;
  const inFlight = new Set<string>();
  let running = true;
  let wakeUp: (() => void) | undefined;
  let woken = false; // a wake that arrived while the loop was busy

  const record = (entry: QueueEntry, results: ReadonlyArray<RecipientResult>, server: string) => {
    const deferred = results.filter((r) => r.status === "deferred");
    hooks.finished(entry, results, server);
    if (deferred.length === 0) return spool.finish(entry);
    const attempts = entry.attempts + 1;
    return spool.reschedule(entry, {
      recipients: deferred.map((r) => r.recipient),
      nextAttemptAt: Date.now() + retryDelayMs(options.retry, attempts, Math.random()),
      reason: "deferred",
      lastResult: `${server}: ${deferred[0]!.reply}`,
      countsAsAttempt: true,
    });
  };

  const attempt = (entry: QueueEntry) =>
    Effect.gen(function* () {
      if (!spool.hasMessage(entry.messageId)) {
        hooks.log("queue.body.missing", { entry: entry.id, msg: entry.messageId });
        return yield* spool.finish(entry);
      }
      const { results, server } = yield* options.dispatch(entry, () => spool.body(entry.messageId) ?? new Uint8Array());
      yield* record(entry, results, server);
    }).pipe(
      Effect.catch((error) => Effect.sync(() => hooks.log("queue.record.failed", { entry: entry.id, error: error.detail }))),
      Effect.catchDefect((defect) => Effect.sync(() => hooks.log("queue.attempt.crashed", { entry: entry.id, error: String(defect) }))),
      Effect.ensuring(
        Effect.sync(() => {
          inFlight.delete(entry.id);
          // Room again after being full: entries left to the scan need not wait for the poll.
          if (inFlight.size === options.maxInFlight - 1) wake();
        }),
      ),
    );

  const dispatch = (entry: QueueEntry) => {
    inFlight.add(entry.id);
    Effect.runFork(attempt(entry));
  };

  // In-flight entries keep their due time until recorded, so the scan passes over them.
  const takeDueWork = () => {
    const room = options.maxInFlight - inFlight.size;
    return room > 0 ? spool.due(Date.now(), room, (id) => inFlight.has(id)) : [];
  };

  const pause = () =>
    new Promise<void>((resolve) => {
      if (woken) {
        woken = false;
        return resolve();
      }
      const timer = setTimeout(done, options.pollMs);
      function done() {
        clearTimeout(timer);
        wakeUp = undefined;
        resolve();
      }
      wakeUp = done;
    });

  const wake = () => {
    if (wakeUp) wakeUp();
    else woken = true;
  };

  const loop = async () => {
    while (running) {
      takeDueWork().forEach(dispatch);
      await pause();
    }
  };
  const looping = loop();

  return {
    submit: (entries) => {
      for (const entry of entries) {
        if (!running || inFlight.size >= options.maxInFlight) return wake(); // the scan finds the rest
        if (!inFlight.has(entry.id)) dispatch(entry);
      }
    },
    inFlight: () => inFlight.size,
    stop: async (graceMs) => {
      running = false;
      wakeUp?.();
      await looping;
      const deadline = Date.now() + graceMs;
      while (inFlight.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    },
  };
};
