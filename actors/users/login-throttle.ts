// Failed-login limits for every login the node takes (SMTP AUTH, POP3, later IMAP), in
// memory, and shared with the other nodes of the cluster (cluster/login-reports.ts).
//
// Failures are counted by account: the user address a login name resolves to, so
// `alice` and `alice@local.test` share one count. Three counts:
// - per client IP and per (account, IP), each protocol with its own limits: past one,
//   further attempts are refused without checking the password;
// - per account from every IP together, cluster-wide: past `afterFailures`, each attempt
//   is answered only after a delay that doubles with every further failure, up to
//   `maxDelayMs`. It slows a guesser spread over many addresses, yet locks nobody out:
//   the right password still gets in, only later.
// An attempt is counted as failed in all three the moment it is admitted, before its
// delay and its password check, and taken back if the password was right. Counted only
// afterwards, parallel attempts (or ones whose client hangs up during the delay) would
// all pass the limits before any of them was counted. An admitted attempt whose client
// leaves during the delay ends there, still counted, without checking the password.
// A name that resolves to nobody is counted as itself, lower-cased, in a map of its own:
// a spray of made-up names then cannot push a real account's failures out of the bounded
// map (which would reset its delay), and unknown names are still slowed the same way, so
// the delay does not tell a guesser which names exist.
// An IP the account logged in from before ("known good") is exempt from the per-IP limit
// and from the account's delay, so an attacker elsewhere (or behind the same NAT) cannot
// keep the real user out; there only the (account, IP) limit applies, and an attacker
// cannot fill that one without the user's address. Every map is bounded: the least
// recently touched entries go first.
//
// Cluster-wide: each counted failure and each success is told to `report` (the node
// publishes it to its peers), and what peers report comes in through `merge`, which
// applies it exactly as if the attempt had been taken here, without reporting it again.
// Every node thus holds every count, and a check never waits for the network: without
// NATS a node goes on with what it knows, so a guesser spread over N nodes gets at most
// N times the limits until NATS is back. A peer's failure is counted at the time it
// arrives (milliseconds late; no trust in the peer's clock), a success says how long ago
// its attempt was admitted, so the failure it takes back is found in the right sub-bucket.
//
// Asked from socket callbacks, so the methods are synchronous; time comes from the Clock
// captured when the accounts are made (TestClock in tests), and the caller waits the
// delay with `waitDelay`.
import { Clock, Effect } from "effect";
import { SlidingCounter } from "../common/sliding-counter.ts";

export interface AccountDelayOptions {
  /** Failures of one account, from any IP, inside the window before its attempts are slowed. */
  readonly afterFailures: number;
  /** The first delay; each further failure doubles it. */
  readonly delayMs: number;
  readonly maxDelayMs: number;
  /** How long an account's failures are remembered. */
  readonly windowMs: number;
  /** How long a successful login makes an IP known good for that account. */
  readonly rememberGoodIpMs: number;
  /** Entries per map at most (memory stays bounded under a spray of names and addresses). */
  readonly maxEntries: number;
}

export const defaultAccountDelay: AccountDelayOptions = {
  afterFailures: 5,
  delayMs: 1_000,
  maxDelayMs: 30_000,
  windowMs: 15 * 60_000,
  rememberGoodIpMs: 30 * 24 * 3_600_000,
  maxEntries: 100_000,
};

/** One protocol's refusal limits. */
export interface LoginLimits {
  readonly windowMs: number;
  readonly maxFailuresPerIp: number;
  readonly maxFailuresPerAccountAndIp: number;
}

const defaultLoginLimits: LoginLimits = { windowMs: 15 * 60_000, maxFailuresPerIp: 20, maxFailuresPerAccountAndIp: 5 };

/** Whom an attempt is counted against: a user's address, or a name that resolves to nobody (lower-cased). */
export interface Account {
  readonly key: string;
  readonly exists: boolean;
}

/** The node-wide part: which account a name stands for, its failures from every IP, its known-good IPs. */
export interface LoginAccounts {
  readonly accountOf: (login: string) => Account;
  /** How long an attempt for the account from `ip` waits before it is answered. */
  readonly delayFor: (account: Account, ip: string) => number;
  readonly knownGood: (account: string, ip: string) => boolean;
  /** Counts one failure of the account, at `at`. */
  readonly failed: (account: Account, at: number) => void;
  /** The user logged in from `ip`: the failure counted at `at` is taken back and the IP is known good. */
  readonly succeeded: (user: string, ip: string, at: number) => void;
  /** Time on the Clock the record was made with; each protocol's counters read it too. */
  readonly now: () => number;
}

/** An attempt past the limits: already counted as failed (at `at`) until `succeeded` takes it back. */
export interface LoginAttempt {
  readonly _tag: "Allowed";
  readonly account: string;
  readonly ip: string;
  /** How long to wait before checking the password. */
  readonly delayMs: number;
  readonly at: number;
}

/** Before the password is checked: refused by a limit, or admitted after `delayMs`. */
export type LoginVerdict = { readonly _tag: "Refused"; readonly limit: "ip" | "account-ip"; readonly account: string } | LoginAttempt;

/**
 * What one node tells the others about a login it took, for one protocol: an attempt
 * counted as failed, or a success (taking back the failure counted `ageMs` ago).
 */
export type LoginEvent =
  | { readonly _tag: "Failed"; readonly account: Account; readonly ip: string }
  | { readonly _tag: "Succeeded"; readonly account: string; readonly ip: string; readonly ageMs: number };

