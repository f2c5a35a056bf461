// Cluster-wide site budgets: a receiving site's connection and message-rate limits, held
// by the whole cluster as one sender. One live node owns each budget (consistent hashing
// over the members); nodes with mail for the site ask it for a lease, a slice of the
// budget valid for `ttlMs`, and ask again before it runs out (subject
// `tern.<cluster>.budget.<owner>`).
import { Schema } from "effect";

const Count = Schema.Int.check(Schema.isGreaterThanOrEqualTo(0));
const Positive = Schema.Int.check(Schema.isGreaterThan(0));

/** A budget's limits; a limit left out does not apply. */
export const BudgetLimits = Schema.Struct({
  /** Connections open at once, the whole cluster together. */
  connections: Schema.optional(Positive),
  messagesPerSecond: Schema.optional(Positive),
  messagesPerHour: Schema.optional(Positive),
  /** New connections opened per minute, the whole cluster together. */
  connectionsPerMinute: Schema.optional(Positive),
  /**
   * Messages sent over one connection before it is closed and a new one opened. Kept by
   * each connection on its own (it needs no owner), but configured with the budget's sites.
   */
  messagesPerConnection: Schema.optional(Positive),
});
export type BudgetLimits = typeof BudgetLimits.Type;

export const LeaseAsk = Schema.Struct({
  /** The budget's name: the host pattern of its configuration (".mx.example.com"). */
  budget: Schema.String,
  holder: Schema.String,
  /**
   * This ask's id. An ask whose answer did not come is sent again as it was, id included,
   * and an owner that granted it already answers with the same grant instead of counting
   * it again. Absent from older nodes: every ask is granted anew.
   */
  askId: Schema.optional(Schema.String),
  /**
   * The limits as the holder's configuration says. Every node should say the same; where
   * they differ, the owner applies the strictest among the live holders.
   */
  limits: BudgetLimits,
  /** Connections the holder could use now (its backlog, within its own caps). */
  wantConnections: Count,
  /** Connections its current lease grants (from this owner or from the one before). */
  heldConnections: Count,
  /** Connections it has open now, busy or idle. */
  openConnections: Count,
  /** Messages it would send in the next moments. */
  wantMessages: Count,
  /**
   * Messages its previous lease allowed that it did not send: given back with this ask (the
   * holder stops using them), so the owner counts them as not sent.
   */
  unusedMessages: Count,
  /** New connections it would open in the next moments (with `connectionsPerMinute`). Absent from older nodes: 0. */
  wantOpens: Schema.optional(Count),
  /** New connections its previous lease allowed that it did not open, given back like `unusedMessages`. */
  unusedOpens: Schema.optional(Count),
});
export type LeaseAsk = typeof LeaseAsk.Type;

export const LeaseGrant = Schema.Struct({
  /** Connections the holder may keep open; absent: no connection limit. */
  connections: Schema.optional(Count),
  /** Messages it may send before the lease ends (granted anew with each lease); absent: no rate limit. */
  messages: Schema.optional(Count),
  /** New connections it may open before the lease ends; absent: no limit on opening. */
  opens: Schema.optional(Count),
  /** The lease ends this long after the holder sent its ask, unless renewed. */
  ttlMs: Positive,
});
export type LeaseGrant = typeof LeaseGrant.Type;

/** The asked node does not own this budget (by its view of the members); ask the owner named, if any. */
export class NotBudgetOwner extends Schema.TaggedError<NotBudgetOwner>()("NotBudgetOwner", {
  budget: Schema.String,
  owner: Schema.optional(Schema.String),
}) {}
