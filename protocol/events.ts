// The events a node publishes on JetStream (stream `TERN_<cluster>_EVENTS`, subjects
// `tern.<cluster>.events.<tenant>.<type>.<domain>`, protocol/subjects.ts). Every event is
// written to the node's LMDB outbox in the same transaction as the outcome it reports
// (actors/queue/outbox.ts), so none is lost while NATS is away; its `id` is JetStream's
// deduplication id (Nats-Msg-Id), and a consumer may use it to drop the rare duplicate
// published again after the stream's duplicate window.
//
// One Schema per kind, told apart by `type`; the fields every event has come first.
import { Schema } from "effect";
import { BounceCategory, HeldDimension, RecipientResult, ReportedStatus, WaitReason } from "./delivery.ts";
import { SuppressionReason } from "./suppression.ts";

export const EventType = Schema.Literals(["accepted", ...ReportedStatus.literals, "dsn-queued", "complained", "suppressed", "node-up", "node-down", "site-backoff", "reputation-action"]);
export type EventType = typeof EventType.Type;

export const eventTypes: ReadonlyArray<EventType> = EventType.literals;

/** What every event carries. */
const common = {
  /** Unique and stable: `<node>.<boot>.<sequence>`; the JetStream deduplication id. */
  id: Schema.String,
  /** When the outcome was recorded, ms since the epoch. */
  time: Schema.Number,
  /** The node that recorded it. */
  node: Schema.String,
  /** The tenant owning the message's sender domain (`api.tenants`), else "default". */
  tenant: Schema.String,
  /** The message's queue id (as in the 250 reply and the logs). */
  msg: Schema.String,
  /** The queue entry: one per destination domain or local mailbox. */
  entry: Schema.String,
  /** The destination domain of the entry (lower case). */
  domain: Schema.String,
  /** Labels given at submit, carried into every event of the message. */
  tags: Schema.optional(Schema.Array(Schema.String)),
  metadata: Schema.optional(Schema.Record(Schema.String, Schema.String)),
};

/** A recipient was committed to the spool (one event per recipient). */
const AcceptedEvent = Schema.Struct({
  type: Schema.Literal("accepted"),
  ...common,
  rcpt: Schema.String,
  /** The envelope sender; "" is the null sender. */
  sender: Schema.String,
  /** Message size in bytes. */
  size: Schema.Number,
});
export type AcceptedEvent = typeof AcceptedEvent.Type;

/** What one recipient got from one attempt. "bounced" failed for good; "expired" was still deferred at the queue lifetime. */
export const RecipientEvent = Schema.Struct({
  type: ReportedStatus,
  ...common,
  rcpt: Schema.String,
  /** The envelope sender ("" is the null sender); the suppression list scopes its automatic adds by its domain. */
  sender: Schema.optional(Schema.String),
  route: Schema.Literals(["local", "remote"]),
  /** The value: the next hop's SMTP reply, or a tagged failure. */
  result: RecipientResult,
  /** RFC 3463 status of the result ("5.1.1"; "4.4.7" once expired), as the DSN reports it. */
  dsn: Schema.String,
  /** `renderResult(result)`, for people and grep. */
  reply: Schema.String,
  /** Failure class, on every event but "delivered". */
  category: Schema.optional(BounceCategory),
  /** "mx.host[192.0.2.1]", "dns", "mailbox/<user>", "admin". */
  server: Schema.String,
  mx: Schema.optional(Schema.String),
  ip: Schema.optional(Schema.String),
  /** Attempts made so far, this one included. */
  attempts: Schema.Int,
  /** Deferred: why the entry waits again, and when it is tried next. */
  requeued: Schema.optional(WaitReason),
  nextAttemptAt: Schema.optional(Schema.Number),
});
export type RecipientEvent = typeof RecipientEvent.Type;

/** A delivery status notification about this message was queued to its sender. */
const DsnQueuedEvent = Schema.Struct({
  type: Schema.Literal("dsn-queued"),
  ...common,
  /** The DSN's own queue id. */
  notice: Schema.String,
  /** RFC 3464 action: "failed" or "delayed". */
  action: Schema.String,
  /** Where the DSN goes: the message's envelope sender. */
  to: Schema.String,
});
export type DsnQueuedEvent = typeof DsnQueuedEvent.Type;

