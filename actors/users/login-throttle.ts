// Failed-login limits for every login the node takes (SMTP AUTH, POP3, later IMAP), per
// node, in memory.
//
// Failures are counted by account: the user address a login name resolves to, so
// `alice` and `alice@local.test` share one count; a name that resolves to nobody counts
// as itself, lower-cased, so guessing unknown names is still counted. Three counts:
// - per client IP and per (account, IP), each protocol with its own limits: past one,
//   further attempts are refused without checking the password;
// - per account from every IP together, node-wide: past `afterFailures`, each attempt
//   is answered only after a delay that doubles with every further failure, up to
//   `maxDelayMs`. It slows a guesser spread over many addresses, yet locks nobody out:
//   the right password still gets in, only later.
// An IP the account logged in from before ("known good") is exempt from the per-IP limit
// and from the account's delay, so an attacker elsewhere (or behind the same NAT) cannot
// keep the real user out; there only the (account, IP) limit applies, and an attacker
// cannot fill that one without the user's address. Every map is bounded: the least
// recently touched entries go first.
//
// Asked from socket callbacks, so the methods are synchronous; time comes from the Clock
// captured when the accounts are made (TestClock in tests), and the caller waits the
// delay with Effect.sleep.
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

export const defaultLoginLimits: LoginLimits = { windowMs: 15 * 60_000, maxFailuresPerIp: 20, maxFailuresPerAccountAndIp: 5 };

/** The node-wide part: which account a name stands for, its failures from every IP, its known-good IPs. */
export interface LoginAccounts {
  /** The key an attempt with this login name is counted by. */
  readonly keyOf: (login: string) => string;
  /** How long an attempt for the account from `ip` waits before it is answered. */
  readonly delayFor: (account: string, ip: string) => number;
  readonly knownGood: (account: string, ip: string) => boolean;
  readonly failed: (account: string) => void;
  readonly succeeded: (account: string, ip: string) => void;
  /** Time on the Clock the record was made with; each protocol's counters read it too. */
  readonly now: () => number;
}

/** Before the password is checked: refused by a limit, or allowed after `delayMs`. */
export type LoginVerdict =
  | { readonly _tag: "Refused"; readonly limit: "ip" | "account-ip"; readonly account: string }
  | { readonly _tag: "Allowed"; readonly delayMs: number; readonly account: string };

/** One protocol's view; `login` is the name as the client gave it. */
export interface LoginThrottle {
  readonly check: (login: string, ip: string) => LoginVerdict;
  readonly failed: (login: string, ip: string) => void;
  readonly succeeded: (login: string, ip: string) => void;
}

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
  const failures = new SlidingCounter(options.windowMs, options.maxEntries);
  const goodIps = new Map<string, number>();
  const pairKey = (account: string, ip: string) => `${account}\n${ip}`;
  const knownGood = (account: string, ip: string) => {
    const at = goodIps.get(pairKey(account, ip));
    return at !== undefined && now() - at < options.rememberGoodIpMs;
  };
  return {
    keyOf: (login) => accountOf(login) ?? login.toLowerCase(),
    delayFor: (account, ip) => {
      if (knownGood(account, ip)) return 0;
      const over = failures.count(account, now()) - options.afterFailures;
      // The exponent is capped before it can overflow to Infinity.
      return over < 0 ? 0 : Math.min(options.maxDelayMs, options.delayMs * 2 ** Math.min(over, 30));
    },
    knownGood,
    failed: (account) => failures.add(account, now()),
    succeeded: (account, ip) => {
      const key = pairKey(account, ip);
      goodIps.delete(key);
      goodIps.set(key, now());
      if (goodIps.size > options.maxEntries) goodIps.delete(goodIps.keys().next().value as string);
    },
    now,
  };
};

export const makeLoginThrottle = (accounts: LoginAccounts, limits: LoginLimits = defaultLoginLimits, maxEntries = defaultAccountDelay.maxEntries): LoginThrottle => {
  const byIp = new SlidingCounter(limits.windowMs, maxEntries);
  const byPair = new SlidingCounter(limits.windowMs, maxEntries);
  const pairKey = (account: string, ip: string) => `${account}\n${ip}`;
  return {
    check: (login, ip) => {
      const account = accounts.keyOf(login);
      const now = accounts.now();
      if (byPair.count(pairKey(account, ip), now) >= limits.maxFailuresPerAccountAndIp) return { _tag: "Refused", limit: "account-ip", account };
      if (!accounts.knownGood(account, ip) && byIp.count(ip, now) >= limits.maxFailuresPerIp) return { _tag: "Refused", limit: "ip", account };
      return { _tag: "Allowed", delayMs: accounts.delayFor(account, ip), account };
    },
    failed: (login, ip) => {
      const account = accounts.keyOf(login);
      byIp.add(ip, accounts.now());
      byPair.add(pairKey(account, ip), accounts.now());
      accounts.failed(account);
    },
    succeeded: (login, ip) => {
      const account = accounts.keyOf(login);
      byPair.clear(pairKey(account, ip));
      accounts.succeeded(account, ip);
    },
  };
};
