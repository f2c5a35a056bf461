// Events: the publisher that drains the event outbox to the cluster's JetStream stream
// (created or put right at start, and again whenever a publish fails), with its metrics.
// It is built before the actors and listeners, so it stops after them and gets a last
// round for the events their final outcomes wrote; it stops before NATS and LMDB close.
import { Clock, Effect, Layer } from "effect";
import { Counter } from "prom-client";
import { oldestAgeSeconds, startPublisher } from "../../actors/events/publisher.ts";
import { tenantOf } from "../../actors/common/tenants.ts";
import type { EventSource } from "../../actors/queue/events.ts";
import { openEventsStream } from "../../cluster/events-stream.ts";
import type { NodeConfig } from "../config.ts";
import { registerGauge } from "../metrics.ts";
import { Nats } from "./cluster.ts";
import { Config, Log, Metrics } from "./core.ts";
import { EventOutbox } from "./storage.ts";
import { Suppressions } from "./suppression.ts";

/** Who records events on this node, and the tenant of each sender. */
export const eventSourceOf = (config: NodeConfig): EventSource => ({
  node: config.nodeId,
  tenantOf: (sender) => tenantOf(sender, config.api.tenants),
});

export const EventPublisherLayer = Layer.effectDiscard(
  Effect.gen(function* () {
    const config = yield* Config;
    const log = yield* Log;
    const { nc, subjects } = yield* Nats;
    const outbox = yield* EventOutbox;
    const { registry } = yield* Metrics;
    const clock = yield* Clock.Clock;
    const counter = (name: string, help: string) => new Counter({ name, help, registers: [registry] });
    const published = counter("tern_events_published_total", "Events JetStream acknowledged (and removed from the outbox)");
    const duplicates = counter("tern_events_duplicates_total", "Events JetStream had already (published again after a lost acknowledgement): dropped by id");
    const failed = counter("tern_events_publish_failed_total", "Event publishes that failed (the events stay in the outbox and are retried)");
    registerGauge(registry, "tern_events_outbox_entries", "Events in the outbox, not yet acknowledged by JetStream", outbox.size);
    registerGauge(registry, "tern_events_outbox_oldest_age_seconds", "Age of the oldest event in the outbox (0 when empty)", () => oldestAgeSeconds(outbox, clock));
    yield* startPublisher({
      outbox,
      // Hard bounces and complaints add their recipient to the suppression list as they are published.
      sink: (yield* Suppressions).withAutoAdds(openEventsStream(nc, subjects, config.events, subjects.nodeInbox(config.nodeId))),
      batch: 256,
      // Capped low: events follow mail within seconds of JetStream answering again (a stream's
      // new leader elected, NATS back), and a retry costs one stream-info request.
      retryBaseMs: 250,
      retryMaxMs: 5_000,
      idlePollMs: 1_000,
      stopGraceMs: 2_000,
      observer: {
        ensured: (state) => (state === "present" ? undefined : log(`events.stream.${state}`, { stream: subjects.eventsStream })),
        published: (count, dropped) => {
          published.inc(count);
          duplicates.inc(dropped);
        },
        failed: (count) => failed.inc(count),
        stalled: (detail) => log("events.publish.stalled", { level: "warn", error: detail, waiting: outbox.size() }),
        resumed: (failures) => log("events.publish.resumed", { failures, waiting: outbox.size() }),
      },
    });
  }),
);
