// The node's LMDB environment and the spool inside it. LMDB closes last: every part
// that writes to it (sessions, delivery, mailboxes, NATS handlers) depends on it, so
// each of them is stopped before the environment closes.
import { mkdir } from "node:fs/promises";
import { join } from "node:path";
import { Context, Effect, FiberSet, Layer, Schedule } from "effect";
import { open, type RootDatabase } from "lmdb";
import { openSpool, type Spool as SpoolShape } from "../../actors/queue/spool.ts";
import { registerGauge } from "../metrics.ts";
import { Config, Log, Metrics, starting } from "./core.ts";

export class Lmdb extends Context.Service<Lmdb, RootDatabase>()("tern/Lmdb") {
  static readonly layer = Layer.effect(
    Lmdb,
    Effect.gen(function* () {
      const config = yield* Config;
      yield* starting("data directory", () => mkdir(config.dataDir, { recursive: true }));
      // Default lmdb-js options: an awaited write resolves only once flushed (never noSync).
      // maxDbs: lmdb-js's default of 12 named databases is too few for the spool's indexes and the mailboxes.
      return yield* Effect.acquireRelease(
        Effect.sync(() => open({ path: join(config.dataDir, "tern.lmdb"), maxDbs: 64 })),
        (root) => Effect.promise(() => root.close()),
      );
    }),
  );
}

export class Spool extends Context.Service<Spool, SpoolShape>()("tern/Spool") {
  static readonly layer = Layer.effect(
    Spool,
    Effect.gen(function* () {
      const spool = openSpool(yield* Lmdb);
      registerGauge((yield* Metrics).registry, "tern_queue_depth", "Queue entries waiting or in flight on this node", spool.depth);
      return spool;
    }),
  );
}

export interface SpoolHealthShape {
  /** False after a failed commit until a probe write succeeds: new SMTP connections get 421 meanwhile. */
  readonly healthy: () => boolean;
  /** Called by a session whose commit failed. */
  readonly failed: () => void;
}

const PROBE_EVERY_MS = 2_000;

export class SpoolHealth extends Context.Service<SpoolHealth, SpoolHealthShape>()("tern/SpoolHealth") {
  static readonly layer = Layer.effect(
    SpoolHealth,
    Effect.gen(function* () {
      const spool = yield* Spool;
      const log = yield* Log;
      let healthy = true;
      const probeUntilHealthy = spool.probe().pipe(
        Effect.retry(Schedule.spaced(PROBE_EVERY_MS)),
        Effect.delay(PROBE_EVERY_MS),
        Effect.andThen(Effect.sync(() => {
          healthy = true;
          log("spool.healthy", {});
        })),
      );
      const probes = yield* FiberSet.make();
      const start = yield* FiberSet.runtime(probes)();
      return {
        healthy: () => healthy,
        failed: () => {
          if (!healthy) return;
          healthy = false;
          log("spool.unhealthy", {});
          start(probeUntilHealthy);
        },
      };
    }),
  );
}
