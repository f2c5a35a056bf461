// Failed-login limits under TestClock: counted by resolved account, refused per IP and
// per (account, IP), slowed per account from every IP with a delay that doubles, and the
// known-good exemption that keeps an attacker from locking the real user out.
import { test } from "node:test";
import assert from "node:assert/strict";
import { Effect, Fiber } from "effect";
import { TestClock } from "effect/testing";
import {
  makeLoginAccounts,
  makeLoginThrottle,
  type AccountDelayOptions,
  type LoginLimits,
  type LoginThrottle,
} from "../../../actors/users/login-throttle.ts";

const accountDelay: AccountDelayOptions = {
  afterFailures: 3,
  delayMs: 1_000,
  maxDelayMs: 8_000,
  windowMs: 60_000,
  rememberGoodIpMs: 86_400_000,
  maxEntries: 1_000,
};
const limits: LoginLimits = { windowMs: 60_000, maxFailuresPerIp: 6, maxFailuresPerAccountAndIp: 3 };

/** The users a login name resolves to, as the user store does it. */
const directory: Record<string, string> = { alice: "alice@local.test", "alice@local.test": "alice@local.test", "bob@local.test": "bob@local.test" };
const accountOf = (login: string) => directory[login.toLowerCase()];

const makeThrottle = (options: Partial<AccountDelayOptions> = {}, protocolLimits: LoginLimits = limits) =>
  Effect.map(makeLoginAccounts(accountOf, { ...accountDelay, ...options }), (accounts) => ({ accounts, throttle: makeLoginThrottle(accounts, protocolLimits, 1_000) }));

/** Runs a test body with a TestClock as the Clock (it starts at 0 and moves only when adjusted). */
const withTestClock = <E>(body: Effect.Effect<void, E>) => Effect.runPromise(Effect.provide(body, TestClock.layer()));

const delayOf = (throttle: LoginThrottle, login: string, ip: string) => {
  const verdict = throttle.check(login, ip);
  return verdict._tag === "Allowed" ? verdict.delayMs : verdict.limit;
};

test("a local part and the full address count as one account; unknown names count as themselves", () =>
  withTestClock(Effect.gen(function* () {
    const { throttle } = yield* makeThrottle();
    throttle.failed("alice", "10.0.0.1");
    throttle.failed("ALICE@local.test", "10.0.0.1");
    assert.deepEqual(throttle.check("alice", "10.0.0.1"), { _tag: "Allowed", delayMs: 0, account: "alice@local.test" });
    throttle.failed("Alice@Local.Test", "10.0.0.1");
    assert.deepEqual(throttle.check("alice@local.test", "10.0.0.1"), { _tag: "Refused", limit: "account-ip", account: "alice@local.test" });
    assert.equal(throttle.check("alice", "10.0.0.1")._tag, "Refused", "both spellings are over the pair's limit");

    for (let n = 0; n < 3; n++) throttle.failed("Nobody", "10.0.0.2");
    assert.deepEqual(throttle.check("nobody", "10.0.0.2"), { _tag: "Refused", limit: "account-ip", account: "nobody" });
  })));

test("the account's delay starts after N failures from any IPs, doubles up to its cap, and fades with the window", () =>
  withTestClock(Effect.gen(function* () {
    const { throttle } = yield* makeThrottle();
    // A guesser spread over addresses: each one stays far below the per-IP limits.
    throttle.failed("alice", "198.51.100.1");
    throttle.failed("alice@local.test", "198.51.100.2");
    assert.equal(delayOf(throttle, "alice", "198.51.100.9"), 0);
    throttle.failed("alice", "198.51.100.3");
    const delays: Array<number | string> = [];
    for (let n = 4; n <= 8; n++) {
      delays.push(delayOf(throttle, "alice", `198.51.100.${n}`));
      throttle.failed("alice", `198.51.100.${n}`);
    }
    assert.deepEqual(delays, [1_000, 2_000, 4_000, 8_000, 8_000]);
    assert.equal(delayOf(throttle, "bob@local.test", "198.51.100.9"), 0, "other accounts are not slowed");
    yield* TestClock.adjust(59_999);
    assert.equal(delayOf(throttle, "alice", "203.0.113.1"), 8_000, "still inside the window");
    yield* TestClock.adjust(1);
    assert.equal(delayOf(throttle, "alice", "203.0.113.1"), 0, "every failure aged out");
  })));

test("the window slides: old failures leave it one by one, and the delay shrinks with them", () =>
  withTestClock(Effect.gen(function* () {
    const { throttle } = yield* makeThrottle();
    for (let n = 1; n <= 3; n++) throttle.failed("alice", `198.51.100.${n}`);
    yield* TestClock.adjust(30_000);
    for (let n = 4; n <= 5; n++) throttle.failed("alice", `198.51.100.${n}`);
    assert.equal(delayOf(throttle, "alice", "203.0.113.1"), 4_000);
    yield* TestClock.adjust(30_000);
    assert.equal(delayOf(throttle, "alice", "203.0.113.1"), 0, "two failures left: under N again");
  })));

