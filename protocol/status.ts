// Message status (`tern status ID`, the status API): where a message is and what happened
// to each of its recipients, with the attempts that got it there. Answered by the node
// that holds the message, from its spool (recipients still queued) and its record of
// finished recipients (kept a while after the spool let go of them). The attempt values
// are the delivery protocol's own (protocol/delivery.ts): a reply, a DNS failure, a
// local store… rendered as text only for people (`reply`).
import { Schema } from "effect";
import { BounceCategory, RecipientResult, RecipientStatus, ReportedStatus, reportedStatus, WaitReason } from "./delivery.ts";

const Count = Schema.Int.check(Schema.isGreaterThanOrEqualTo(0));

/** Message ids are what the SMTP `250 … queued as ID` reply and submit print: letters and digits. */
export const MessageId = Schema.String.check(Schema.isPattern(/^[0-9A-Za-z]{1,64}$/));

export const StatusRequest = Schema.Struct({ messageId: MessageId });
export type StatusRequest = typeof StatusRequest.Type;

/** Still in a queue of this node (see RecipientState). */
export const WaitingState = Schema.Literals(["queued", reportedStatus.deferred, "held"]);
export type WaitingState = typeof WaitingState.Type;

/** Out of this node's queue: an attempt's final status by its reported name, or an end no attempt decided. */
export const FinishedState = Schema.Literals([...ReportedStatus.pick(["delivered", "bounced", "expired"]).literals, "removed", "handed-off"]);
export type FinishedState = typeof FinishedState.Type;

/**
 * Where one recipient stands.
 * Waiting: `queued` (not attempted yet, or due again by an operator's retry), `deferred`
 * (a temporary failure, retried at `nextAttemptAt`), `held` (an operator suspended its
 * queue or held the message: no attempt until resumed or released).
 * Finished: `delivered` (the next hop took it), `bounced` (failed for good), `expired`
 * (still failing at the end of the queue lifetime), `removed` (deleted by an operator, no DSN).
 * Moved: `handed-off` (this node was drained and a peer, `handedOffTo`, committed the
 * recipient into its own queue; that node answers for it from then on).
 */
export const RecipientState = Schema.Literals([...WaitingState.literals, ...FinishedState.literals]);
export type RecipientState = typeof RecipientState.Type;

/** One attempt as one recipient saw it. */
export const RecipientAttempt = Schema.Struct({
  at: Schema.Number,
  /** The MX host and address that answered, or the last one tried. */
  mx: Schema.optional(Schema.String),
  ip: Schema.optional(Schema.String),
  /** The IP pool address the attempt left from (absent: the system's default address, or no MX reached). */
  source: Schema.optional(Schema.String),
  /** The next hop when it was not an MX: "dns", "mailbox/<user>", "admin". */
  via: Schema.optional(Schema.String),
  status: RecipientStatus,
  result: RecipientResult,
  /** `renderResult(result)`: "250 2.0.0 ok", "4.4.1 connection failed: …". */
  reply: Schema.String,
  category: Schema.optional(BounceCategory),
});
export type RecipientAttempt = typeof RecipientAttempt.Type;

export const RecipientView = Schema.Struct({
  recipient: Schema.String,
  /** The queue it waits (or waited) in: its domain, or `local:<user>`. */
  queue: Schema.String,
  /** The queue entry (`tern queue show ENTRY`). */
  entry: Schema.String,
  state: RecipientState,
  /** Attempts made for it, all of them (the history keeps the most recent). */
  attempts: Count,
  /** While waiting: when the next attempt is due (not while held). */
  nextAttemptAt: Schema.optional(Schema.Number),
  /** While waiting: why (received, temporary-reply, connection-failed, …). */
  reason: Schema.optional(WaitReason),
  /** An attempt for it is under way right now. */
  inFlight: Schema.optional(Schema.Boolean),
  /** When it finished (or was handed off). */
  finishedAt: Schema.optional(Schema.Number),
  /** The node that took it over when this one was drained (state `handed-off`). */
  handedOffTo: Schema.optional(Schema.String),
  /** The most recent attempts, oldest first (fewer when the whole status would not fit in one NATS message). */
  history: Schema.Array(RecipientAttempt),
});
export type RecipientView = typeof RecipientView.Type;

/** `pending` while any recipient waits; once none does, how they ended. */
export const MessageState = Schema.Literals(["pending", "delivered", "undelivered", "partial"]);
export type MessageState = typeof MessageState.Type;

export const StatusReply = Schema.Struct({
  message: Schema.Struct({
    id: Schema.String,
    /** The node holding the message (it accepted it). */
    node: Schema.String,
    /** Envelope sender; "" is the null sender. */
    sender: Schema.String,
    receivedAt: Schema.Number,
    size: Count,
    tenant: Schema.String,
    tags: Schema.optional(Schema.Array(Schema.String)),
    metadata: Schema.optional(Schema.Record(Schema.String, Schema.String)),
    state: MessageState,
  }),
  recipients: Schema.Array(RecipientView),
});
export type StatusReply = typeof StatusReply.Type;

/** A node's answer to the cluster-wide lookup: the status, when it holds the message. */
export const StatusLookupReply = Schema.Union([
  Schema.TaggedStruct("Found", { status: StatusReply }),
  Schema.TaggedStruct("NotHere", { node: Schema.String }),
]);
export type StatusLookupReply = typeof StatusLookupReply.Type;

/** No node that answered holds the message (never accepted, or finished longer ago than the nodes keep outcomes). */
export class NotFound extends Schema.TaggedError<NotFound>()("NotFound", {
  messageId: Schema.String,
  /** How many nodes answered that they do not hold it. */
  nodesAsked: Count,
}) {}

/** No node answered (NATS unreachable, or every node down): try again later. */
export class Unavailable extends Schema.TaggedError<Unavailable>()("Unavailable", {
  detail: Schema.String,
}) {}
