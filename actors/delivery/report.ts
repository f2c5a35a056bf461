// What the outbound half reports for every committed outcome: events on NATS, metrics
// and log lines. Text is made here, at the edge; the values travel in the events too.
import { Counter, Gauge, type Registry } from "prom-client";
import { renderResult, type RecipientEvent } from "../../protocol/delivery.ts";
import type { QueueEntry } from "../queue/entry.ts";
import type { Spool } from "../queue/spool.ts";
import { dsnStatus } from "./outcome.ts";
import type { Scheduler, SchedulerHooks } from "./scheduler.ts";

/** Where outcomes are reported once committed. */
export interface ReportDeps {
  readonly registry: Registry;
  readonly metrics: {
    readonly delivered: Counter<"route">;
    readonly deferred: Counter<"route" | "category">;
    readonly failed: Counter<"route" | "category">;
  };
  readonly publish: (kind: string, event: Record<string, unknown>) => void;
  readonly log: (event: string, fields: Record<string, unknown>) => void;
}

/** Events on NATS, metrics and log lines for every recorded outcome, after it is committed. */
export const reporter = (deps: ReportDeps): SchedulerHooks["recorded"] => {
  const dsnQueued = new Counter({ name: "tern_dsn_queued_total", help: "Delivery status notifications queued, by action", labelNames: ["action"], registers: [deps.registry] });
  const dsnSuppressed = new Counter({ name: "tern_dsn_suppressed_total", help: "Notices not sent: null sender or Auto-Submitted mail", registers: [deps.registry] });
  const expired = new Counter({ name: "tern_recipients_expired_total", help: "Recipients failed because they were still deferred at the queue lifetime", labelNames: ["route", "category"], registers: [deps.registry] });
  return (entry: QueueEntry, attempt, decision, notices) => {
    const route = entry.route.kind;
    for (const outcome of decision.outcomes) {
      const category = outcome.category ?? "other";
      if (outcome.status === "delivered") deps.metrics.delivered.inc({ route });
      else if (outcome.status === "deferred") deps.metrics.deferred.inc({ route, category });
      else deps.metrics.failed.inc({ route, category });
      if (outcome.status === "expired") expired.inc({ route, category });
      // Text is made here, at the edge: `reply` for people and grep, the value itself in `result`.
      const fields = {
        msg: entry.messageId,
        entry: entry.id,
        dsn: dsnStatus(outcome),
        reply: renderResult(outcome.result),
        ...(outcome.category ? { category: outcome.category } : {}),
        server: attempt.server,
        ...(attempt.mx ? { mx: attempt.mx.host, ip: attempt.mx.ip } : {}),
        attempts: entry.attempts + 1,
        ...(decision.record.requeued && outcome.status === "deferred" && decision.next ? { requeued: decision.record.requeued, nextAttemptAt: decision.next.nextAttemptAt } : {}),
      };
      const event: RecipientEvent = { ...fields, recipient: outcome.recipient, route, status: outcome.status, result: outcome.result };
      deps.publish(outcome.status, event);
      deps.log(`recipient.${outcome.status}`, { ...fields, rcpt: outcome.recipient });
    }
    for (const dsn of notices.queued) {
      const action = String(dsn.attributes?.action);
      dsnQueued.inc({ action });
      deps.publish("dsn", { msg: dsn.id, for: entry.messageId, entry: entry.id, action, to: entry.sender });
      deps.log("dsn.queued", { msg: dsn.id, for: entry.messageId, entry: entry.id, action, rcpt: entry.sender });
    }
    if (notices.suppressed) {
      dsnSuppressed.inc();
      deps.log("dsn.suppressed", { msg: entry.messageId, entry: entry.id, from: entry.sender });
    }
  };
};

export const registerDeliveryGauges = (registry: Registry, sources: { spool: Spool; scheduler: Scheduler }) => {
  new Gauge({ name: "tern_queue_suspended", help: "Queues suspended by an operator", registers: [registry], collect() {
    this.set(sources.spool.suspended().length);
  } });
  new Gauge({ name: "tern_queue_held", help: "Queues held back after rate limiting or an unreachable destination", registers: [registry], collect() {
    this.set(sources.scheduler.holds().size); // holds() lists only holds still in force
  } });
};