/**
 * A recipient complained about a message: a feedback report (ARF, RFC 5965) arrived at a
 * configured address or a VERP address and was matched to the message and recipient
 * (actors/feedback/). `entry` and `domain` are the recipient's.
 * Whoever records it fills `msg`, `entry` and `sender` from the original message when it
 * can be found (else "" and absent); the suppression list adds `rcpt` (protocol/suppression.ts).
 */
export const ComplainedEvent = Schema.Struct({
  type: Schema.Literal("complained"),
  ...common,
  rcpt: Schema.String,
  /** The original message's envelope sender, when known. */
  sender: Schema.optional(Schema.String),
  /** The report's Feedback-Type: "abuse", "fraud", "virus", "other". */
  feedbackType: Schema.String,
  /** Who sent the report: its User-Agent ("Yahoo!-Mail-Feedback/2.0"), and the address it came from. */
  userAgent: Schema.optional(Schema.String),
  reportedBy: Schema.optional(Schema.String),
  /** When the reporter received the original message (Arrival-Date, ms since the epoch), and from which IP (Source-IP). */
  arrivalDate: Schema.optional(Schema.Number),
  sourceIp: Schema.optional(Schema.String),
});
export type ComplainedEvent = typeof ComplainedEvent.Type;

/**
 * A recipient was refused because it is on the suppression list: at an API submit, at RCPT
 * TO of an authenticated or trusted-network SMTP client, or before a delivery attempt (its
 * queue entry then fails it, without a DSN). One event per refused recipient. `domain` is
 * the recipient's; `msg` and `entry` are given at delivery only (a refused submission
 * queued nothing for it).
 */
export const SuppressedEvent = Schema.Struct({
  type: Schema.Literal("suppressed"),
  ...common,
  // A refused submission queued nothing: no queue id or entry then.
  msg: Schema.optional(Schema.String),
  entry: Schema.optional(Schema.String),
  rcpt: Schema.String,
  /** The envelope sender; "" is the null sender. */
  sender: Schema.String,
  where: Schema.Literals(["api", "smtp", "delivery"]),
  /** The entry that matched: "global" or a sender domain, and why it is on the list. */
  scope: Schema.String,
  reason: SuppressionReason,
});
export type SuppressedEvent = typeof SuppressedEvent.Type;

export const TernEvent = Schema.Union([AcceptedEvent, RecipientEvent, DsnQueuedEvent, ComplainedEvent, SuppressedEvent]);
export type TernEvent = typeof TernEvent.Type;

/** The tenant token of cluster events (`tern.<cluster>.events.cluster.<type>.none`): reserved, no tenant may take it. */
export const clusterEventsTenant = "cluster";

/**
 * A node joined the cluster's member list or left it (cluster/membership.ts), on the same
 * stream as the mail events, under the reserved tenant `cluster` (so no tenant's
 * application sees it; operators read it with `tern events --type node-down`). Every node
 * that sees the change publishes it with the same id (`member.<node>.<startedAt>.<up|down>`),
 * so JetStream keeps one copy; `node` is the node whose copy was kept. Not about mail: not
 * part of `TernEvent`, which applications read.
 */
export const MemberEvent = Schema.Struct({
  type: Schema.Literals(["node-up", "node-down"]),
  id: Schema.String,
  time: Schema.Number,
  /** The node that saw the change. */
  node: Schema.String,
  tenant: Schema.Literal(clusterEventsTenant),
  domain: Schema.Literal(""),
  /** The node that joined or left, its version and when its process started. */
  member: Schema.String,
  version: Schema.String,
  startedAt: Schema.Number,
  /** node-down: "left" (stopped gracefully) or "expired" (no heartbeat within the bucket's TTL: killed or cut off). */
  reason: Schema.optional(Schema.Literals(["left", "expired"])),
});
export type MemberEvent = typeof MemberEvent.Type;

