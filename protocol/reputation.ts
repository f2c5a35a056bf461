// `tern reputation`: each node's reputation figures (what receiving hosts said to the mail
// it sent) per source address, sender domain and destination provider over the last hour
// or day, and the thresholds holding a source address or sender domain now
// (actors/delivery/reputation.ts). Asked of every node at once, or of one by name; the
// command sums the nodes' figures.
import { Schema } from "effect";
import { BounceCategory, HeldDimension } from "./delivery.ts";

const Count = Schema.Int.check(Schema.isGreaterThanOrEqualTo(0));

export const ReputationWindow = Schema.Literals(["1h", "24h"]);
export type ReputationWindow = typeof ReputationWindow.Type;

export const ReputationDimension = Schema.Literals(["source", "sender_domain", "provider"]);
export type ReputationDimension = typeof ReputationDimension.Type;

export const RateKind = Schema.Literals(["bounce", "complaint", "deferral"]);

export const ReputationRequest = Schema.TaggedStruct("Reputation", {
  window: ReputationWindow,
  /** Only this dimension's figures; every dimension's when absent. */
  dimension: Schema.optional(ReputationDimension),
});
export type ReputationRequest = typeof ReputationRequest.Type;

/** One key's figures over the window: recipient outcomes, bounces by category, complaints. */
export const KeyFigures = Schema.Struct({
  dimension: ReputationDimension,
  /** A source address ("default": the system's own), a sender domain ("other": those past the tracked number), a provider ("other": none of the table). */
  key: Schema.String,
  delivered: Count,
  bounced: Count,
  deferred: Count,
  complained: Count,
  /** Bounce category → count (categories with none left out). */
  bounces: Schema.Record(Schema.String, Count),
});
export type KeyFigures = typeof KeyFigures.Type;

/** A threshold holding a source address or sender domain on the node now. */
export const ActionView = Schema.Struct({
  dimension: HeldDimension,
  key: Schema.String,
  rule: Schema.String,
  window: ReputationWindow,
  action: Schema.Literals(["slow", "pause"]),
  /** The back-off level of a slow. */
  level: Schema.optional(Schema.Int),
  since: Schema.Number,
  pausedUntil: Schema.optional(Schema.Number),
  /** The rate that crossed its limit, and the final outcomes in the window then. */
  kind: RateKind,
  rate: Schema.Number,
  limit: Schema.Number,
  messages: Count,
});
export type ActionView = typeof ActionView.Type;

export const ReputationReply = Schema.Struct({
  node: Schema.String,
  /** The node's time of the figures (ms since the epoch). */
  at: Schema.Number,
  window: ReputationWindow,
  figures: Schema.Array(KeyFigures),
  actions: Schema.Array(ActionView),
});
export type ReputationReply = typeof ReputationReply.Type;

/**
 * Node to node: an outcome learnt after the attempt (a complaint, an asynchronous bounce)
 * that reached another node, to be counted by the node that sent the message, for the keys
 * its delivery counted under. A key left out is not counted.
 */
export const ReputationCount = Schema.TaggedStruct("ReputationCount", {
  /**
   * The count's own id, the same on every try: a node that counted it already answers again
   * without counting (its answer was lost). Absent from older nodes: counted every time.
   */
  id: Schema.optional(Schema.String),
  source: Schema.optional(Schema.String),
  senderDomain: Schema.optional(Schema.String),
  provider: Schema.optional(Schema.String),
  outcome: Schema.Union([Schema.TaggedStruct("complained", {}), Schema.TaggedStruct("bounced", { category: BounceCategory })]),
});
export type ReputationCount = typeof ReputationCount.Type;

export const ReputationCounted = Schema.Struct({ node: Schema.String });
export type ReputationCounted = typeof ReputationCounted.Type;
