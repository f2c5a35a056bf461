// `tern pools`: every node's IP pools, their source addresses and, for addresses still
// warming up, the caps and what each sent this UTC day and hour per destination provider
// (actors/delivery/warmup.ts). Asked of every node at once, or of one by name.
import { Schema } from "effect";

const Count = Schema.Int.check(Schema.isGreaterThanOrEqualTo(0));

export const PoolsRequest = Schema.TaggedStruct("Pools", {});
export type PoolsRequest = typeof PoolsRequest.Type;

/** One window's figures; `cap` absent: none in this window (a schedule without hourly caps). */
export const WindowUsage = Schema.Struct({ cap: Schema.optional(Count), used: Count });

export const ProviderUsage = Schema.Struct({
  provider: Schema.String,
  /** This UTC day. */
  day: WindowUsage,
  /** This clock hour. */
  hour: WindowUsage,
});
export type ProviderUsage = typeof ProviderUsage.Type;

export const WarmupView = Schema.Struct({
  schedule: Schema.String,
  /** "YYYY-MM-DD": day 1. */
  since: Schema.String,
  /** Today's day of warm-up (below 1: not started yet, nothing is sent). */
  day: Schema.Int,
  /** Days of the curve: past the last one the address is warm. */
  days: Count,
  warm: Schema.Boolean,
  /** Today's caps per provider (while cold). */
  dailyCap: Schema.optional(Count),
  hourlyCap: Schema.optional(Count),
});
export type WarmupView = typeof WarmupView.Type;

export const AddressView = Schema.Struct({
  address: Schema.String,
  ehlo: Schema.String,
  weight: Schema.Number,
  /** Absent: a warm address without a warm-up schedule. */
  warmup: Schema.optional(WarmupView),
  /** A cold address: the providers it sent to today (every other provider: nothing used yet). */
  providers: Schema.Array(ProviderUsage),
});
export type AddressView = typeof AddressView.Type;

export const PoolView = Schema.Struct({
  pool: Schema.String,
  overflow: Schema.Literals(["warm", "wait"]),
  addresses: Schema.Array(AddressView),
});
export type PoolView = typeof PoolView.Type;

export const PoolsReply = Schema.Struct({
  node: Schema.String,
  /** The node's time of the figures (ms since the epoch). */
  at: Schema.Number,
  pools: Schema.Array(PoolView),
});
export type PoolsReply = typeof PoolsReply.Type;
