// The back-off state of this node's sites, one per site and source address (the site
// actors' key), kept apart from the actors: an actor stopped for idleness while its site is
// paused must not forget the pause. Attempts are read as they finish: a reply that a
// throttle rule matches steps the site down (actors/delivery/throttle.ts); a timer fiber
// steps it back up when due, so levels, events and metrics recover without traffic.
//
// Reading an attempt costs a loop over its results and no allocation while every reply is
// below 400; a site with normal state is never looked at again.
import { Clock, Effect, Queue, type Scope } from "effect";
import type { RecipientResult, Reply } from "../../protocol/delivery.ts";
import type { Attempt } from "./attempt.ts";
import type { ThrottleMatcher } from "./throttle-rules.ts";
import { connectionsAt, gapAt, isNormal, NORMAL, nextStepAt, recover, throttled, type SiteThrottle, type Stepped, type ThrottleChange, type ThrottlePolicy } from "./throttle.ts";

/** One backed-off site as `tern queue sites`, events and logs show it. */
export interface ThrottleView {
  /** The site: its MX host names. */
  readonly site: string;
  /** The source address; undefined for the system's default. */
  readonly source: string | undefined;
  readonly level: number;
  /** Connections the site may use now (its own limit at level 0). */
  readonly connections: number;
  /** Least time between two messages to the site from this node. */
  readonly gapMs: number;
  /** Paused until then; undefined when not paused. */
  readonly pausedUntil: number | undefined;
  readonly since: number;
  /** When the next step up (or the pause's end) is due. */
  readonly nextStepAt: number | undefined;
  /** The rule that matched the last throttling reply, and that reply. */
  readonly rule: string | undefined;
  readonly reply: Reply | undefined;
}

export interface ThrottleEvent extends ThrottleView {
  readonly change: ThrottleChange;
  readonly previousLevel: number;
  readonly at: number;
}

export interface ThrottleObserver {
  /** A reply matched a rule that slows or pauses (whether or not it stepped the site down). */
  readonly replied: (rule: string) => void;
  readonly changed: (event: ThrottleEvent) => void;
}

export interface ThrottleOptions {
  readonly match: ThrottleMatcher;
  readonly policy: ThrottlePolicy;
  readonly observer?: ThrottleObserver | undefined;
}

/** The back-off of one site and source, shared by the site's successive actors. */
export interface Holder {
  state: SiteThrottle;
  readonly key: string;
  readonly site: string;
  readonly source: string | undefined;
  readonly baseConnections: number;
  /** An actor of this key is running (else a holder back to normal is forgotten). */
  live: boolean;
  /** Set by the running actor: after every change (close idle connections, wake workers waiting for a connection). */
  onChange: ((change: ThrottleChange) => void) | undefined;
}

export interface Throttles {
  /** The key's holder, created normal when none is kept; the actor now running owns it. */
  readonly holderFor: (key: string, site: string, source: string | undefined, baseConnections: number) => Holder;
  /** Reads a finished attempt of a message started at `startedAt`; steps the site down when a rule says so. */
  readonly observe: (holder: Holder, attempt: Attempt, startedAt: number) => void;
  /** Applies recovery due by now (the timer may not have run yet). */
  readonly catchUp: (holder: Holder) => void;
  /** The key's actor stopped: a holder back to normal is forgotten. */
  readonly release: (key: string) => void;
  /** Every site not at normal, for `tern queue sites`. */
  readonly list: () => ReadonlyArray<ThrottleView>;
}

const replyOf = (result: RecipientResult): Reply | undefined => {
  switch (result._tag) {
    case "Reply":
      return result;
    case "ConnectionFailed":
    case "ProtocolError":
    case "TlsFailed":
      return result.reply;
    default:
      return undefined;
  }
};

