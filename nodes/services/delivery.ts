// The outbound half of a node: the site actors (one per destination site, with the
// node's connection budget), the scheduler that takes due entries from the spool and
// records their outcomes, queue administration over NATS (`tern queue`), and the warm-up
// usage of cold source addresses with its view (`tern pools`). Both the site actors and the
// scheduler use the reputation figures (nodes/services/reputation.ts): sites and dispatch
// read its holds, and every recorded outcome is counted.
//
// Stop order follows from the graph: queue administration stops answering, then the
// scheduler stops taking work and lets attempts in flight be recorded, then the site
// actors close their connections; the spool outlives all three.
import { Clock, Context, Effect, Layer } from "effect";
import { loadRules } from "../../actors/delivery/classify.ts";
import { makeConnectionBudget } from "../../actors/delivery/connections.ts";
import { makeDispatch } from "../../actors/delivery/dispatch.ts";
import { domainMatcher } from "../../actors/common/domains.ts";
import { makeNotices } from "../../actors/delivery/notices.ts";
import { makeClassifier } from "../../actors/delivery/classify.ts";
import { backoffReporter, registerBackoffGauges, registerDeliveryGauges, registerWarmupGauges, reporter } from "../../actors/delivery/report.ts";
import { servePoolsStatus, warmupSeries } from "../../actors/delivery/pools-status.ts";
import { OTHER_PROVIDER } from "../../actors/delivery/providers.ts";
import { makeWarmupUsage, openUsageStore, type WarmupUsage } from "../../actors/delivery/warmup-usage.ts";
import { backoffEvent, outcomeEvents } from "../../actors/delivery/events.ts";
import { loadThrottleRules, makeThrottleMatcher, starterThrottleRules } from "../../actors/delivery/throttle-rules.ts";
import { routeOf } from "../../actors/queue/entry.ts";
import { labelsOf } from "../../actors/queue/events.ts";
import { makeScheduler, type Scheduler as SchedulerShape, type SchedulerHooks } from "../../actors/delivery/scheduler.ts";
import type { Reputation as ReputationShape } from "../../actors/delivery/reputation.ts";
import { makeSites, type Sites as SitesShape } from "../../actors/delivery/sites.ts";
import { serveQueueAdmin } from "../../actors/queue-admin/server.ts";
import { registerGauge } from "../metrics.ts";
import { Nats } from "./cluster.ts";
import { eventSourceOf } from "./events.ts";
import { ConfigError } from "../config.ts";
import { Config, Draining, Log, Metrics, Supervisor } from "./core.ts";
import { Users } from "./identity.ts";
import { Mailboxes } from "./mailboxes.ts";
import { Reputation } from "./reputation.ts";
import { Resolver } from "./resolver.ts";
import { SiteBudgets } from "./site-budgets.ts";
import { EventOutbox, Lmdb, outboxAppender, Spool } from "./storage.ts";
import { Suppressions } from "./suppression.ts";
import { checkingSuppressions } from "../../actors/delivery/suppressed.ts";
import { Feedback } from "./feedback.ts";

/** Every recorded outcome goes to metrics and logs, then to the reputation figures. */
const recordedBy =
  (report: SchedulerHooks["recorded"], count: ReputationShape["recorded"]): SchedulerHooks["recorded"] =>
  (entry, attempt, decision, notices, tookMs) => {
    report(entry, attempt, decision, notices, tookMs);
    count(entry, attempt, decision);
  };

/** Deliveries in flight get this long to finish (and be recorded) when the node stops. */
const STOP_GRACE_MS = 10_000;

export class Sites extends Context.Service<Sites, SitesShape>()("tern/Sites") {
  /** Fails with ConfigError when the throttle rules file cannot be read or has a bad rule. */
  static readonly layer = Layer.effect(
    Sites,
    Effect.gen(function* () {
      const { delivery, hostname, nodeId, smtp: { longLines } } = yield* Config;
      const { registry } = yield* Metrics;
      const log = yield* Log;
      const budget = makeConnectionBudget(delivery.maxConnections);
      registerGauge(registry, "tern_outbound_connections", "Outbound SMTP connections open (busy or idle)", budget.open);
      const rules = delivery.throttleRulesFile
        ? yield* loadThrottleRules(delivery.throttleRulesFile).pipe(Effect.mapError((e) => new ConfigError(`delivery.throttleRulesFile ${e.path}: ${e.detail}`)))
        : starterThrottleRules;
      // Back-off changes go to the event outbox in transactions of their own; the last ones
      // are on disk before the sites' scope lets LMDB close (its finalizer runs after the sites stop).
      const append = yield* outboxAppender("site.backoff.event.failed");
      const record = (change: Parameters<typeof backoffEvent>[1]) => append(backoffEvent(nodeId, change));
      const sites = yield* makeSites(
        {
          heloName: hostname,
          port: delivery.remotePort,
          connectTimeoutMs: delivery.connectTimeoutMs,
          greetingTimeoutMs: delivery.greetingTimeoutMs,
          socketTimeoutMs: delivery.socketTimeoutMs,
          messagesPerConnection: delivery.messagesPerConnection,
          maxRecipientsPerTransaction: delivery.maxRecipientsPerTransaction,
          foldLongLines: longLines === "encode",
          connectionsPerSite: delivery.connectionsPerSite,
          siteConnections: delivery.siteConnections,
          idleMs: delivery.connectionIdleMs,
          maxQueueWaitMs: delivery.maxQueueWaitMs,
          // The scheduler, released first, already waited for the attempts in flight; a job
          // still running here has no one left to record it, so finishing it would only send
          // the message twice (once now, once after restart).
          stopGraceMs: 0,
          throttle: {
            match: makeThrottleMatcher(rules),
            policy: { recoveryMs: delivery.throttleRecoveryMs, gapMs: delivery.throttleGapMs },
            observer: backoffReporter({ registry, log, record }),
          },
          holds: (yield* Reputation).holds,
        },
        budget,
        yield* Supervisor,
        (yield* SiteBudgets).leaseFor,
      );
      registerBackoffGauges(registry, sites.throttled);
      return sites;
    }),
  );
}

