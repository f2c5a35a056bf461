// Queue administration over NATS (`tern queue …`): requests to one node, or to every
// node of the cluster at once, and their replies. A queue is a destination domain, or
// `local:<user>` for a local mailbox.
import { Schema } from "effect";
import { AttemptRecord, Reply, WaitReason } from "./delivery.ts";

const Count = Schema.Int.check(Schema.isGreaterThanOrEqualTo(0));
const Limit = Schema.Int.check(Schema.isBetween({ minimum: 1, maximum: 10_000 }));
const QueueName = Schema.String.check(Schema.isMinLength(1));

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
  Schema.TaggedStruct("Show", { id: Schema.String }),
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
  Schema.TaggedStruct("Show", { node: Schema.String, entry: Schema.NullOr(EntryView) }),
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
