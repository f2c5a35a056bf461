// Reputation figures of this node: what receiving hosts said to the mail it sent, per
// source address, per sender domain and per destination provider, over the last hour and
// the last day (actors/delivery/reputation-window.ts), and the thresholds that slow or
// pause a source address or a sender domain when its rates go bad
// (actors/delivery/reputation-rules.ts), applied through `holds` (reputation-holds.ts).
//
// What counts: each recipient outcome of an attempt at a remote destination, once the
// outcome is committed (the scheduler's `recorded` hook). Delivered is delivered; a
// permanent failure is a bounce in its category; a temporary one is a deferral (an
// expired recipient too: its last attempt got a temporary answer). Attempts this node did
// not make (a warm-up cap, a paused site or a reputation hold, a site queue too long, an
// internal failure) and an operator's bounce say nothing about reputation and are not
// counted; neither is local delivery. A DNS failure reached no host from no source
// address: it counts for the sender domain only. What comes back after the attempt comes in
// from the feedback intake (actors/feedback/intake.ts) once its event is on disk, for mail
// this node sent (actors/delivery/reputation-count.ts): a complaint by `recordComplaint`, a
// bounce by `recordOutcome`.
//
// Bounded: source addresses come from the config, providers from the provider table (and
// "other"); sender domains are tracked by name up to `maxSenderDomains`, in the order they
// are first seen, and the rest together as "other" (never held) until a tracked one has
// been idle a whole day and is forgotten. Figures live in memory: a restart starts them
// (and the thresholds' states) afresh.
//
// Thresholds are judged on this node's own figures, after every recorded attempt for the
// keys it touched and by a timer for pauses that end and windows that slide.
import { Clock, Effect, Queue, type Scope } from "effect";
import { type HeldDimension, type RecipientResult, type ReputationHold } from "../../protocol/delivery.ts";
import { domainOf } from "../common/domains.ts";
import type { QueueEntry } from "../queue/entry.ts";
import type { Attempt } from "./attempt.ts";
import type { Decision, RecipientOutcome } from "./outcome.ts";
import { providerOfHosts, type ProviderTable } from "./providers.ts";
import { sourceKeyOf, type ReputationHolds, type SourceHold } from "./reputation-holds.ts";
import { CLEAR, dueAt, holdOf, judge, judgedFrom, type Crossing, type KeyHold, type RuleChange, type RuleState, type Threshold } from "./reputation-rules.ts";
import { add, isEmpty, makeRing, messagesOf, NO_COUNTS, rateOf, totals, totalsSince, WINDOW_NAMES, windowMs, type Counts, type Outcome, type Ring, type WindowName } from "./reputation-window.ts";

export type Dimension = "source" | "sender_domain" | "provider";
export const DIMENSIONS: ReadonlyArray<Dimension> = ["source", "sender_domain", "provider"];

/** Sender domains past `maxSenderDomains` count together under this key. */
export const OTHER_SENDER_DOMAIN = "other";

/** What one outcome is about; a key left out is not counted. */
export interface OutcomeKeys {
  readonly source?: string | undefined;
  readonly senderDomain?: string | undefined;
  readonly provider?: string | undefined;
}

/** One key's figures in one window. */
export interface KeyFigures {
  readonly dimension: Dimension;
  readonly key: string;
  readonly counts: Counts;
}

/** A threshold that holds a key now. */
export interface ActionView {
  readonly dimension: HeldDimension;
  readonly key: string;
  readonly rule: string;
  readonly window: WindowName;
  readonly action: "slow" | "pause";
  /** The back-off level of a slow. */
  readonly level: number | undefined;
  readonly since: number;
  readonly pausedUntil: number | undefined;
  /** What crossed the limit when the threshold acted. */
  readonly cause: Crossing;
}

/** A threshold's state changed for a key. */
export interface ActionEvent extends Omit<ActionView, "since" | "cause"> {
  readonly change: RuleChange;
  readonly at: number;
  /** slowed, paused: the crossing; resumed, recovered: the same rate over the window now. */
  readonly kind: Crossing["kind"];
  readonly rate: number;
  readonly limit: number;
  readonly messages: number;
}

export interface ReputationObserver {
  readonly changed: (event: ActionEvent) => void;
  /** The sender domain table is full: a new domain counts under "other" (called once each time it fills). */
  readonly full: (limit: number) => void;
}

export interface ReputationOptions {
  readonly maxSenderDomains: number;
  readonly thresholds: ReadonlyArray<Threshold>;
  readonly providers: ProviderTable;
  /** The least time between two messages of a sender domain slowed to level n is gapMs × 2^(n−1) (as a site's, throttle.ts). */
  readonly gapMs: number;
  readonly observer?: ReputationObserver | undefined;
}

