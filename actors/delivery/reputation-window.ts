// Sliding windows of delivery outcomes for reputation figures: the last hour in 60
// one-minute slots, the last day in 96 quarter-hour slots. A window covers its slots, the
// newest one filling now, so "1h" holds between 59 and 60 minutes of outcomes and "24h"
// between 23¾ and 24 hours.
//
// One window is a ring of slots, each a row of counts (delivered, deferred, complained,
// then bounced by category), plus the window's totals: adding bumps a slot and the totals,
// and moving to a new slot subtracts the slots that fall out. Reading a window costs one
// row, whatever its length. Memory is fixed per key: (60 + 96) × 12 four-byte counts
// (about 7.5 KB).
//
// No clock inside: the time comes in as an argument, so tests pass it.
import { BounceCategory } from "../../protocol/delivery.ts";

export type WindowName = "1h" | "24h";
export const WINDOW_NAMES: ReadonlyArray<WindowName> = ["1h", "24h"];

interface WindowSpec {
  readonly slotMs: number;
  readonly slots: number;
}

export const WINDOWS: Readonly<Record<WindowName, WindowSpec>> = {
  "1h": { slotMs: 60_000, slots: 60 },
  "24h": { slotMs: 15 * 60_000, slots: 96 },
};

/** What one window counts per outcome: delivered, deferred and complained, then a column per bounce category. */
const DELIVERED = 0;
const DEFERRED = 1;
const COMPLAINED = 2;
const BOUNCED = 3;
const CATEGORIES: ReadonlyArray<BounceCategory> = BounceCategory.literals;
const FIELDS = BOUNCED + CATEGORIES.length;
const categoryColumn = new Map(CATEGORIES.map((category, n) => [category, BOUNCED + n]));

/** An outcome as the counters see it. */
export type Outcome = { readonly _tag: "delivered" } | { readonly _tag: "deferred" } | { readonly _tag: "complained" } | { readonly _tag: "bounced"; readonly category: BounceCategory };

const columnOf = (outcome: Outcome): number => {
  switch (outcome._tag) {
    case "delivered":
      return DELIVERED;
    case "deferred":
      return DEFERRED;
    case "complained":
      return COMPLAINED;
    case "bounced":
      return categoryColumn.get(outcome.category) ?? categoryColumn.get("other")!;
  }
};

/** A window's figures. */
export interface Counts {
  readonly delivered: number;
  readonly deferred: number;
  readonly complained: number;
  /** Every bounce category together. */
  readonly bounced: number;
  /** Bounces by category; categories with none are left out. */
  readonly bounces: Readonly<Partial<Record<BounceCategory, number>>>;
}

export const NO_COUNTS: Counts = { delivered: 0, deferred: 0, complained: 0, bounced: 0, bounces: {} };

export interface Ring {
  readonly spec: WindowSpec;
  /** slots × FIELDS counts; slot n of time lives at row n mod slots. */
  readonly counts: Uint32Array;
  readonly totals: Float64Array;
  /** The newest slot number (time / slotMs) the ring holds; older rows hold the slots before it. */
  head: number;
}

export const makeRing = (name: WindowName): Ring => {
  const spec = WINDOWS[name];
  return { spec, counts: new Uint32Array(spec.slots * FIELDS), totals: new Float64Array(FIELDS), head: Number.NEGATIVE_INFINITY };
};

/** How far back a window reaches at most. */
export const windowMs = (name: WindowName): number => WINDOWS[name].slotMs * WINDOWS[name].slots;

const slotOf = (ring: Ring, now: number) => Math.floor(now / ring.spec.slotMs);

/** Moves the ring to `now`: slots that fell out of the window leave the totals. A clock that went back changes nothing. */
export const advance = (ring: Ring, now: number): void => {
  const slot = slotOf(ring, now);
  if (slot <= ring.head) return;
  const { slots } = ring.spec;
  // A ring idle for a whole window or more is cleared at once, not slot by slot.
  if (slot - ring.head >= slots) {
    ring.counts.fill(0);
    ring.totals.fill(0);
  } else {
    for (let s = ring.head + 1; s <= slot; s++) {
      const row = (s % slots) * FIELDS;
      for (let f = 0; f < FIELDS; f++) {
        ring.totals[f]! -= ring.counts[row + f]!;
        ring.counts[row + f] = 0;
      }
    }
  }
  ring.head = slot;
};

