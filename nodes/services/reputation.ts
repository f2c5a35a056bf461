// Reputation figures of the node (actors/delivery/reputation.ts): counted from every
// recorded outcome, with the thresholds that slow or pause a source address or a sender
// domain (the site actors and dispatch read its holds), their events and log lines, the
// metrics, `tern reputation` over NATS, and the counts other nodes' feedback intakes send
// for mail this node sent (actors/delivery/reputation-count.ts).
//
// Built before the site actors and the scheduler, which use it, so it outlives them: its
// timer stops, and its last events are written, after the last outcome is recorded.
import { Context, Effect, Layer } from "effect";
import { poolAddressesOf } from "../../actors/delivery/pools.ts";
import { reputationEvent } from "../../actors/delivery/events.ts";
import { registerReputationGauges, reputationReporter } from "../../actors/delivery/report.ts";
import { makeReputation, type Reputation as ReputationShape } from "../../actors/delivery/reputation.ts";
import { serveReputationCounts } from "../../actors/delivery/reputation-count.ts";
import { serveReputationStatus } from "../../actors/delivery/reputation-status.ts";
import { Nats } from "./cluster.ts";
import { Config, Log, Metrics } from "./core.ts";
import { outboxAppender } from "./storage.ts";

export class Reputation extends Context.Service<Reputation, ReputationShape>()("tern/Reputation") {
  static readonly layer = Layer.effect(
    Reputation,
    Effect.gen(function* () {
      const { nodeId, delivery, reputation: config } = yield* Config;
      const { registry } = yield* Metrics;
      const log = yield* Log;
      const append = yield* outboxAppender("reputation.event.failed");
      const reputation = yield* makeReputation({
        maxSenderDomains: config.maxSenderDomains,
        thresholds: config.thresholds,
        providers: delivery.providers,
        gapMs: delivery.throttleGapMs,
        observer: reputationReporter({ registry, log, record: (change) => append(reputationEvent(nodeId, change)) }),
      });
      registerReputationGauges(registry, reputation);
      return reputation;
    }),
  );
}

/** `tern reputation` over NATS, and other nodes' counts: answers until the node stops. */
export const ReputationStatusLayer = Layer.effectDiscard(
  Effect.gen(function* () {
    const { nodeId, delivery } = yield* Config;
    const { nc, subjects } = yield* Nats;
    const reputation = yield* Reputation;
    yield* serveReputationStatus(nc, subjects, { nodeId, reputation });
    yield* serveReputationCounts(nc, subjects, { nodeId, reputation, known: { sources: poolAddressesOf(delivery.pools), providers: delivery.providers } });
  }),
);
