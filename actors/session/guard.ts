// Per-client limits that keep one client from taking the node: concurrent connections
// and message rate per IP. Failed logins are limited in users/login-throttle.ts, shared
// with POP3.
//
// The guard is asked from smtp-server's socket callbacks, so its methods stay synchronous;
// it reads time from the Clock service captured when it is made (TestClock in tests).
import { Clock, Effect } from "effect";
import { SlidingCounter } from "../common/sliding-counter.ts";

export interface GuardLimits {
  readonly maxConnectionsPerIp: number;
  readonly maxMessagesPerIpPerMinute: number;
}

export interface ClientGuard {
  /** Registers a connection; false when the IP already has too many open. */
  readonly connect: (ip: string) => boolean;
  readonly disconnect: (ip: string) => void;
  /** Registers a message; false when the IP is over its rate. */
  readonly message: (ip: string) => boolean;
}

export const makeClientGuard = (limits: GuardLimits): Effect.Effect<ClientGuard> =>
  Clock.Clock.useSync((clock) => clientGuard(limits, () => clock.currentTimeMillisUnsafe()));

const clientGuard = (limits: GuardLimits, now: () => number): ClientGuard => {
  const open = new Map<string, number>();
  const messages = new SlidingCounter(60_000);
  let lastSweep = now();
  const sweep = () => {
    if (now() - lastSweep < 60_000) return;
    lastSweep = now();
    messages.sweep(lastSweep);
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
  };
};