test("the right password still succeeds after the delay: the throttle never refuses a slowed account", () =>
  withTestClock(Effect.gen(function* () {
    const { throttle } = yield* makeThrottle();
    for (let n = 1; n <= 20; n++) throttle.failed("alice", `198.51.100.${n}`);
    // What a session does with the verdict: wait its delay on the Clock, then check the password.
    const attempt = Effect.gen(function* () {
      const verdict = throttle.check("alice", "203.0.113.7");
      assert.equal(verdict._tag, "Allowed");
      if (verdict._tag === "Allowed") yield* Effect.sleep(verdict.delayMs);
      throttle.succeeded("alice@local.test", "203.0.113.7");
      return "logged in";
    });
    const fiber = yield* Effect.forkChild(attempt);
    yield* TestClock.adjust(7_999);
    assert.equal(fiber.pollUnsafe(), undefined, "still waiting");
    yield* TestClock.adjust(1);
    assert.equal(yield* Fiber.join(fiber), "logged in");
    assert.equal(delayOf(throttle, "alice", "203.0.113.7"), 0, "where she logged in, she is not slowed again");
    assert.equal(delayOf(throttle, "alice", "203.0.113.8"), 8_000, "elsewhere the guessing still counts");
  })));

test("an address failing for many accounts is refused, except for accounts that logged in from it", () =>
  withTestClock(Effect.gen(function* () {
    const { throttle } = yield* makeThrottle({ afterFailures: 100 });
    throttle.succeeded("bob@local.test", "203.0.113.5");
    for (let n = 0; n < 6; n++) throttle.failed(`user${n}`, "203.0.113.5");
    assert.deepEqual(throttle.check("dave", "203.0.113.5"), { _tag: "Refused", limit: "ip", account: "dave" });
    assert.equal(throttle.check("bob@local.test", "203.0.113.5")._tag, "Allowed", "bob logged in from there before");
    yield* TestClock.adjust(60_000);
    assert.equal(throttle.check("dave", "203.0.113.5")._tag, "Allowed");
  })));

test("a success clears the pair's failures; the pair's limit holds even where the user logged in before", () =>
  withTestClock(Effect.gen(function* () {
    const { throttle } = yield* makeThrottle({ afterFailures: 100 });
    throttle.failed("alice", "10.0.0.1");
    throttle.failed("alice", "10.0.0.1");
    throttle.succeeded("alice@local.test", "10.0.0.1");
    throttle.failed("alice", "10.0.0.1");
    throttle.failed("alice", "10.0.0.1");
    assert.equal(throttle.check("alice", "10.0.0.1")._tag, "Allowed");
    throttle.failed("alice", "10.0.0.1");
    assert.equal(throttle.check("alice", "10.0.0.1")._tag, "Refused");
  })));

test("two protocols share the account's record (one delay, one set of known-good addresses) but keep their own limits", () =>
  withTestClock(Effect.gen(function* () {
    const { accounts } = yield* makeThrottle();
    const smtp = makeLoginThrottle(accounts, { windowMs: 60_000, maxFailuresPerIp: 2, maxFailuresPerAccountAndIp: 2 });
    const pop3 = makeLoginThrottle(accounts, limits);
    smtp.failed("alice", "198.51.100.1");
    smtp.failed("alice", "198.51.100.1");
    assert.equal(smtp.check("alice", "198.51.100.1")._tag, "Refused");
    assert.equal(pop3.check("alice", "198.51.100.1")._tag, "Allowed", "POP3's own per-IP counts");
    pop3.failed("alice@local.test", "198.51.100.2");
    assert.equal(delayOf(smtp, "alice", "198.51.100.3"), 1_000, "three failures over both protocols");
    pop3.succeeded("alice@local.test", "192.0.2.10");
    assert.equal(delayOf(smtp, "alice", "192.0.2.10"), 0, "known good for SMTP too");
  })));

test("memory is bounded: the oldest entries are dropped beyond maxEntries", () =>
  withTestClock(Effect.gen(function* () {
    const accounts = yield* makeLoginAccounts(accountOf, { ...accountDelay, maxEntries: 10 });
    const throttle = makeLoginThrottle(accounts, limits, 10);
    for (let n = 0; n < 3; n++) throttle.failed("victim", "10.0.0.1");
    assert.equal(throttle.check("victim", "10.0.0.1")._tag, "Refused");
    for (let n = 0; n < 20; n++) throttle.failed(`spray${n}`, `10.1.0.${n}`);
    assert.deepEqual(throttle.check("victim", "10.0.0.1"), { _tag: "Allowed", delayMs: 0, account: "victim" }, "the oldest entries were evicted");
  })));
