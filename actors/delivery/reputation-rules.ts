// Reputation thresholds: when a source address or a sender domain bounces, draws
// complaints or is deferred at too high a rate over a window, with enough messages to
// judge, the threshold slows it or pauses it (actors/delivery/reputation.ts applies that).
// One state per threshold and key, moved by `judge`; pure: the figures and the time come
// in as arguments.
//
//   clear    judged on the window's figures (after a pause, only on those recorded since
//            it ended, so one pause is not followed by another on the same evidence);
//   slowed   until every rate the threshold names is below `recoverRatio` of its limit
//            (hysteresis: a rate hovering at the limit does not flap). No minimum volume
//            for that: a window that empties recovers;
//   paused   until `until`; then clear again.
import type { HeldDimension } from "../../protocol/delivery.ts";
import { messagesOf, rateOf, RATE_KINDS, type Counts, type RateKind, type WindowName } from "./reputation-window.ts";

export type ThresholdAction = { readonly _tag: "slow"; readonly level: number } | { readonly _tag: "pause"; readonly ms: number };

export interface Threshold {
  /** Names the threshold in events, logs, holds and `tern reputation`. */
  readonly name: string;
  readonly dimension: HeldDimension;
  readonly window: WindowName;
  /** The rates it watches, each with its limit (a share: 0.05 is 5 %); at least one. */
  readonly limits: Readonly<Partial<Record<RateKind, number>>>;
  /** Final outcomes (delivered + bounced) the window must hold before the threshold acts. */
  readonly minMessages: number;
  readonly action: ThresholdAction;
  /** A slowed key recovers once every rate is below this share of its limit. */
  readonly recoverRatio: number;
}

/** Which rate crossed its limit, and the figures then. */
export interface Crossing {
  readonly kind: RateKind;
  readonly rate: number;
  readonly limit: number;
  readonly messages: number;
}

export type RuleState =
  /** `judgedFrom`: only outcomes recorded after this time count (0: the whole window). */
  | { readonly _tag: "clear"; readonly judgedFrom: number }
  | { readonly _tag: "slowed"; readonly since: number; readonly cause: Crossing }
  | { readonly _tag: "paused"; readonly since: number; readonly until: number; readonly cause: Crossing };

export const CLEAR: RuleState = { _tag: "clear", judgedFrom: 0 };

/** "slowed" and "paused" act; "recovered" ends a slow, "resumed" a pause. */
export type RuleChange = "slowed" | "paused" | "resumed" | "recovered";

export interface Judged {
  readonly state: RuleState;
  readonly change: RuleChange | undefined;
}

/** The first watched rate at or over its limit, once the figures hold at least `minMessages`. */
export const crossingOf = (threshold: Threshold, counts: Counts): Crossing | undefined => {
  const messages = messagesOf(counts);
  if (messages < threshold.minMessages) return undefined;
  for (const kind of RATE_KINDS) {
    const limit = threshold.limits[kind];
    if (limit === undefined) continue;
    const rate = rateOf(counts, kind);
    if (rate >= limit) return { kind, rate, limit, messages };
  }
  return undefined;
};

const recovered = (threshold: Threshold, counts: Counts): boolean =>
  RATE_KINDS.every((kind) => {
    const limit = threshold.limits[kind];
    return limit === undefined || rateOf(counts, kind) < limit * threshold.recoverRatio;
  });

/** Whether `judge` wants the figures since a time rather than the whole window's. */
export const judgedFrom = (state: RuleState): number => (state._tag === "clear" ? state.judgedFrom : 0);

/**
 * One step of a threshold for one key at `now`, on `counts`: the window's figures, or for
 * a clear state with `judgedFrom` those recorded since then.
 */
export const judge = (threshold: Threshold, state: RuleState, counts: Counts, now: number): Judged => {
  switch (state._tag) {
    case "clear": {
      const cause = crossingOf(threshold, counts);
      if (cause === undefined) return { state, change: undefined };
      const { action } = threshold;
      return action._tag === "slow"
        ? { state: { _tag: "slowed", since: now, cause }, change: "slowed" }
        : { state: { _tag: "paused", since: now, until: now + action.ms, cause }, change: "paused" };
    }
    case "slowed":
      return recovered(threshold, counts) ? { state: CLEAR, change: "recovered" } : { state, change: undefined };
    case "paused":
      return now >= state.until ? { state: { _tag: "clear", judgedFrom: state.until }, change: "resumed" } : { state, change: undefined };
  }
};

/** When a state changes without new figures: a pause's end. */
export const dueAt = (state: RuleState): number | undefined => (state._tag === "paused" ? state.until : undefined);

/** What holds a key, all its thresholds together: the latest pause, and the highest slow level. */
export interface KeyHold {
  /** 0: not paused. */
  readonly pausedUntil: number;
  /** 0: not slowed. */
  readonly level: number;
  /** The threshold behind the pause if there is one, else behind the slow. */
  readonly rule: string;
}

export const holdOf = (states: ReadonlyArray<{ readonly threshold: Threshold; readonly state: RuleState }>): KeyHold | undefined => {
  let pausedUntil = 0;
  let level = 0;
  let pauseRule: string | undefined;
  let slowRule: string | undefined;
  for (const { threshold, state } of states) {
    if (state._tag === "paused" && state.until > pausedUntil) {
      pausedUntil = state.until;
      pauseRule = threshold.name;
    }
    if (state._tag === "slowed" && threshold.action._tag === "slow" && threshold.action.level > level) {
      level = threshold.action.level;
      slowRule = threshold.name;
    }
  }
  const rule = pauseRule ?? slowRule;
  return rule === undefined ? undefined : { pausedUntil, level, rule };
};
