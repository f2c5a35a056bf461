// Failed-login rate limiting for POP3 (and later IMAP), per node, in memory.
//
// Three counters of failures inside a window: per client IP, per user name, and per
// (user, IP) pair. Past a limit, further attempts are refused without checking the
// password, so guessing stops paying. A plain per-user lockout would let anyone lock a
// user out by failing on purpose, so the per-IP and per-user limits do not apply from an
// IP the user logged in from successfully before ("known good"): there only the pair
// limit applies, and an attacker elsewhere cannot fill it. Maps are bounded; the oldest
// entries go first.
//
// Checked from socket callbacks, so the methods stay synchronous; time comes from the
// Clock service captured when the throttle is made (TestClock in tests).
import { Clock, Effect } from "effect";

export interface LoginThrottleOptions {
  readonly windowMs: number;
  readonly maxFailuresPerIp: number;
  readonly maxFailuresPerUser: number;
  readonly maxFailuresPerUserAndIp: number;
  /** How long a successful login makes an IP known good for that user. */
  readonly rememberGoodIpMs: number;
  /** Entries per map at most (memory stays bounded under a spray of names and addresses). */
  readonly maxEntries: number;
}

export const defaultLoginThrottle: LoginThrottleOptions = {
  windowMs: 15 * 60_000,
  maxFailuresPerIp: 20,
  maxFailuresPerUser: 10,
  maxFailuresPerUserAndIp: 5,
  rememberGoodIpMs: 30 * 24 * 3_600_000,
  maxEntries: 100_000,
};

/** Which limit refused the attempt, or "allowed". */
export type ThrottleVerdict = "allowed" | "ip" | "user" | "user-ip";

export interface LoginThrottle {
  readonly check: (user: string, ip: string) => ThrottleVerdict;
  readonly failed: (user: string, ip: string) => void;
  readonly succeeded: (user: string, ip: string) => void;
}

interface Window {
  readonly since: number;
  readonly count: number;
}

/** A Map that forgets its least recently touched entry beyond `max`. */
const boundedSet = <V>(map: Map<string, V>, key: string, value: V, max: number) => {
  map.delete(key);
  map.set(key, value);
  if (map.size > max) map.delete(map.keys().next().value as string);
};

export const makeLoginThrottle = (options: LoginThrottleOptions = defaultLoginThrottle): Effect.Effect<LoginThrottle> =>
  Clock.Clock.useSync((clock) => loginThrottleOn(clock, options));

/** The same, on a Clock the caller already holds (a server built from plain code with its services). */
export const loginThrottleOn = (clock: Clock.Clock, options: LoginThrottleOptions = defaultLoginThrottle): LoginThrottle =>
  loginThrottle(options, () => clock.currentTimeMillisUnsafe());

const loginThrottle = (options: LoginThrottleOptions, now: () => number): LoginThrottle => {
  const byIp = new Map<string, Window>();
  const byUser = new Map<string, Window>();
  const byPair = new Map<string, Window>();
  const goodIps = new Map<string, number>();

  const pairKey = (user: string, ip: string) => `${user.toLowerCase()}\n${ip}`;

  const countIn = (map: Map<string, Window>, key: string): number => {
    const window = map.get(key);
    return window !== undefined && now() - window.since < options.windowMs ? window.count : 0;
  };

  const bump = (map: Map<string, Window>, key: string) => {
    const window = map.get(key);
    const fresh = window === undefined || now() - window.since >= options.windowMs;
    boundedSet(map, key, fresh ? { since: now(), count: 1 } : { since: window.since, count: window.count + 1 }, options.maxEntries);
  };

  const knownGood = (user: string, ip: string) => {
    const at = goodIps.get(pairKey(user, ip));
    return at !== undefined && now() - at < options.rememberGoodIpMs;
  };

  return {
    check: (user, ip) => {
      if (countIn(byPair, pairKey(user, ip)) >= options.maxFailuresPerUserAndIp) return "user-ip";
      if (knownGood(user, ip)) return "allowed";
      if (countIn(byIp, ip) >= options.maxFailuresPerIp) return "ip";
      if (countIn(byUser, user.toLowerCase()) >= options.maxFailuresPerUser) return "user";
      return "allowed";
    },
    failed: (user, ip) => {
      bump(byIp, ip);
      bump(byUser, user.toLowerCase());
      bump(byPair, pairKey(user, ip));
    },
    succeeded: (user, ip) => {
      byPair.delete(pairKey(user, ip));
      boundedSet(goodIps, pairKey(user, ip), now(), options.maxEntries);
    },
  };
};
