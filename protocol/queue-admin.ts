// Queue administration over NATS (`tern queue …`): requests to one node, or to every
// node of the cluster at once, and their replies. A queue is a destination domain, or
// `local:<user>` for a local mailbox. One message is named by the id of its `250` reply
// (all its entries), or one entry by `<messageId>.<n>`; every node is asked, and the node
// holding it acts.
import { Schema } from "effect";
import { AttemptRecord, Reply, WaitReason } from "./delivery.ts";

const Count = Schema.Int.check(Schema.isGreaterThanOrEqualTo(0));
const Limit = Schema.Int.check(Schema.isBetween({ minimum: 1, maximum: 10_000 }));
const QueueName = Schema.String.check(Schema.isMinLength(1));

/** A message id (as in "250 2.0.0 Ok: queued as ID"), or one of its entries' ids (`ID.n`). */
export const MessageOrEntryId = Schema.String.check(Schema.isPattern(/^[0-9A-Za-z]{1,64}(\.\d{1,9})?$/));

/** What an operator does to one message (or entry) by id. */
export const MessageAction = Schema.Literals([
  /** Due now (an entry on hold stays held: release it). */
  "retry",
  /** Failed now, with a DSN to the sender. */
  "bounce",
  /** Removed, without a DSN. */
  "delete",
  /** Never attempted until released; kept over restarts and drains. */
  "hold",
  /** Off hold, due now. */
  "release",
]);
export type MessageAction = typeof MessageAction.Type;

/**
 * What became of one entry: `done` (for a hold of an entry in flight: its transaction had
 * not begun, and will not); `held-after-attempt` (a hold given once an attempt's transaction
 * had begun: the hold is stored, and that attempt finishes); or nothing, because an attempt is in flight (its outcome is recorded first), it
 * is `held` (a retry; a hold of an entry held already), `not-held` (a release), or `due`
 * already (a retry).
 */
export const EntryActOutcome = Schema.Literals(["done", "held-after-attempt", "in-flight", "held", "not-held", "due"]);
export type EntryActOutcome = typeof EntryActOutcome.Type;

/** Which entries an operation applies to: a queue, a sender, or both. */
const Selection = {
  queue: Schema.optional(QueueName),
  /** Envelope sender; "" is the null sender. */
  sender: Schema.optional(Schema.String),
};

export const QueueAdminRequest = Schema.Union([
  /** Entries per queue and age bucket, like Postfix's qshape. */
  Schema.TaggedStruct("Shape", { limit: Schema.optional(Limit) }),
  Schema.TaggedStruct("List", { ...Selection, limit: Schema.optional(Limit), after: Schema.optional(Schema.String) }),
  /** A message's entries on the node (none: not here), or one entry. */
  Schema.TaggedStruct("Show", { id: Schema.String }),
  /** One message's entries (or one entry), by id; `reason` goes into a bounce's DSN. */
  Schema.TaggedStruct("Act", { action: MessageAction, id: MessageOrEntryId, reason: Schema.optional(Schema.String) }),
  Schema.TaggedStruct("Suspend", { queue: QueueName }),
  Schema.TaggedStruct("Resume", { queue: QueueName }),
  /** Every matching entry becomes due now (no selection: the whole queue). */
  Schema.TaggedStruct("Retry", Selection),
  /** Fails every matching recipient now, with a DSN to the sender. Needs a selection. */
  Schema.TaggedStruct("Bounce", { ...Selection, reason: Schema.optional(Schema.String) }),
  /** Removes matching entries without a DSN. Needs a selection. */
  Schema.TaggedStruct("Delete", Selection),
  /** Sites backed off after throttling replies (automatic back-off), per source address. */
  Schema.TaggedStruct("Sites", {}),
]);
export type QueueAdminRequest = typeof QueueAdminRequest.Type;