/** Counts `n` outcomes at `now` (one from a clock that went back lands in the newest slot). */
export const add = (ring: Ring, now: number, outcome: Outcome, n = 1): void => {
  advance(ring, now);
  const row = (ring.head % ring.spec.slots) * FIELDS;
  const column = columnOf(outcome);
  ring.counts[row + column]! += n;
  ring.totals[column]! += n;
};

const countsOf = (row: (field: number) => number): Counts => {
  const bounces: Partial<Record<BounceCategory, number>> = {};
  let bounced = 0;
  CATEGORIES.forEach((category, n) => {
    const count = row(BOUNCED + n);
    if (count > 0) {
      bounces[category] = count;
      bounced += count;
    }
  });
  return { delivered: row(DELIVERED), deferred: row(DEFERRED), complained: row(COMPLAINED), bounced, bounces };
};

/** The window's figures at `now`. */
export const totals = (ring: Ring, now: number): Counts => {
  advance(ring, now);
  return countsOf((field) => ring.totals[field]!);
};

/**
 * The figures of the window's slots that start at or after `since` (a threshold judging
 * only what came after it last acted): the slot `since` falls in is left out, so nothing
 * recorded before `since` counts.
 */
export const totalsSince = (ring: Ring, now: number, since: number): Counts => {
  advance(ring, now);
  const first = Math.max(slotOf(ring, since) + 1, ring.head - ring.spec.slots + 1);
  if (first > ring.head) return NO_COUNTS;
  if (first === ring.head - ring.spec.slots + 1) return totals(ring, now);
  const sums = new Float64Array(FIELDS);
  for (let s = first; s <= ring.head; s++) {
    const row = (s % ring.spec.slots) * FIELDS;
    for (let f = 0; f < FIELDS; f++) sums[f]! += ring.counts[row + f]!;
  }
  return countsOf((field) => sums[field]!);
};

/** The window holds nothing at `now`. */
export const isEmpty = (ring: Ring, now: number): boolean => {
  advance(ring, now);
  return ring.totals.every((count) => count === 0);
};

// ---- rates ----

/** Final outcomes: what a bounce rate and a threshold's minimum volume count. */
export const messagesOf = (counts: Counts): number => counts.delivered + counts.bounced;

export type RateKind = "bounce" | "complaint" | "deferral";
export const RATE_KINDS: ReadonlyArray<RateKind> = ["bounce", "complaint", "deferral"];

/**
 * bounce: bounced / (delivered + bounced), the share of final outcomes that failed;
 * complaint: complaints / delivered (as mailbox providers count a spam rate);
 * deferral: deferred attempts / every attempt (delivered + bounced + deferred).
 * 0 when nothing was counted.
 */
export const rateOf = (counts: Counts, kind: RateKind): number => {
  const ratio = (part: number, whole: number) => (whole === 0 ? 0 : part / whole);
  switch (kind) {
    case "bounce":
      return ratio(counts.bounced, counts.delivered + counts.bounced);
    case "complaint":
      return ratio(counts.complained, counts.delivered);
    case "deferral":
      return ratio(counts.deferred, counts.delivered + counts.bounced + counts.deferred);
  }
};

/** Sums figures (several nodes' for one key). */
export const sumCounts = (a: Counts, b: Counts): Counts => {
  const bounces: Partial<Record<BounceCategory, number>> = { ...a.bounces };
  for (const [category, n] of Object.entries(b.bounces) as Array<[BounceCategory, number]>) bounces[category] = (bounces[category] ?? 0) + n;
  return { delivered: a.delivered + b.delivered, deferred: a.deferred + b.deferred, complained: a.complained + b.complained, bounced: a.bounced + b.bounced, bounces };
};
