// Drains the event outbox to JetStream: the oldest events first, a bounded batch at a time,
// each removed from the outbox once JetStream acknowledged it. While NATS or JetStream is
// away, the publisher retries on a capped, jittered backoff; nothing else waits for it
// (the spool commits outcomes and their events whatever NATS does), so NATS being down
// delays events, never mail.
//
// After any failed publish the stream is ensured again before the next batch: a publish
// that found no stream (JetStream lost it) is how a recreated stream gets its events.
// Time comes from the Clock and waits are Effect sleeps, so TestClock drives the backoff.
import { Clock, Data, Effect, Queue, Random, type Scope } from "effect";
import type { OutboxEvent } from "../../protocol/events.ts";
import type { Outbox } from "../queue/outbox.ts";

export type PublishOutcome =
  | { readonly _tag: "Acked"; readonly seq: number; readonly duplicate: boolean }
  | { readonly _tag: "Failed"; readonly detail: string };

/** Where events go (cluster/events-stream.ts). */
export interface EventSink {
  /** Creates the stream or puts it right: "present", "created" or "updated". */
  readonly ensure: () => Effect.Effect<string, { readonly detail: string }>;
  readonly publish: (events: ReadonlyArray<OutboxEvent>) => Effect.Effect<ReadonlyArray<PublishOutcome>>;
}

export interface PublisherObserver {
  /** The stream was checked: "present", "created" (first start, or JetStream lost it) or "updated". */
  readonly ensured: (state: string) => void;
  /** Events acknowledged; `duplicates` of them JetStream had already (dropped by id). */
  readonly published: (count: number, duplicates: number) => void;
  /** Events whose publish failed (they stay in the outbox). */
  readonly failed: (count: number) => void;
  /** Publishing stopped working (first failure after a success), with why. */
  readonly stalled: (detail: string) => void;
  /** Publishing works again after `failures` failed rounds. */
  readonly resumed: (failures: number) => void;
}

export interface PublisherOptions {
  readonly outbox: Outbox;
  readonly sink: EventSink;
  readonly observer: PublisherObserver;
  /** Events read from the outbox and published at once. */
  readonly batch: number;
  /** Backoff after a failed round: base doubling to max, each wait jittered between half and all of it. */
  readonly retryBaseMs: number;
  readonly retryMaxMs: number;
  /** With nothing to publish, the outbox is looked at again after this long (writes also wake the publisher). */
  readonly idlePollMs: number;
  /** When the scope closes: how long a last round may take to publish what the node's final outcomes wrote. */
  readonly stopGraceMs: number;
}

/** Why a round failed: the stream could not be ensured, a publish failed, or the outbox could not be read or updated. */
class RoundFailed extends Data.TaggedError("RoundFailed")<{ readonly detail: string }> {}

/**
 * One round: ensures the stream when the last round failed, publishes the oldest batch,
 * removes what was acknowledged. Returns whether the batch was full (more may wait).
 */
const round = (options: PublisherOptions, state: { ensured: boolean }): Effect.Effect<boolean, RoundFailed> =>
  Effect.gen(function* () {
    if (!state.ensured) {
      const stream = yield* options.sink.ensure().pipe(Effect.mapError((error) => new RoundFailed({ detail: error.detail })));
      options.observer.ensured(stream);
      state.ensured = true;
    }
    const items = options.outbox.oldest(options.batch);
    if (items.length === 0) return false;
    const outcomes = yield* options.sink.publish(items.map((item) => item.event));
    const acked = items.filter((_, n) => outcomes[n]?._tag === "Acked");
    const duplicates = outcomes.filter((o) => o._tag === "Acked" && o.duplicate).length;
    if (acked.length > 0) {
      // Not interrupted half way: LMDB closes after the publisher stops, never under its write;
      // and what left the outbox is always counted (a stop right after the removal used to skip the count).
      yield* Effect.uninterruptible(
        Effect.tryPromise({
          try: () => options.outbox.remove(acked.map((item) => item.key)),
          catch: (error) => new RoundFailed({ detail: `outbox: ${String(error)}` }),
        }).pipe(Effect.tap(() => Effect.sync(() => options.observer.published(acked.length, duplicates)))),
      );
    }
    const failure = outcomes.find((o) => o._tag === "Failed");
    if (failure?._tag === "Failed") {
      options.observer.failed(items.length - acked.length);
      state.ensured = false;
      return yield* Effect.fail(new RoundFailed({ detail: failure.detail }));
    }
    return items.length === options.batch;
  }).pipe(Effect.catchDefect((defect) => Effect.fail(new RoundFailed({ detail: `outbox: ${String(defect)}` }))));

/** The backoff before retry number `failures` (1, 2, …): doubling from base to max, jittered. */
const retryDelayMs = (options: Pick<PublisherOptions, "retryBaseMs" | "retryMaxMs">, failures: number, random: number): number => {
  const full = Math.min(options.retryMaxMs, options.retryBaseMs * 2 ** Math.min(failures - 1, 30));
  return Math.round(full / 2 + (full / 2) * random);
};

/** Runs the publisher in the current scope until the scope closes. */
export const startPublisher = (options: PublisherOptions): Effect.Effect<void, never, Scope.Scope> =>
  Effect.gen(function* () {
    const wakes = yield* Queue.dropping<void>(1);
    const unregister = options.outbox.onWritten(() => void Queue.offerUnsafe(wakes, undefined));
    yield* Effect.addFinalizer(() => Effect.sync(unregister));
    const state = { ensured: false };
    let failures = 0;
    // Added before the loop is forked, so it runs after the loop was interrupted.
    yield* Effect.addFinalizer(() => Effect.ignore(round(options, state).pipe(Effect.timeoutOption(options.stopGraceMs))));

    const loop = Effect.gen(function* () {
      for (;;) {
        const result = yield* Effect.result(round(options, state));
        if (result._tag === "Failure") {
          failures++;
          if (failures === 1) options.observer.stalled(result.failure.detail);
          yield* Effect.sleep(retryDelayMs(options, failures, yield* Random.next));
          continue;
        }
        if (failures > 0) options.observer.resumed(failures);
        failures = 0;
        if (result.success) continue; // a full batch: more may be waiting
        yield* Queue.take(wakes).pipe(Effect.timeoutOption(options.idlePollMs));
      }
    });
    yield* Effect.forkScoped(loop);
  });

/** How long the oldest event has waited, in seconds (0 when the outbox is empty). */
export const oldestAgeSeconds = (outbox: Outbox, clock: Clock.Clock): number => {
  const oldest = outbox.oldestTime();
  return oldest === undefined ? 0 : Math.max(0, (clock.currentTimeMillisUnsafe() - oldest) / 1000);
};