export interface Reputation {
  /** Counts a committed attempt's outcomes and judges the keys it touched (the scheduler's `recorded` hook). */
  readonly recorded: (entry: QueueEntry, attempt: Attempt, decision: Decision) => void;
  /** Counts one complaint (a feedback report) about mail of a sender domain, from a source address, to a provider. */
  readonly recordComplaint: (about: OutcomeKeys) => void;
  /** Counts one outcome learnt after the attempt (an asynchronous bounce) for the keys given. */
  readonly recordOutcome: (about: OutcomeKeys, outcome: Outcome) => void;
  readonly holds: ReputationHolds;
  /** Every key with figures in the window, optionally of one dimension, in key order. */
  readonly figures: (window: WindowName, dimension?: Dimension) => ReadonlyArray<KeyFigures>;
  /** Thresholds holding a key now. */
  readonly actions: () => ReadonlyArray<ActionView>;
}

/** Results of attempts this node did not make, or whose failure it decided itself: no receiver's verdict. */
const NOT_JUDGED: ReadonlySet<RecipientResult["_tag"]> = new Set(["WarmupCap", "BackedOff", "ReputationHold", "OperatorHold", "QueueWaitExceeded", "Internal", "Returned", "Suppressed"]);

/** What an outcome counts as, or undefined when it is not counted. */
export const countedAs = (outcome: RecipientOutcome): Outcome | undefined => {
  if (NOT_JUDGED.has(outcome.result._tag)) return undefined;
  switch (outcome.status) {
    case "delivered":
      return { _tag: "delivered" };
    case "failed":
      return { _tag: "bounced", category: outcome.category ?? "other" };
    case "deferred":
    case "expired":
      return { _tag: "deferred" };
  }
};

const isDns = (result: RecipientResult) => result._tag === "DnsTemporary" || result._tag === "DnsPermanent";

/** The longest the timer sleeps without a due pause end: windows slide by the minute. */
const SWEEP_MS = 60_000;
/** A slowed sender domain's messages are given turns at most this far ahead; later ones come back then and ask again. */
const MAX_TURN_AHEAD_MS = 15 * 60_000;

interface Counters {
  readonly windows: Readonly<Record<WindowName, Ring>>;
}

const makeCounters = (): Counters => ({ windows: { "1h": makeRing("1h"), "24h": makeRing("24h") } });

const gapAt = (level: number, gapMs: number) => gapMs * 2 ** (level - 1);