/** What each cold source address sent per provider this UTC day and hour, in the node's LMDB (actors/delivery/warmup-usage.ts). */
export class Warmup extends Context.Service<Warmup, WarmupUsage>()("tern/Warmup") {
  static readonly layer = Layer.effect(
    Warmup,
    Effect.gen(function* () {
      const { delivery } = yield* Config;
      const log = yield* Log;
      const clock = yield* Clock.Clock;
      const store = openUsageStore(yield* Lmdb, (error) => log("warmup.usage.write.failed", { error: String(error) }));
      const usage = makeWarmupUsage(store, clock.currentTimeMillisUnsafe());
      const providers = [...Object.keys(delivery.providers), OTHER_PROVIDER];
      registerWarmupGauges((yield* Metrics).registry, () => warmupSeries(delivery.pools, usage, providers, clock.currentTimeMillisUnsafe()));
      return usage;
    }),
  );
}

export class Scheduler extends Context.Service<Scheduler, SchedulerShape>()("tern/Scheduler") {
  /** Fails with ConfigError when the bounce rules file cannot be read or has a bad rule. */
  static readonly layer = Layer.effect(
    Scheduler,
    Effect.gen(function* () {
      const config = yield* Config;
      const { delivery, hostname } = config;
      const spool = yield* Spool;
      const users = yield* Users;
      const mailboxes = yield* Mailboxes;
      const { resolve } = yield* Resolver;
      const metrics = yield* Metrics;
      const log = yield* Log;
      const reputation = yield* Reputation;
      const events = eventSourceOf(config);
      const rules = delivery.bounceRulesFile
        ? yield* loadRules(delivery.bounceRulesFile).pipe(Effect.mapError((e) => new ConfigError(`delivery.bounceRulesFile ${e.path}: ${e.detail}`)))
        : [];
      const suppressions = yield* Suppressions;
      const scheduler = yield* makeScheduler({
        spool,
        // The suppression list is checked again before each attempt: a recipient listed since its message was queued is not sent to.
        dispatch: checkingSuppressions(
          makeDispatch({
            mailboxes,
            sites: yield* Sites,
            resolve,
            requireTls: domainMatcher(delivery.requireTls),
            pools: delivery.pools,
            warmup: { usage: yield* Warmup, providers: delivery.providers },
            envelopeSender: (yield* Feedback)?.envelopeSender,
            holds: reputation.holds,
          }),
          suppressions.check.lookup,
        ),
        maxInFlight: delivery.maxInFlight,
        maxInFlightPerQueue: delivery.maxInFlightPerQueue,
        pollMs: delivery.pollMs,
        holdMs: delivery.holdMs,
        policy: {
          maxAgeMs: delivery.maxAgeMs,
          delayNoticeMs: delivery.delayNoticeMs,
          retry: { baseMs: delivery.retryBaseMs, maxMs: delivery.retryMaxMs },
          classify: makeClassifier(rules),
        },
        notices: makeNotices(
          { hostname, routeOf: (address) => routeOf(address, users.exists), maxReturnBytes: delivery.dsnMaxReturnBytes, tenantOf: (message) => labelsOf(events, message.sender, message.attributes).tenant },
          spool,
        ),
        hooks: { recorded: recordedBy(reporter({ registry: metrics.registry, metrics, log, suppressed: suppressions.deliverySuppressed }), reputation.recorded), log },
        events: (entry, message, attempt, decision, dsns, now) => outcomeEvents(events, entry, message?.attributes, attempt, decision, dsns, now),
        graceMs: STOP_GRACE_MS,
      });
      registerGauge(metrics.registry, "tern_queue_in_flight", "Queue entries being delivered now", scheduler.inFlight);
      registerDeliveryGauges(metrics.registry, { spool, scheduler });
      return scheduler;
    }),
  );
}

/** `tern queue …` over NATS: answers until the node stops. */
export const QueueAdminLayer = Layer.effectDiscard(
  Effect.gen(function* () {
    const config = yield* Config;
    const { nc, subjects } = yield* Nats;
    const deps = { nodeId: config.nodeId, spool: yield* Spool, scheduler: yield* Scheduler, throttled: (yield* Sites).throttled, draining: (yield* Draining).isDraining, log: yield* Log };
    yield* serveQueueAdmin(nc, subjects, deps);
  }),
);

/** `tern pools` over NATS: answers until the node stops. */
export const PoolsStatusLayer = Layer.effectDiscard(
  Effect.gen(function* () {
    const config = yield* Config;
    const { nc, subjects } = yield* Nats;
    yield* servePoolsStatus(nc, subjects, { nodeId: config.nodeId, pools: config.delivery.pools, usage: yield* Warmup });
  }),
);
