// The events of a recorded attempt, built before the transaction that records it (the
// spool writes them to the outbox in that transaction). The log lines of the same outcomes
// are made in ./report.ts, in the log's own vocabulary. Pure: the node, the time and the tenant resolution come in as arguments.
import { renderResult, replyLine, reportedStatus } from "../../protocol/delivery.ts";
import { clusterEventsTenant, type EventDraft, type OutboxDraft, type RecipientEvent } from "../../protocol/events.ts";
import { domainOfRoute, labelsOf, type EventSource } from "../queue/events.ts";
import type { QueueEntry } from "../queue/entry.ts";
import type { GeneratedMessage } from "../queue/spool.ts";
import type { Attempt } from "./attempt.ts";
import { dsnStatus, type Decision, type RecipientOutcome } from "./outcome.ts";
import type { ActionEvent } from "./reputation.ts";
import type { ThrottleEvent } from "./site-throttle.ts";

type Attributes = Readonly<Record<string, unknown>> | undefined;

/** What events say about one recipient's outcome (text made here, at the edge). */
export const outcomeFields = (entry: QueueEntry, attempt: Attempt, decision: Decision, outcome: RecipientOutcome) => ({
  msg: entry.messageId,
  entry: entry.id,
  dsn: dsnStatus(outcome),
  reply: renderResult(outcome.result),
  ...(outcome.category ? { category: outcome.category } : {}),
  server: attempt.server,
  ...(attempt.mx ? { mx: attempt.mx.host, ip: attempt.mx.ip } : {}),
  attempts: entry.attempts + 1,
  ...(decision.record.requeued && outcome.status === "deferred" && decision.next
    ? { requeued: decision.record.requeued, nextAttemptAt: decision.next.nextAttemptAt }
    : {}),
});

/**
 * The events of one recorded attempt: one per recipient (delivered, deferred, bounced,
 * expired; "suppressed" for one the suppression list refused before the attempt), then
 * one "dsn-queued" per DSN the outcome queues.
 */
export const outcomeEvents = (
  source: EventSource,
  entry: QueueEntry,
  attributes: Attributes,
  attempt: Attempt,
  decision: Decision,
  dsns: ReadonlyArray<GeneratedMessage>,
  now: number,
): ReadonlyArray<EventDraft> => {
  const common = { time: now, node: source.node, ...labelsOf(source, entry.sender, attributes), domain: domainOfRoute(entry.route) };
  const recipients = decision.outcomes.map(
    (outcome): EventDraft =>
      outcome.result._tag === "Suppressed"
        ? {
            type: "suppressed",
            ...common,
            msg: entry.messageId,
            entry: entry.id,
            rcpt: outcome.recipient,
            sender: entry.sender,
            where: "delivery",
            scope: outcome.result.scope,
            reason: outcome.result.reason,
          }
        : {
            type: reportedStatus[outcome.status],
            ...common,
            ...outcomeFields(entry, attempt, decision, outcome),
            rcpt: outcome.recipient,
            sender: entry.sender,
            route: entry.route.kind,
            result: outcome.result,
          },
  );
  const notices = dsns.map(
    (dsn): EventDraft => ({
      type: "dsn-queued",
      ...common,
      msg: entry.messageId,
      entry: entry.id,
      notice: dsn.id,
      action: String(dsn.attributes?.action),
      to: entry.sender,
    }),
  );
  return [...recipients, ...notices];
};

/** What events and log lines say about a site's back-off change (the level apart: log lines use `level` for severity). */
export const backoffFields = (change: ThrottleEvent) => ({
  site: change.site,
  ...(change.source !== undefined ? { source: change.source } : {}),
  change: change.change,
  previousLevel: change.previousLevel,
  connections: change.connections,
  gapMs: change.gapMs,
  ...(change.pausedUntil !== undefined ? { pausedUntil: change.pausedUntil } : {}),
  ...(change.rule !== undefined ? { rule: change.rule } : {}),
  ...(change.reply !== undefined ? { reply: replyLine(change.reply) } : {}),
});

/** The "site-backoff" event of a change, under the reserved tenant `cluster`. */
export const backoffEvent = (node: string, change: ThrottleEvent): OutboxDraft => ({
  type: "site-backoff",
  time: change.at,
  node,
  tenant: clusterEventsTenant,
  domain: "",
  ...backoffFields(change),
  level: change.level,
});

/** What events and log lines say about a reputation threshold's change (the level apart, as for back-off). */
export const reputationFields = (change: ActionEvent) => ({
  dimension: change.dimension,
  key: change.key,
  rule: change.rule,
  window: change.window,
  action: change.action,
  change: change.change,
  ...(change.pausedUntil !== undefined ? { pausedUntil: change.pausedUntil } : {}),
  kind: change.kind,
  rate: change.rate,
  limit: change.limit,
  messages: change.messages,
});

/** The "reputation-action" event of a change, under the reserved tenant `cluster`. */
export const reputationEvent = (node: string, change: ActionEvent): OutboxDraft => ({
  type: "reputation-action",
  time: change.at,
  node,
  tenant: clusterEventsTenant,
  domain: "",
  ...reputationFields(change),
  ...(change.level !== undefined ? { level: change.level } : {}),
});