/** One protocol's view; `login` is the name as the client gave it. */
export interface LoginThrottle {
  /** Refuses the attempt, or admits it and counts it as failed (see the top of this file). */
  readonly check: (login: string, ip: string) => LoginVerdict;
  /** The password was right: the attempt's failure is taken back, the pair's failures forgotten, the IP known good. */
  readonly succeeded: (attempt: LoginAttempt) => void;
  /** Applies what a peer node reported, as if the attempt had been taken here (and without reporting it). */
  readonly merge: (event: LoginEvent) => void;
}

/**
 * Waits an admitted attempt's delay, unless the client leaves first (`clientLeft`
 * completes): then the attempt should end without checking the password, so a client
 * that asks and hangs up costs no scrypt.
 */
export const waitDelay = (attempt: LoginAttempt, clientLeft: Effect.Effect<void>): Effect.Effect<"waited" | "client-left"> =>
  attempt.delayMs === 0
    ? Effect.succeed("waited")
    : Effect.raceFirst(Effect.as(Effect.sleep(attempt.delayMs), "waited" as const), Effect.as(clientLeft, "client-left" as const));

/** `accountOf` resolves a login name to its user's address (the user store's), or undefined. */
export const makeLoginAccounts = (
  accountOf: (login: string) => string | undefined,
  options: AccountDelayOptions = defaultAccountDelay,
): Effect.Effect<LoginAccounts> => Clock.Clock.useSync((clock) => loginAccountsOn(clock, accountOf, options));

export const loginAccountsOn = (
  clock: Clock.Clock,
  accountOf: (login: string) => string | undefined,
  options: AccountDelayOptions = defaultAccountDelay,
): LoginAccounts => {
  const now = () => clock.currentTimeMillisUnsafe();
  const userFailures = new SlidingCounter(options.windowMs, options.maxEntries);
  const unknownNameFailures = new SlidingCounter(options.windowMs, options.maxEntries);
  const failuresOf = (account: Account) => (account.exists ? userFailures : unknownNameFailures);
  const goodIps = new Map<string, number>();
  const knownGood = (account: string, ip: string) => {
    const at = goodIps.get(pairKey(account, ip));
    return at !== undefined && now() - at < options.rememberGoodIpMs;
  };
  return {
    accountOf: (login) => {
      const user = accountOf(login);
      return user === undefined ? { key: login.toLowerCase(), exists: false } : { key: user, exists: true };
    },
    delayFor: (account, ip) => {
      if (knownGood(account.key, ip)) return 0;
      const over = failuresOf(account).count(account.key, now()) - options.afterFailures;
      // The exponent is capped before it can overflow to Infinity.
      return over < 0 ? 0 : Math.min(options.maxDelayMs, options.delayMs * 2 ** Math.min(over, 30));
    },
    knownGood,
    failed: (account, at) => failuresOf(account).add(account.key, at),
    succeeded: (user, ip, at) => {
      userFailures.remove(user, at, now());
      const key = pairKey(user, ip);
      goodIps.delete(key);
      goodIps.set(key, now());
      if (goodIps.size > options.maxEntries) goodIps.delete(goodIps.keys().next().value as string);
    },
    now,
  };
};

const pairKey = (account: string, ip: string) => `${account}\n${ip}`;

export interface LoginThrottleOptions {
  /** Entries per map at most. */
  readonly maxEntries?: number;
  /** Hears every failure counted and every success here, to tell the other nodes. */
  readonly report?: (event: LoginEvent) => void;
}

export const makeLoginThrottle = (accounts: LoginAccounts, limits: LoginLimits = defaultLoginLimits, options: LoginThrottleOptions = {}): LoginThrottle => {
  const maxEntries = options.maxEntries ?? defaultAccountDelay.maxEntries;
  const report = options.report ?? (() => undefined);
  const byIp = new SlidingCounter(limits.windowMs, maxEntries);
  const byPair = new SlidingCounter(limits.windowMs, maxEntries);
  const countFailure = (account: Account, ip: string, at: number) => {
    byIp.add(ip, at);
    byPair.add(pairKey(account.key, ip), at);
    accounts.failed(account, at);
  };
  const takeBack = (account: string, ip: string, at: number) => {
    byIp.remove(ip, at, accounts.now());
    byPair.clear(pairKey(account, ip));
    accounts.succeeded(account, ip, at);
  };
  return {
    check: (login, ip) => {
      const account = accounts.accountOf(login);
      const now = accounts.now();
      if (byPair.count(pairKey(account.key, ip), now) >= limits.maxFailuresPerAccountAndIp) return { _tag: "Refused", limit: "account-ip", account: account.key };
      if (!accounts.knownGood(account.key, ip) && byIp.count(ip, now) >= limits.maxFailuresPerIp) return { _tag: "Refused", limit: "ip", account: account.key };
      // The delay is the one earned before this attempt; then the attempt counts as failed.
      const delayMs = accounts.delayFor(account, ip);
      countFailure(account, ip, now);
      report({ _tag: "Failed", account, ip });
      return { _tag: "Allowed", account: account.key, ip, delayMs, at: now };
    },
    succeeded: (attempt) => {
      takeBack(attempt.account, attempt.ip, attempt.at);
      report({ _tag: "Succeeded", account: attempt.account, ip: attempt.ip, ageMs: Math.max(0, accounts.now() - attempt.at) });
    },
    merge: (event) => {
      const now = accounts.now();
      if (event._tag === "Failed") countFailure(event.account, event.ip, now);
      else takeBack(event.account, event.ip, now - event.ageMs);
    },
  };
};
