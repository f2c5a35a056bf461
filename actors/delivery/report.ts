// What the outbound half reports for every committed outcome: metrics and log lines, one
// line per recipient and attempt (the accounting log). Events are not made here: they are
// committed with the outcome (actors/delivery/events.ts, written to the outbox by the
// spool), and keep the names of the events API; the log lines use the log's vocabulary
// (protocol/log.ts).
import { Counter, Gauge, type Histogram, type Registry } from "prom-client";
import { renderResult } from "../../protocol/delivery.ts";
import { backoffFields, reputationFields } from "./events.ts";
import type { Reputation, ReputationObserver } from "./reputation.ts";
import { RATE_KINDS, rateOf, WINDOW_NAMES } from "./reputation-window.ts";
import type { ThrottleObserver, ThrottleView } from "./site-throttle.ts";
import type { QueueEntry } from "../queue/entry.ts";
import type { Spool } from "../queue/spool.ts";
import type { Attempt } from "./attempt.ts";
import { dsnStatus, type Decision, type RecipientOutcome } from "./outcome.ts";
import type { Scheduler, SchedulerHooks } from "./scheduler.ts";
import type { WarmupSeries } from "./pools-status.ts";
import type { Log, LogFields } from "../../protocol/log.ts";

/** Where outcomes are reported once committed. */
export interface ReportDeps {
  readonly registry: Registry;
  readonly metrics: {
    readonly delivered: Counter<"route">;
    readonly deferred: Counter<"route" | "category">;
    readonly failed: Counter<"route" | "category">;
    /** Seconds per attempt, by `attemptOutcome`. */
    readonly deliveryDuration: Histogram<"outcome">;
  };
  readonly log: Log;
  /** A recipient the suppression list refused before the attempt (`tern_suppressed_total{where="delivery"}`). */
  readonly suppressed?: (() => void) | undefined;
}

/** Metrics and log lines for every recorded outcome, after it is committed. */
export const reporter = (deps: ReportDeps): SchedulerHooks["recorded"] => {
  const dsnQueued = new Counter({ name: "tern_dsn_queued_total", help: "Delivery status notifications queued, by action", labelNames: ["action"], registers: [deps.registry] });
  const dsnSuppressed = new Counter({ name: "tern_dsn_suppressed_total", help: "Notices not sent: null sender or Auto-Submitted mail", registers: [deps.registry] });
  const expired = new Counter({ name: "tern_recipients_expired_total", help: "Recipients failed because they were still deferred at the queue lifetime", labelNames: ["route", "category"], registers: [deps.registry] });
  for (const action of ["failed", "delayed", "delivered"]) dsnQueued.inc({ action }, 0);
  return (entry: QueueEntry, attempt, decision, notices, tookMs) => {
    const route = entry.route.kind;
    if (tookMs !== undefined) deps.metrics.deliveryDuration.observe({ outcome: attemptOutcome(decision) }, tookMs / 1000);
    for (const outcome of decision.outcomes) {
      if (outcome.result._tag === "Suppressed") {
        // Not a bounce: never sent, as if refused at submission.
        deps.suppressed?.();
        deps.log("recipient.suppressed", { queueId: entry.messageId, entry: entry.id, sender: entry.sender, recipient: outcome.recipient, where: "delivery", scope: outcome.result.scope, reason: outcome.result.reason });
        continue;
      }
      const category = outcome.category ?? "other";
      if (outcome.status === "delivered") deps.metrics.delivered.inc({ route });
      else if (outcome.status === "deferred") deps.metrics.deferred.inc({ route, category });
      else deps.metrics.failed.inc({ route, category });
      if (outcome.status === "expired") expired.inc({ route, category });
      deps.log(`recipient.${outcome.status}`, outcomeLine(entry, attempt, decision, outcome));
    }
    for (const dsn of notices.queued) {
      const action = String(dsn.attributes?.action);
      dsnQueued.inc({ action });
      // About the original message; the notice (its own queue id) goes to the original sender.
      deps.log("dsn.queued", { queueId: entry.messageId, entry: entry.id, notice: dsn.id, action, sender: entry.sender });
    }
    if (notices.suppressed) {
      dsnSuppressed.inc();
      deps.log("dsn.suppressed", { queueId: entry.messageId, entry: entry.id, sender: entry.sender });
    }
  };
};