export const viewOf = (holder: Holder, policy: ThrottlePolicy): ThrottleView => {
  const { state } = holder;
  return {
    site: holder.site,
    source: holder.source,
    level: state.level,
    connections: connectionsAt(state.level, holder.baseConnections),
    gapMs: gapAt(state.level, policy),
    pausedUntil: state.pausedUntil > 0 ? state.pausedUntil : undefined,
    since: state.since,
    nextStepAt: nextStepAt(state, policy),
    rule: state.cause?.rule,
    reply: state.cause?.reply,
  };
};

/** The longest the timer sleeps without a due step (a guard: every change wakes it anyway). */
const MAX_TIMER_SLEEP_MS = 60_000;

/** Scoped: the recovery timer is a fiber of the scope. */
export const makeThrottles = (options: ThrottleOptions): Effect.Effect<Throttles, never, Scope.Scope> =>
  Effect.gen(function* () {
    const clock = yield* Clock.Clock;
    const { match, policy, observer } = options;
    const holders = new Map<string, Holder>();
    /** Holders not at normal: the timer's work. */
    const active = new Map<string, Holder>();
    const wakes = yield* Queue.dropping<void>(1);

    const apply = (holder: Holder, stepped: Stepped, now: number) => {
      const previousLevel = holder.state.level;
      holder.state = stepped.state;
      if (stepped.change === undefined) return;
      const { key } = holder;
      if (isNormal(holder.state)) {
        active.delete(key);
        if (!holder.live) holders.delete(key);
      } else active.set(key, holder);
      Queue.offerUnsafe(wakes, undefined);
      holder.onChange?.(stepped.change);
      observer?.changed({ ...viewOf(holder, policy), change: stepped.change, previousLevel, at: now });
    };

    const catchUp = (holder: Holder, now: number) => {
      for (;;) {
        const stepped = recover(holder.state, policy, now);
        if (stepped.change === undefined) return;
        apply(holder, stepped, now);
      }
    };

    const observe = (holder: Holder, attempt: Attempt, startedAt: number) => {
      let last: RecipientResult | undefined;
      for (const { result } of attempt.results) {
        // One reply to the whole transaction is one object shared by every recipient.
        if (result === last) continue;
        last = result;
        const reply = replyOf(result);
        if (reply === undefined || reply.code < 400) continue;
        const rule = match(reply);
        if (rule === undefined || rule.action._tag === "ignore") continue;
        observer?.replied(rule.name);
        const now = clock.currentTimeMillisUnsafe();
        catchUp(holder, now);
        apply(holder, throttled(holder.state, rule.action, { rule: rule.name, reply }, startedAt, now), now);
        return; // one attempt is one signal
      }
    };

    // Sleeps until the earliest due step (or a change), then applies what is due.
    const tick = Effect.suspend(() => {
      const now = clock.currentTimeMillisUnsafe();
      let earliest = Number.POSITIVE_INFINITY;
      for (const holder of [...active.values()]) {
        catchUp(holder, now);
        earliest = Math.min(earliest, nextStepAt(holder.state, policy) ?? Number.POSITIVE_INFINITY);
      }
      const sleep = Math.min(MAX_TIMER_SLEEP_MS, Math.max(1, earliest - now));
      return Effect.asVoid(Queue.take(wakes).pipe(Effect.timeoutOption(sleep)));
    });
    yield* Effect.forkScoped(Effect.forever(tick));

    return {
      holderFor: (key, site, source, baseConnections) => {
        const kept = holders.get(key);
        if (kept) {
          kept.live = true;
          return kept;
        }
        const holder: Holder = { state: NORMAL, key, site, source, baseConnections, live: true, onChange: undefined };
        holders.set(key, holder);
        return holder;
      },
      observe,
      catchUp: (holder) => {
        if (!isNormal(holder.state)) catchUp(holder, clock.currentTimeMillisUnsafe());
      },
      release: (key) => {
        const holder = holders.get(key);
        if (!holder) return;
        holder.live = false;
        holder.onChange = undefined;
        if (isNormal(holder.state)) holders.delete(key);
      },
      list: () => [...active.values()].map((holder) => viewOf(holder, policy)),
    } satisfies Throttles;
  });
