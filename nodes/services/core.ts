// The services every other part of a node reads: its configuration, its log, its
// metrics registry and the supervisor that watches its actors.
import { Context, Deferred, Effect, Layer, Schema } from "effect";
import { makeSupervisor, type Supervisor as SupervisorShape } from "../../actors/runtime/supervisor.ts";
import { ConfigError, type NodeConfig } from "../config.ts";
import type { Log as LogShape } from "../../protocol/log.ts";
import { makeNodeMetrics, type NodeMetrics } from "../metrics.ts";
import { NatsUnavailable } from "../../cluster/nats.ts";

/** A part of the node could not start (a port taken, a file unreadable). */
export class StartFailure extends Schema.TaggedError<StartFailure>()("StartFailure", {
  part: Schema.String,
  detail: Schema.String,
}) {}

/** Why a node did not start. ConfigError and NatsUnavailable keep their own classes: the CLI exits 78 for them. */
export type NodeStartError = ConfigError | NatsUnavailable | StartFailure;

/** Runs a start-up promise; a rejection becomes a typed start error naming the part. */
export const starting = <A>(part: string, start: () => Promise<A>): Effect.Effect<A, NodeStartError> =>
  Effect.tryPromise({
    try: start,
    catch: (error) =>
      error instanceof ConfigError || error instanceof NatsUnavailable
        ? error
        : new StartFailure({ part, detail: error instanceof Error ? error.message : String(error) }),
  });

export class Config extends Context.Service<Config, NodeConfig>()("tern/Config") {
  static readonly layer = (config: NodeConfig) => Layer.succeed(Config, config);
}

/** The node's log; `runNode` provides it (JSON lines on stdout, `nodes/log.ts`), so it outlives the graph and logs the stop. */
export class Log extends Context.Service<Log, LogShape>()("tern/Log") {}

export class Metrics extends Context.Service<Metrics, NodeMetrics>()("tern/Metrics") {
  static readonly layer = Layer.effect(Metrics, Config.useSync((config) => makeNodeMetrics(config.nodeId)));
}

/** Actor restarts go to the log and `tern_actor_restarts_total`; escalations make `/readyz` fail. */
export class Supervisor extends Context.Service<Supervisor, SupervisorShape>()("tern/Supervisor") {
  static readonly layer = Layer.effect(
    Supervisor,
    Effect.gen(function* () {
      const log = yield* Log;
      const metrics = yield* Metrics;
      return makeSupervisor({
        onRestart: (actor, reason) => {
          metrics.actorRestarts.inc({ actor: actor.split("/")[0] });
          log("actor.restarted", { level: "warn", actor, reason });
        },
        onEscalate: (actor, escalation) =>
          log("actor.escalated", { level: "error", actor, reason: escalation.reason, since: new Date(escalation.since).toISOString(), nextRebuildAt: new Date(escalation.nextRebuildAt).toISOString() }),
        onRecover: (actor) => log("actor.recovered", { actor }),
      });
    }),
  );
}

/**
 * Whether the node drains (`tern node drain`, nodes/services/drain.ts), read by what takes
 * mail (SMTP, the API, peers' hand-offs) and what reports readiness; `finished` completes
 * once the drained queue is empty, and `runNode` then stops the node.
 */
export class Draining extends Context.Service<
  Draining,
  { readonly isDraining: () => boolean; readonly begin: () => void; readonly finished: Deferred.Deferred<void> }
>()("tern/Draining") {
  static readonly layer = Layer.effect(
    Draining,
    Effect.map(Deferred.make<void>(), (finished) => {
      let draining = false;
      return { isDraining: () => draining, begin: () => void (draining = true), finished };
    }),
  );
}