/**
 * One recipient's outcome of one attempt, as the accounting log has it: the message and
 * recipient, where the attempt went (MX host and address, or the next hop as `server`),
 * what was answered, how long since the message was queued, and which attempt it was.
 */
export const outcomeLine = (entry: QueueEntry, attempt: Attempt, decision: Decision, outcome: RecipientOutcome): LogFields => ({
  queueId: entry.messageId,
  entry: entry.id,
  sender: entry.sender,
  recipient: outcome.recipient,
  ...(attempt.mx ? { mx: attempt.mx.host, ip: attempt.mx.ip } : {}),
  server: attempt.server,
  ...(attempt.source ? { source: attempt.source } : {}),
  reply: renderResult(outcome.result),
  dsn: dsnStatus(outcome),
  ...(outcome.category ? { category: outcome.category } : {}),
  attempt: entry.attempts + 1,
  delayMs: decision.record.at - entry.createdAt,
  ...(decision.record.requeued && outcome.status === "deferred" && decision.next
    ? { requeued: decision.record.requeued, nextAttemptAt: new Date(decision.next.nextAttemptAt).toISOString() }
    : {}),
});

/** What one attempt came to, as a class: recipients left waiting (deferred), else any failed for good (failed), else delivered. */
export const attemptOutcome = (decision: Decision): "delivered" | "deferred" | "failed" =>
  decision.next !== undefined ? "deferred" : decision.outcomes.every((o) => o.status === "delivered") ? "delivered" : "failed";

export const registerDeliveryGauges = (registry: Registry, sources: { spool: Spool; scheduler: Scheduler }) => {
  new Gauge({ name: "tern_queue_suspended", help: "Queues suspended by an operator", registers: [registry], collect() {
    this.set(sources.spool.suspended().length);
  } });
  new Gauge({ name: "tern_queue_held", help: "Queues held back after rate limiting or an unreachable destination", registers: [registry], collect() {
    this.set(sources.scheduler.holds().size); // holds() lists only holds still in force
  } });
};

/** Warm-up caps and usage of every cold source address, per provider and window ("day": this UTC day, "hour": this hour). */
export const registerWarmupGauges = (registry: Registry, series: () => ReadonlyArray<WarmupSeries>) => {
  const labelNames = ["source", "provider", "window"] as const;
  new Gauge({ name: "tern_warmup_cap", help: "Messages a cold source address may send to a provider in the window (none: no cap in that window)", labelNames, registers: [registry], collect() {
    this.reset();
    for (const s of series()) if (s.cap !== undefined) this.set({ source: s.source, provider: s.provider, window: s.window }, s.cap);
  } });
  new Gauge({ name: "tern_warmup_used", help: "Messages a cold source address sent to a provider in the window", labelNames, registers: [registry], collect() {
    this.reset();
    for (const s of series()) this.set({ source: s.source, provider: s.provider, window: s.window }, s.used);
  } });
};

/** A pause's end as the log writes times (ISO-8601, UTC); events keep the number. */
const isoPause = (pausedUntil: number | undefined) => (pausedUntil !== undefined ? { pausedUntil: new Date(pausedUntil).toISOString() } : {});

/**
 * Log lines and the counter of throttling replies for automatic back-off; each change is
 * also handed to `record` (the node writes it to the event outbox).
 */
export const backoffReporter = (deps: {
  readonly registry: Registry;
  readonly log: Log;
  readonly record: (change: Parameters<ThrottleObserver["changed"]>[0]) => void;
}): ThrottleObserver => {
  const replies = new Counter({ name: "tern_throttle_replies_total", help: "Replies a throttle rule matched (slow or pause), by rule", labelNames: ["rule"], registers: [deps.registry] });
  return {
    replied: (rule) => replies.inc({ rule }),
    changed: (change) => {
      const stepDown = change.change === "slowed" || change.change === "paused";
      deps.log(`site.backoff.${change.change}`, { ...(stepDown ? { level: "warn" } : {}), ...backoffFields(change), ...isoPause(change.pausedUntil), backoffLevel: change.level });
      deps.record(change);
    },
  };
};