export const EntryView = Schema.Struct({
  id: Schema.String,
  queue: Schema.String,
  sender: Schema.String,
  recipients: Schema.Array(Schema.String),
  createdAt: Schema.Number,
  attempts: Count,
  nextAttemptAt: Schema.Number,
  reason: WaitReason,
  inFlight: Schema.Boolean,
  suspended: Schema.Boolean,
  /** On hold since (`tern queue hold`); `nextAttemptAt` means nothing then. */
  heldAt: Schema.optional(Schema.Number),
  /** The most recent attempts, oldest first (the spool's own records). */
  history: Schema.optional(Schema.Array(AttemptRecord)),
});
export type EntryView = typeof EntryView.Type;

/** A site slowed or paused for a source address on one node, and why. */
export const SiteBackoffView = Schema.Struct({
  /** The site: its MX host names, comma-separated. */
  site: Schema.String,
  /** The source address; absent for the system's default address. */
  source: Schema.optional(Schema.String),
  /** 1–5: each level halves the connections and doubles the gap between messages. */
  level: Count,
  /** Connections the site may use from this node now, and the least time between two messages. */
  connections: Count,
  gapMs: Schema.Number,
  /** Nothing is sent to it before this time. */
  pausedUntil: Schema.optional(Schema.Number),
  /** When it left normal, and when the next step back up (or the pause's end) is due. */
  since: Schema.Number,
  nextStepAt: Schema.optional(Schema.Number),
  /** The throttle rule the last throttling reply matched, and the reply. */
  rule: Schema.optional(Schema.String),
  reply: Schema.optional(Reply),
});
export type SiteBackoffView = typeof SiteBackoffView.Type;

const ShapeRow = Schema.Struct({ queue: Schema.String, entries: Count, buckets: Schema.Array(Count), suspended: Schema.Boolean });

export const QueueAdminReply = Schema.Union([
  Schema.TaggedStruct("Shape", {
    node: Schema.String,
    bucketsMinutes: Schema.Array(Schema.Number),
    total: Schema.Struct({ entries: Count, buckets: Schema.Array(Count) }),
    queues: Schema.Array(ShapeRow),
    queueCount: Count,
    /** Queues held back after trouble, with the time they are released. */
    held: Schema.Array(Schema.Struct({ queue: Schema.String, until: Schema.Number })),
    inFlight: Count,
    /** Sites backed off after throttling replies (absent from nodes that predate automatic back-off). */
    backedOff: Schema.optional(Schema.Array(SiteBackoffView)),
  }),
  Schema.TaggedStruct("List", { node: Schema.String, entries: Schema.Array(EntryView) }),
  /** The entries the id names on this node, oldest first: none when it holds nothing of it. */
  Schema.TaggedStruct("Show", { node: Schema.String, id: Schema.String, entries: Schema.Array(EntryView) }),
  /** What an action by id did to each entry the id names on this node (none: not here), and the DSNs a bounce queued. */
  Schema.TaggedStruct("Acted", {
    node: Schema.String,
    id: Schema.String,
    action: MessageAction,
    entries: Schema.Array(Schema.Struct({ id: Schema.String, outcome: EntryActOutcome })),
    notices: Count,
  }),
  Schema.TaggedStruct("Suspended", { node: Schema.String, queue: Schema.String, suspended: Schema.Boolean }),
  /** For retry, bounce and delete: entries changed, and entries passed over because an attempt was in flight. */
  Schema.TaggedStruct("Changed", { node: Schema.String, entries: Count, recipients: Count, skipped: Count, notices: Count }),
  Schema.TaggedStruct("Sites", { node: Schema.String, sites: Schema.Array(SiteBackoffView) }),
]);
export type QueueAdminReply = typeof QueueAdminReply.Type;

/** The request cannot be carried out (bad selection, store failure). */
export class QueueAdminError extends Schema.TaggedError<QueueAdminError>()("QueueAdminError", {
  node: Schema.String,
  detail: Schema.String,
}) {}
