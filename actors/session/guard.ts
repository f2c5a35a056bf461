// Per-client limits that keep one client from taking the node: concurrent connections
// and message rate per IP, and failed logins per IP and per (user, IP). Failed logins
// are never counted per user alone, so an attacker elsewhere cannot lock the real
// user out. Shared by SMTP AUTH and the POP3/IMAP logins.

export interface GuardLimits {
  readonly maxConnectionsPerIp: number;
  readonly maxMessagesPerIpPerMinute: number;
  readonly maxAuthFailuresPerIp: number;
  readonly maxAuthFailuresPerUserAndIp: number;
  /** How long failures are remembered. */
  readonly authFailureWindowMs: number;
}

/** Timestamps within a sliding window, per key; bounded by pruning on every touch. */
class SlidingCounter {
  private readonly hits = new Map<string, number[]>();
  constructor(private readonly windowMs: number) {}

  count(key: string, now: number): number {
    const recent = (this.hits.get(key) ?? []).filter((t) => now - t < this.windowMs);
    if (recent.length === 0) this.hits.delete(key);
    else this.hits.set(key, recent);
    return recent.length;
  }

  add(key: string, now: number) {
    this.count(key, now);
    const list = this.hits.get(key) ?? [];
    list.push(now);
    this.hits.set(key, list);
  }

  /** Forgets keys with no recent hits (called periodically so memory stays bounded). */
  sweep(now: number) {
    for (const key of [...this.hits.keys()]) this.count(key, now);
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

export const makeClientGuard = (limits: GuardLimits, now: () => number = Date.now): ClientGuard => {
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
