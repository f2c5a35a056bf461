// Whether the spool can take mail. After a failed commit (disk full, I/O error) the
// spool counts as unhealthy, and new SMTP connections are answered 421 instead of
// accepting mail that cannot be stored, until a small probe write succeeds. Probes run
// every PROBE_INTERVAL_MS on a fiber of the caller's scope, only while unhealthy.
import { Effect, Queue, Schedule, type Scope } from "effect";
import type { Spool } from "./spool.ts";
import type { Log } from "../../protocol/log.ts";

export interface SpoolHealth {
  /** False from a failed commit until a probe write succeeds. Synchronous: asked for each new SMTP connection. */
  readonly healthy: () => boolean;
  /** A commit failed. Synchronous: called from the SMTP session. */
  readonly failed: () => void;
}

export const PROBE_INTERVAL_MS = 2_000;

export const makeSpoolHealth = (
  spool: Pick<Spool, "probe">,
  log: Log,
): Effect.Effect<SpoolHealth, never, Scope.Scope> =>
  Effect.gen(function* () {
    let healthy = true;
    // One pending failure is enough: the watcher probes until the store commits again.
    const failures = yield* Queue.dropping<void>(1);
    const probeUntilHealthy = Effect.sleep(PROBE_INTERVAL_MS).pipe(
      Effect.andThen(spool.probe()),
      Effect.retry(Schedule.forever),
    );
    yield* Effect.forkScoped(
      Effect.forever(
        Queue.take(failures).pipe(
          Effect.andThen(probeUntilHealthy),
          Effect.andThen(
            Effect.sync(() => {
              healthy = true;
              log("spool.healthy", {});
            }),
          ),
        ),
      ),
    );
    return {
      healthy: () => healthy,
      failed: () => {
        if (!healthy) return;
        healthy = false;
        log("spool.unhealthy", {});
        Queue.offerUnsafe(failures, undefined);
      },
    };
  });
