// Automatic back-off of one site for one source address, as a value: throttling replies
// (actors/delivery/throttle-rules.ts) step it down, quiet time steps it back up. Pure:
// the time comes in as an argument, so it is tested without clocks.
//
//   level 0        normal: the site's own connection limit, no gap between messages;
//   level n (1–5)  half the connections per level (never fewer than 1), and a gap of
//                  gapMs × 2^(n−1) between messages from this node;
//   paused         nothing is sent until `pausedUntil` (jobs are deferred unsent); a pause
//                  also steps the level down one, so sending resumes slowly.
//
// Replies to messages started before the last step down do not step again: a burst of
// 421s on every open connection is one signal, and the slower pace has not been tried
// yet. They do restart the quiet period. After `recoveryMs` without a throttling reply
// (counted from the end of a pause) the level goes up one step, and again after each
// further quiet period, until normal.
import type { Reply } from "../../protocol/delivery.ts";

export const MAX_LEVEL = 5;

export interface ThrottlePolicy {
  /** Quiet time without a throttling reply before the level goes up one step. */
  readonly recoveryMs: number;
  /** The gap between messages at level 1; it doubles with each further level. */
  readonly gapMs: number;
}

/** Why the site is backed off: the last throttling reply and the rule it matched. */
export interface ThrottleCause {
  readonly rule: string;
  readonly reply: Reply;
}

export interface SiteThrottle {
  readonly level: number;
  /** Nothing is sent before this time; 0 when not paused. */
  readonly pausedUntil: number;
  /** The last step down (slowed or paused): replies to messages started before it do not step again. */
  readonly steppedAt: number;
  /** Where the quiet period runs from: the last throttling reply, step, or the end of a pause. */
  readonly quietSince: number;
  /** When the site left normal. */
  readonly since: number;
  readonly cause: ThrottleCause | undefined;
}

export const NORMAL: SiteThrottle = { level: 0, pausedUntil: 0, steppedAt: 0, quietSince: 0, since: 0, cause: undefined };

/** What a step changed: "slowed" and "paused" step down, "resumed" ends a pause, "recovered" steps up. */
export type ThrottleChange = "slowed" | "paused" | "resumed" | "recovered";

export interface Stepped {
  readonly state: SiteThrottle;
  /** Undefined when nothing a user could see changed (a repeated reply, a step not yet due). */
  readonly change: ThrottleChange | undefined;
}

export type StepDown = { readonly _tag: "slow" } | { readonly _tag: "pause"; readonly ms: number };

export const isNormal = (state: SiteThrottle): boolean => state.level === 0 && state.pausedUntil === 0;

export const isPaused = (state: SiteThrottle, now: number): boolean => state.pausedUntil > now;

/** Connections the site may use at `level`: half per level, at least 1. */
export const connectionsAt = (level: number, base: number): number => Math.max(1, Math.floor(base / 2 ** level));

/** The gap between messages at `level`. */
export const gapAt = (level: number, policy: ThrottlePolicy): number => (level === 0 ? 0 : policy.gapMs * 2 ** (level - 1));

/**
 * A throttling reply to a message started at `startedAt`, matched by a rule that slows or
 * pauses. Only a reply to a message started at or after the last step down steps again.
 */
export const throttled = (state: SiteThrottle, step: StepDown, cause: ThrottleCause, startedAt: number, now: number): Stepped => {
  const quiet = { ...state, quietSince: Math.max(state.quietSince, now), cause };
  if (!isNormal(state) && startedAt < state.steppedAt) return { state: quiet, change: undefined };
  const since = isNormal(state) ? now : state.since;
  const level = Math.min(MAX_LEVEL, state.level + 1);
  if (step._tag === "pause") {
    return { state: { ...quiet, level, pausedUntil: Math.max(state.pausedUntil, now + step.ms), steppedAt: now, since }, change: "paused" };
  }
  if (level === state.level) return { state: quiet, change: undefined };
  return { state: { ...quiet, level, steppedAt: now, since }, change: "slowed" };
};

/** When the next step up (or the end of the pause) is due; undefined when normal. */
export const nextStepAt = (state: SiteThrottle, policy: ThrottlePolicy): number | undefined => {
  if (state.pausedUntil > 0) return state.pausedUntil;
  return state.level > 0 ? state.quietSince + policy.recoveryMs : undefined;
};

/**
 * At most one step of recovery due at `now`: the end of the pause, or one level up. Call
 * again while it changes something (a late caller catches up step by step, each step
 * timed from when it was due, not from when it was noticed).
 */
export const recover = (state: SiteThrottle, policy: ThrottlePolicy, now: number): Stepped => {
  const due = nextStepAt(state, policy);
  if (due === undefined || now < due) return { state, change: undefined };
  if (state.pausedUntil > 0) return { state: { ...state, pausedUntil: 0, quietSince: Math.max(state.quietSince, due) }, change: "resumed" };
  const level = state.level - 1;
  return { state: level === 0 ? NORMAL : { ...state, level, quietSince: due }, change: "recovered" };
};
