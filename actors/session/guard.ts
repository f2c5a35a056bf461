// Per-client limits that keep one client from taking the node: concurrent connections
// and message rate per IP, and failed logins per IP and per (user, IP). Failed logins
// are never counted per user alone, so an attacker elsewhere cannot lock the real
// user out. Shared by SMTP AUTH and the POP3/IMAP logins.
//
// The guard is asked from smtp-server's socket callbacks, so its methods stay synchronous;
// it reads time from the Clock service captured when it is made (TestClock in tests).
import { Clock, Effect } from "effect";

export interface GuardLimits {
  readonly maxConnectionsPerIp: number;
  readonly maxMessagesPerIpPerMinute: number;
  readonly maxAuthFailuresPerIp: number;
  readonly maxAuthFailuresPerUserAndIp: number;
  /** How long failures are remembered. */
  readonly authFailureWindowMs: number;
}

/**
 * Events per key over a sliding window, kept as counts in 10 sub-buckets: O(1) per
 * event and a few numbers per key, however busy the key (one IP may send 100k/min).
 */
class SlidingCounter {
  private static readonly BUCKETS = 10;
  private readonly counts = new Map<string, { bucket: number; counts: number[] }>();
  constructor(private readonly windowMs: number) {}

  private bucketOf(now: number) {
    return Math.floor((now * SlidingCounter.BUCKETS) / this.windowMs);
  }

  /** Drops sub-buckets that left the window. */
  private advance(key: string, now: number) {
    const current = this.bucketOf(now);
    const entry = this.counts.get(key);
    if (!entry) return undefined;
    const shift = Math.min(current - entry.bucket, SlidingCounter.BUCKETS);
    for (let i = 0; i < shift; i++) {
      entry.counts.pop();
      entry.counts.unshift(0);
    }
    entry.bucket = current;
    if (entry.counts.every((c) => c === 0)) {
      this.counts.delete(key);
      return undefined;
    }
    return entry;
  }

  count(key: string, now: number): number {
    return this.advance(key, now)?.counts.reduce((a, b) => a + b, 0) ?? 0;
  }

  add(key: string, now: number) {
    const entry = this.advance(key, now) ?? { bucket: this.bucketOf(now), counts: new Array<number>(SlidingCounter.BUCKETS).fill(0) };
    entry.counts[0]!++;
    this.counts.set(key, entry);
  }

  /** Forgets keys with no recent events (called periodically so memory stays bounded). */
  sweep(now: number) {
    for (const key of [...this.counts.keys()]) this.advance(key, now);
  }
}

export interface ClientGuard {
  /** Registers a connection; false when the IP already has too many open. */
  readonly connect: (ip: string) => boolean;
  readonly disconnect: (ip: string) => void;
  /** Registers a message; false when the IP is over its rate. */
  readonly message: (ip: string) => boolean;
  /** True when logins from this IP (for this user) are blocked for now. */
  readonly authBlocked: (ip: string, user: string) => boolean;
  readonly authFailed: (ip: string, user: string) => void;
}

export const makeClientGuard = (limits: GuardLimits): Effect.Effect<ClientGuard> =>
  Clock.Clock.useSync((clock) => clientGuard(limits, () => clock.currentTimeMillisUnsafe()));

const clientGuard = (limits: GuardLimits, now: () => number): ClientGuard => {
  const open = new Map<string, number>();
  const messages = new SlidingCounter(60_000);
  const failuresByIp = new SlidingCounter(limits.authFailureWindowMs);
  const failuresByUserAndIp = new SlidingCounter(limits.authFailureWindowMs);
  let lastSweep = now();
  const sweep = () => {
    if (now() - lastSweep < 60_000) return;
    lastSweep = now();
    [messages, failuresByIp, failuresByUserAndIp].forEach((counter) => counter.sweep(lastSweep));
  };
  return {
    connect: (ip) => {
      sweep();
      const current = open.get(ip) ?? 0;
      if (current >= limits.maxConnectionsPerIp) return false;
      open.set(ip, current + 1);
      return true;
    },
    disconnect: (ip) => {
      const current = (open.get(ip) ?? 1) - 1;
      if (current <= 0) open.delete(ip);
      else open.set(ip, current);
    },
    message: (ip) => {
      if (messages.count(ip, now()) >= limits.maxMessagesPerIpPerMinute) return false;
      messages.add(ip, now());
      return true;
    },
    authBlocked: (ip, user) =>
      failuresByIp.count(ip, now()) >= limits.maxAuthFailuresPerIp ||
      failuresByUserAndIp.count(`${user.toLowerCase()}\n${ip}`, now()) >= limits.maxAuthFailuresPerUserAndIp,
    authFailed: (ip, user) => {
      failuresByIp.add(ip, now());
      failuresByUserAndIp.add(`${user.toLowerCase()}\n${ip}`, now());
    },
  };
};