/** The back-off level and pause of every site not at normal, per source address, read at each scrape. */
export const registerBackoffGauges = (registry: Registry, throttled: () => ReadonlyArray<ThrottleView>) => {
  const labels = (view: ThrottleView) => ({ site: view.site, source: view.source ?? "default" });
  new Gauge({ name: "tern_site_backoff_level", help: "Automatic back-off level of a site for a source address (0 normal, up to 5); sites at normal are not listed", labelNames: ["site", "source"], registers: [registry], collect() {
    this.reset();
    for (const view of throttled()) this.set(labels(view), view.level);
  } });
  new Gauge({ name: "tern_site_backoff_paused", help: "1 while a site is paused for a source address after a throttling reply", labelNames: ["site", "source"], registers: [registry], collect() {
    this.reset();
    for (const view of throttled()) if (view.pausedUntil !== undefined) this.set(labels(view), 1);
  } });
};

/**
 * Log lines and the counter of reputation threshold changes; each change is also handed to
 * `record` (the node writes it to the event outbox).
 */
export const reputationReporter = (deps: {
  readonly registry: Registry;
  readonly log: Log;
  readonly record: (change: Parameters<ReputationObserver["changed"]>[0]) => void;
}): ReputationObserver => {
  const changes = new Counter({ name: "tern_reputation_actions_total", help: "Reputation thresholds that slowed, paused, resumed or recovered a source address or sender domain", labelNames: ["dimension", "change"], registers: [deps.registry] });
  return {
    changed: (change) => {
      const stepDown = change.change === "slowed" || change.change === "paused";
      deps.log(`reputation.${change.change}`, { ...(stepDown ? { level: "warn" } : {}), ...reputationFields(change), ...isoPause(change.pausedUntil), ...(change.level !== undefined ? { backoffLevel: change.level } : {}) });
      changes.inc({ dimension: change.dimension, change: change.change });
      deps.record(change);
    },
    full: (limit) => deps.log("reputation.sender-domains.full", { level: "warn", limit, text: "further sender domains count together as \"other\"" }),
  };
};

/**
 * Reputation figures of every key with outcomes in a window, read at each scrape: counts by
 * outcome, bounces by category, rates, and the keys thresholds hold. Labels stay bounded:
 * source addresses come from the config, providers from the table, sender domains from a
 * table of at most `reputation.maxSenderDomains` (and "other").
 */
export const registerReputationGauges = (registry: Registry, reputation: Pick<Reputation, "figures" | "actions">) => {
  new Gauge({ name: "tern_reputation_messages", help: "Recipient outcomes in the window (delivered, bounced, deferred attempts, complaints) per source address, sender domain or provider", labelNames: ["dimension", "key", "outcome", "window"], registers: [registry], collect() {
    this.reset();
    for (const window of WINDOW_NAMES) {
      for (const { dimension, key, counts } of reputation.figures(window)) {
        for (const outcome of ["delivered", "bounced", "deferred", "complained"] as const) this.set({ dimension, key, outcome, window }, counts[outcome]);
      }
    }
  } });
  new Gauge({ name: "tern_reputation_bounces", help: "Bounces in the window by category, per source address, sender domain or provider (categories with none left out)", labelNames: ["dimension", "key", "category", "window"], registers: [registry], collect() {
    this.reset();
    for (const window of WINDOW_NAMES) {
      for (const { dimension, key, counts } of reputation.figures(window)) {
        for (const [category, n] of Object.entries(counts.bounces)) this.set({ dimension, key, category, window }, n);
      }
    }
  } });
  new Gauge({ name: "tern_reputation_rate", help: "Rates in the window: bounce = bounced/(delivered+bounced), complaint = complaints/delivered, deferral = deferred/(delivered+bounced+deferred)", labelNames: ["dimension", "key", "kind", "window"], registers: [registry], collect() {
    this.reset();
    for (const window of WINDOW_NAMES) {
      for (const { dimension, key, counts } of reputation.figures(window)) {
        for (const kind of RATE_KINDS) this.set({ dimension, key, kind, window }, rateOf(counts, kind));
      }
    }
  } });
  new Gauge({ name: "tern_reputation_held", help: "1 while a reputation threshold slows or pauses a source address or sender domain on this node", labelNames: ["dimension", "key", "action"], registers: [registry], collect() {
    this.reset();
    for (const view of reputation.actions()) this.set({ dimension: view.dimension, key: view.key, action: view.action }, 1);
  } });
};