/**
 * Automatic back-off (actors/delivery/throttle.ts): a site's level changed for one source
 * address on one node. "slowed" and "paused" follow a throttling reply (`rule`, `reply`),
 * "resumed" ends a pause, "recovered" is one step back up after a quiet period (level 0:
 * normal again). Under the reserved tenant `cluster`, like node events: a site and a
 * source address carry every tenant's mail. Written to the outbox like mail events.
 */
export const SiteBackoffEvent = Schema.Struct({
  type: Schema.Literal("site-backoff"),
  id: Schema.String,
  time: Schema.Number,
  node: Schema.String,
  tenant: Schema.Literal(clusterEventsTenant),
  domain: Schema.Literal(""),
  /** The site: its MX host names, comma-separated. */
  site: Schema.String,
  /** The source address (an IP pool's); absent for the system's default address. */
  source: Schema.optional(Schema.String),
  change: Schema.Literals(["slowed", "paused", "resumed", "recovered"]),
  level: Schema.Int,
  previousLevel: Schema.Int,
  /** Connections the site may use from this node now, and the least time between two messages. */
  connections: Schema.Int,
  gapMs: Schema.Number,
  /** Paused until then (ms since the epoch). */
  pausedUntil: Schema.optional(Schema.Number),
  /** The throttle rule that matched the last throttling reply, and that reply as the host sent it. */
  rule: Schema.optional(Schema.String),
  reply: Schema.optional(Schema.String),
});
export type SiteBackoffEvent = typeof SiteBackoffEvent.Type;

/**
 * A reputation threshold (actors/delivery/reputation-rules.ts) acted on one node: it
 * slowed or paused a source address or a sender domain whose rate over the window crossed
 * the limit ("slowed", "paused"), or let it go ("recovered": the rates fell back under the
 * limit's recovery share; "resumed": the pause ended). Under the reserved tenant `cluster`
 * like site back-off (a tenant sees its own held messages as deferred events with
 * `requeued: "reputation-hold"`). Written to the outbox like mail events.
 */
export const ReputationActionEvent = Schema.Struct({
  type: Schema.Literal("reputation-action"),
  id: Schema.String,
  time: Schema.Number,
  node: Schema.String,
  tenant: Schema.Literal(clusterEventsTenant),
  domain: Schema.Literal(""),
  dimension: HeldDimension,
  /** The source address ("default": the system's own) or the sender domain. */
  key: Schema.String,
  /** The threshold's name. */
  rule: Schema.String,
  window: Schema.Literals(["1h", "24h"]),
  action: Schema.Literals(["slow", "pause"]),
  change: Schema.Literals(["slowed", "paused", "resumed", "recovered"]),
  /** The back-off level of a slow. */
  level: Schema.optional(Schema.Int),
  /** Paused until then (ms since the epoch). */
  pausedUntil: Schema.optional(Schema.Number),
  /** The rate watched: on slowed and paused the one that crossed, else the same rate now. */
  kind: Schema.Literals(["bounce", "complaint", "deferral"]),
  rate: Schema.Number,
  limit: Schema.Number,
  /** Final outcomes (delivered + bounced) the rate was taken over. */
  messages: Schema.Int,
});
export type ReputationActionEvent = typeof ReputationActionEvent.Type;

/** Whatever the events stream holds: mail events and cluster events. */
export const StreamEvent = Schema.Union([TernEvent, MemberEvent, SiteBackoffEvent, ReputationActionEvent]);
export type StreamEvent = typeof StreamEvent.Type;

/** An event before the outbox gives it its id. */
export type EventDraft = TernEvent extends infer E ? (E extends TernEvent ? Omit<E, "id"> : never) : never;

/** What the node's outbox holds and publishes: mail events, site back-off and reputation events. */
export type OutboxEvent = TernEvent | SiteBackoffEvent | ReputationActionEvent;
export type OutboxDraft = EventDraft | Omit<SiteBackoffEvent, "id"> | Omit<ReputationActionEvent, "id">;
