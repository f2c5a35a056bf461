// The node's LMDB environment, the spool inside it and the event outbox its transactions
// write to. LMDB closes last: every part that writes to it (sessions, delivery,
// mailboxes, NATS handlers, the event publisher) depends on it, so each of them is
// stopped before the environment closes.
import { statfsSync } from "node:fs";
import { mkdir } from "node:fs/promises";
import { join } from "node:path";
import { Clock, Context, Effect, Layer, type Scope } from "effect";
import { open, type RootDatabase } from "lmdb";
import { makeSpoolHealth, type SpoolHealth as SpoolHealthShape } from "../../actors/queue/spool-health.ts";
import { openSpool, type Spool as SpoolShape } from "../../actors/queue/spool.ts";
import { openOutbox, type Outbox } from "../../actors/queue/outbox.ts";
import type { OutboxDraft } from "../../protocol/events.ts";
import { registerGauge, registerQueueGauges } from "../metrics.ts";
import { Config, Log, Metrics, StartFailure, starting } from "./core.ts";

export class Lmdb extends Context.Service<Lmdb, RootDatabase>()("tern/Lmdb") {
  static readonly layer = Layer.effect(
    Lmdb,
    Effect.gen(function* () {
      const config = yield* Config;
      yield* starting("data directory", () => mkdir(config.dataDir, { recursive: true }));
      // Default lmdb-js options: an awaited write resolves only once flushed (never noSync).
      // maxDbs: lmdb-js's default of 12 named databases is too few for the spool's indexes and the mailboxes.
      return yield* Effect.acquireRelease(
        Effect.try({
          try: () => open({ path: join(config.dataDir, "tern.lmdb"), maxDbs: 64 }),
          catch: (error) => new StartFailure({ part: "lmdb", detail: String(error) }),
        }),
        (root) => Effect.promise(() => root.close().catch(() => undefined)),
      );
    }),
  );
}

/** Events waiting for JetStream, written by the spool's transactions (actors/queue/outbox.ts). */
export class EventOutbox extends Context.Service<EventOutbox, Outbox>()("tern/EventOutbox") {
  static readonly layer = Layer.effect(
    EventOutbox,
    Effect.gen(function* () {
      return openOutbox(yield* Lmdb, (yield* Config).nodeId);
    }),
  );
}

/**
 * Writes events that report no committed outcome (site back-off, reputation actions) to
 * the outbox, each in a transaction of its own, without waiting; a failed write is logged
 * as `failedEvent`. The writes still under way are awaited when the caller's scope closes,
 * so the last ones are on disk before LMDB closes.
 */
export const outboxAppender = (failedEvent: string): Effect.Effect<(draft: OutboxDraft) => void, never, Scope.Scope | EventOutbox | Log> =>
  Effect.gen(function* () {
    const outbox = yield* EventOutbox;
    const log = yield* Log;
    const writing = new Set<Promise<void>>();
    yield* Effect.addFinalizer(() => Effect.promise(() => Promise.allSettled([...writing])));
    return (draft) => {
      const written: Promise<void> = outbox
        .append([draft])
        .catch((error: unknown) => log(failedEvent, { level: "warn", type: draft.type, error: String(error) }))
        .finally(() => writing.delete(written));
      writing.add(written);
    };
  });

export class Spool extends Context.Service<Spool, SpoolShape>()("tern/Spool") {
  static readonly layer = Layer.effect(
    Spool,
    Effect.gen(function* () {
      const config = yield* Config;
      const { registry, spoolCommit } = yield* Metrics;
      const clock = yield* Clock.Clock;
      const spool = openSpool(yield* Lmdb, yield* EventOutbox, { committed: (operation, seconds) => spoolCommit.observe({ operation }, seconds) });
      registerQueueGauges(registry, config.metrics.queueDestinations, {
        depths: spool.queueDepths,
        oldestAgeSeconds: () => {
          const now = clock.currentTimeMillisUnsafe();
          const arrived = spool.oldestArrival(now);
          return arrived === undefined ? 0 : Math.max(0, (now - arrived) / 1000);
        },
      });
      // statfs on each scrape: one system call, and the disk's state now, not a cached one.
      registerGauge(registry, "tern_spool_disk_free_bytes", "Bytes free for the node's user on the file system of the data directory (LMDB spool and mailboxes)", () => {
        const fs = statfsSync(config.dataDir);
        return fs.bavail * fs.bsize;
      });
      registerGauge(registry, "tern_spool_disk_size_bytes", "Size of the file system of the data directory, in bytes", () => {
        const fs = statfsSync(config.dataDir);
        return fs.blocks * fs.bsize;
      });
      registerGauge(registry, "tern_spool_incoming_bodies", "Message bodies being received, not yet committed or discarded", spool.incomingBodies);
      registerGauge(registry, "tern_spool_body_bytes", "Bytes of LMDB pages holding message bodies (queued and being received)", spool.bodyBytes);
      // Partial bodies of transactions cut short by the stop are removed before LMDB closes.
      yield* Effect.addFinalizer(() => Effect.promise(spool.discardsSettled));
      return spool;
    }),
  );
}

export class SpoolHealth extends Context.Service<SpoolHealth, SpoolHealthShape>()("tern/SpoolHealth") {
  static readonly layer = Layer.effect(
    SpoolHealth,
    Effect.gen(function* () {
      return yield* makeSpoolHealth(yield* Spool, yield* Log);
    }),
  );
}