/** Scoped: the timer is a fiber of the scope. */
export const makeReputation = (options: ReputationOptions): Effect.Effect<Reputation, never, Scope.Scope> =>
  Effect.gen(function* () {
    const clock = yield* Clock.Clock;
    const { thresholds, observer } = options;
    const counters: Record<Dimension, Map<string, Counters>> = { source: new Map(), sender_domain: new Map(), provider: new Map() };
    /** Threshold states other than plain clear, by `<threshold index>|<key>`. */
    const states = new Map<string, { readonly index: number; readonly key: string; state: RuleState }>();
    const held: Record<HeldDimension, Map<string, KeyHold>> = { source: new Map(), sender_domain: new Map() };
    /** A slowed sender domain's pace: when the next message may go, and the last turn given out. */
    const paces = new Map<string, { nextAt: number; lastTurn: number }>();
    const sourceListeners = new Set<(sourceKey: string) => void>();
    const wakes = yield* Queue.dropping<void>(1);
    let senderTableFull = false;
    const providerOfHost = new Map<string, string>();

    const providerOf = (host: string): string => {
      let provider = providerOfHost.get(host);
      if (provider === undefined) {
        if (providerOfHost.size >= 10_000) providerOfHost.clear();
        providerOfHost.set(host, (provider = providerOfHosts([host], options.providers)));
      }
      return provider;
    };

    /** The counters of a key, created on first use; a sender domain past the limit gets "other"'s. */
    const countersOf = (dimension: Dimension, key: string): { readonly key: string; readonly counters: Counters } => {
      const table = counters[dimension];
      const kept = table.get(key);
      if (kept) return { key, counters: kept };
      if (dimension === "sender_domain" && key !== OTHER_SENDER_DOMAIN && table.size - (table.has(OTHER_SENDER_DOMAIN) ? 1 : 0) >= options.maxSenderDomains) {
        if (!senderTableFull) {
          senderTableFull = true;
          observer?.full(options.maxSenderDomains);
        }
        return countersOf(dimension, OTHER_SENDER_DOMAIN);
      }
      const created = makeCounters();
      table.set(key, created);
      return { key, counters: created };
    };

    const count = (dimension: Dimension, key: string, outcome: Outcome, now: number): string => {
      const target = countersOf(dimension, key);
      for (const name of WINDOW_NAMES) add(target.counters.windows[name], now, outcome);
      return target.key;
    };

    const figuresFor = (dimension: Dimension, key: string, window: WindowName, now: number, since: number): Counts => {
      const ring = counters[dimension].get(key)?.windows[window];
      if (ring === undefined) return NO_COUNTS;
      return since > 0 ? totalsSince(ring, now, since) : totals(ring, now);
    };

    // ---- thresholds ----

    const stateId = (index: number, key: string) => `${index}|${key}`;

    const setHold = (dimension: HeldDimension, key: string) => {
      const states_ = thresholds.flatMap((threshold, index) => (threshold.dimension === dimension ? [{ threshold, state: states.get(stateId(index, key))?.state ?? CLEAR }] : []));
      const hold = holdOf(states_);
      const before = held[dimension].get(key);
      if (hold === undefined) held[dimension].delete(key);
      else held[dimension].set(key, hold);
      if (dimension === "sender_domain" && (hold === undefined || hold.level === 0)) paces.delete(key);
      const same = before?.pausedUntil === hold?.pausedUntil && before?.level === hold?.level && before?.rule === hold?.rule;
      if (dimension === "source" && !same) for (const listener of [...sourceListeners]) listener(key);
    };

    const emit = (threshold: Threshold, key: string, previous: RuleState, next: RuleState, change: RuleChange, now: number) => {
      const acting = next._tag === "clear" ? previous : next;
      const cause = acting._tag === "clear" ? undefined : acting.cause;
      const counts = figuresFor(threshold.dimension, key, threshold.window, now, 0);
      const kind = cause?.kind ?? "bounce";
      const stepDown = change === "slowed" || change === "paused";
      observer?.changed({
        dimension: threshold.dimension,
        key,
        rule: threshold.name,
        window: threshold.window,
        action: threshold.action._tag,
        level: threshold.action._tag === "slow" ? threshold.action.level : undefined,
        pausedUntil: next._tag === "paused" ? next.until : undefined,
        change,
        at: now,
        kind,
        rate: stepDown && cause ? cause.rate : rateOf(counts, kind),
        limit: cause?.limit ?? threshold.limits[kind] ?? 0,
        messages: stepDown && cause ? cause.messages : messagesOf(counts),
      });
    };

    /** Judges one threshold for one key at `now`; true when its state changed. */
    const judgeOne = (index: number, key: string, now: number): boolean => {
      const threshold = thresholds[index]!;
      const id = stateId(index, key);
      const previous = states.get(id)?.state ?? CLEAR;
      const counts = figuresFor(threshold.dimension, key, threshold.window, now, judgedFrom(previous));
      const { state, change } = judge(threshold, previous, counts, now);
      if (change === undefined) return false;
      // A clear state that judges the whole window again (its window no longer reaches back before the pause) is forgotten.
      if (state._tag === "clear" && state.judgedFrom === 0) states.delete(id);
      else states.set(id, { index, key, state });
      emit(threshold, key, previous, state, change, now);
      return true;
    };

    /** Judges every threshold of the key's dimension; the key's hold follows. */
    const judgeKey = (dimension: HeldDimension, key: string, now: number) => {
      if (dimension === "sender_domain" && key === OTHER_SENDER_DOMAIN) return; // many domains: never held together
      let changed = false;
      thresholds.forEach((threshold, index) => {
        if (threshold.dimension === dimension) changed = judgeOne(index, key, now) || changed;
      });
      if (changed) {
        setHold(dimension, key);
        Queue.offerUnsafe(wakes, undefined);
      }
    };

    const judgeTouched = (touched: OutcomeKeys, now: number) => {
      if (thresholds.length === 0) return;
      if (touched.source !== undefined) judgeKey("source", touched.source, now);
      if (touched.senderDomain !== undefined) judgeKey("sender_domain", touched.senderDomain, now);
    };

    /** Counts one outcome for each key given; returns the keys as counted (a sender domain may become "other"). */
    const countFor = (about: OutcomeKeys, outcome: Outcome, now: number): OutcomeKeys => ({
      source: about.source === undefined ? undefined : count("source", about.source, outcome, now),
      senderDomain: about.senderDomain === undefined ? undefined : count("sender_domain", about.senderDomain.toLowerCase(), outcome, now),
      provider: about.provider === undefined ? undefined : count("provider", about.provider, outcome, now),
    });

    const recorded = (entry: QueueEntry, attempt: Attempt, decision: Decision) => {
      if (entry.route.kind !== "remote") return;
      const senderDomain = entry.sender === "" ? undefined : domainOf(entry.sender);
      const reached = attempt.mx !== undefined;
      const keys: OutcomeKeys = {
        senderDomain,
        source: reached ? sourceKeyOf(attempt.source) : undefined,
        provider: reached ? providerOf(attempt.mx!.host) : undefined,
      };
      const now = clock.currentTimeMillisUnsafe();
      let touched: OutcomeKeys | undefined;
      for (const outcome of decision.outcomes) {
        const counted = countedAs(outcome);
        if (counted === undefined) continue;
        touched = countFor(isDns(outcome.result) ? { senderDomain } : keys, counted, now);
      }
      if (touched !== undefined) judgeTouched(touched, now);
    };

    const recordOutcome = (about: OutcomeKeys, outcome: Outcome) => {
      const now = clock.currentTimeMillisUnsafe();
      judgeTouched(countFor(about, outcome, now), now);
    };

    // ---- the timer: pause ends, windows that slide, idle keys forgotten ----

    const sweep = (now: number) => {
      for (const [id, { index, key, state }] of [...states]) {
        const threshold = thresholds[index]!;
        // Cleared after a pause, and the window no longer reaches back before it: the whole window is judged again.
        if (state._tag === "clear" && now - windowMs(threshold.window) >= state.judgedFrom) states.delete(id);
        else if (judgeOne(index, key, now)) setHold(threshold.dimension, key);
      }
      for (const dimension of DIMENSIONS) {
        for (const [key, kept] of counters[dimension]) {
          if (!isEmpty(kept.windows["24h"], now)) continue;
          const judged = thresholds.some((threshold, index) => threshold.dimension === dimension && states.has(stateId(index, key)));
          if (judged) continue;
          counters[dimension].delete(key);
          if (dimension === "sender_domain") senderTableFull = false;
        }
      }
    };

    const tick = Effect.suspend(() => {
      const now = clock.currentTimeMillisUnsafe();
      sweep(now);
      let earliest = now + SWEEP_MS;
      for (const { state } of states.values()) earliest = Math.min(earliest, dueAt(state) ?? earliest);
      return Effect.asVoid(Queue.take(wakes).pipe(Effect.timeoutOption(Math.max(1, earliest - now))));
    });
    yield* Effect.forkScoped(Effect.forever(tick));

    // ---- what delivery asks ----

    const sender = (senderDomain: string, now: number): ReputationHold | undefined => {
      const key = senderDomain.toLowerCase();
      const hold = held.sender_domain.get(key);
      if (hold === undefined) return undefined;
      const base = { _tag: "ReputationHold", dimension: "sender_domain", key, rule: hold.rule } as const;
      if (hold.pausedUntil > now) return { ...base, action: "pause", until: hold.pausedUntil };
      if (hold.level === 0) return undefined;
      // Slowed: one message per gap. A message that comes when the pace allows goes; any
      // other is given the next free turn (within MAX_TURN_AHEAD_MS) and comes back then.
      const gap = gapAt(hold.level, options.gapMs);
      const pace = paces.get(key) ?? { nextAt: 0, lastTurn: 0 };
      paces.set(key, pace);
      if (now >= pace.nextAt) {
        pace.nextAt = now + gap;
        return undefined;
      }
      const turn = Math.max(pace.nextAt, pace.lastTurn + gap);
      if (turn > now + MAX_TURN_AHEAD_MS) return { ...base, action: "slow", until: now + MAX_TURN_AHEAD_MS };
      pace.lastTurn = turn;
      return { ...base, action: "slow", until: turn };
    };

    const holds: ReputationHolds = {
      source: (address): SourceHold | undefined => held.source.get(sourceKeyOf(address)),
      sender,
      onSourceChange: (listener) => {
        sourceListeners.add(listener);
        return () => void sourceListeners.delete(listener);
      },
    };

    return {
      recorded,
      recordComplaint: (about) => recordOutcome(about, { _tag: "complained" }),
      recordOutcome,
      holds,
      figures: (window, dimension) => {
        const now = clock.currentTimeMillisUnsafe();
        return (dimension ? [dimension] : DIMENSIONS).flatMap((d) =>
          [...counters[d].entries()]
            .filter(([, kept]) => !isEmpty(kept.windows[window], now))
            .map(([key, kept]): KeyFigures => ({ dimension: d, key, counts: totals(kept.windows[window], now) }))
            .sort((a, b) => a.key.localeCompare(b.key)),
        );
      },
      actions: () =>
        [...states.values()].flatMap(({ index, key, state }): ActionView[] => {
          if (state._tag === "clear") return [];
          const threshold = thresholds[index]!;
          return [
            {
              dimension: threshold.dimension,
              key,
              rule: threshold.name,
              window: threshold.window,
              action: threshold.action._tag,
              level: threshold.action._tag === "slow" ? threshold.action.level : undefined,
              since: state.since,
              pausedUntil: state._tag === "paused" ? state.until : undefined,
              cause: state.cause,
            },
          ];
        }),
    } satisfies Reputation;
  });
