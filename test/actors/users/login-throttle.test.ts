// Failed-login limits under TestClock: counted by resolved account, refused per IP and
// per (account, IP), slowed per account from every IP with a delay that doubles, and the
// known-good exemption that keeps an attacker from locking the real user out. Attempts
// count as failed when admitted, so attempts in flight together cannot pass the limits.
import { test } from "node:test";
import assert from "node:assert/strict";
import { Deferred, Effect, Fiber } from "effect";
import { TestClock } from "effect/testing";
import {
  makeLoginAccounts,
  makeLoginThrottle,
  waitDelay,
  type AccountDelayOptions,
  type LoginAccounts,
  type LoginAttempt,
  type LoginEvent,
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
  Effect.map(makeLoginAccounts(accountOf, { ...accountDelay, ...options }), (accounts) => ({ accounts, throttle: makeLoginThrottle(accounts, protocolLimits, { maxEntries: 1_000 }) }));

/** Runs a test body with a TestClock as the Clock (it starts at 0 and moves only when adjusted). */
const withTestClock = <E>(body: Effect.Effect<void, E>) => Effect.runPromise(Effect.provide(body, TestClock.layer()));

/** An attempt the throttle must admit (it counts as failed from then on: a wrong password needs nothing more). */
const admitted = (throttle: LoginThrottle, login: string, ip: string): LoginAttempt => {
  const verdict = throttle.check(login, ip);
  assert.equal(verdict._tag, "Allowed", `${login} from ${ip} was refused`);
  return verdict as LoginAttempt;
};

/** A login with a wrong password: admitted, and left counted. */
const fail = (throttle: LoginThrottle, login: string, ip: string) => void admitted(throttle, login, ip);

/** A login with the right password: admitted, then taken back as a success. */
const succeed = (throttle: LoginThrottle, login: string, ip: string) => throttle.succeeded(admitted(throttle, login, ip));

/** The delay the next attempt would get, without making one. */
const delayOf = (accounts: LoginAccounts, login: string, ip: string) => accounts.delayFor(accounts.accountOf(login), ip);

/** What an admitted attempt's fields say, without its clock reading. */
const fields = (verdict: ReturnType<LoginThrottle["check"]>) =>
  verdict._tag === "Allowed" ? { _tag: verdict._tag, account: verdict.account, delayMs: verdict.delayMs } : verdict;

test("a local part and the full address count as one account; unknown names count as themselves", () =>
  withTestClock(Effect.gen(function* () {
    const { throttle } = yield* makeThrottle();
    fail(throttle, "alice", "10.0.0.1");
    fail(throttle, "ALICE@local.test", "10.0.0.1");
    assert.deepEqual(fields(throttle.check("Alice@Local.Test", "10.0.0.1")), { _tag: "Allowed", account: "alice@local.test", delayMs: 0 });
    assert.deepEqual(throttle.check("alice@local.test", "10.0.0.1"), { _tag: "Refused", limit: "account-ip", account: "alice@local.test" });
    assert.equal(throttle.check("alice", "10.0.0.1")._tag, "Refused", "both spellings are over the pair's limit");

    for (let n = 0; n < 3; n++) fail(throttle, "Nobody", "10.0.0.2");
    assert.deepEqual(throttle.check("nobody", "10.0.0.2"), { _tag: "Refused", limit: "account-ip", account: "nobody" });
  })));

test("the account's delay starts after N failures from any IPs, doubles up to its cap, and fades with the window", () =>
  withTestClock(Effect.gen(function* () {
    const { accounts, throttle } = yield* makeThrottle();
    // A guesser spread over addresses: each one stays far below the per-IP limits.
    fail(throttle, "alice", "198.51.100.1");
    fail(throttle, "alice@local.test", "198.51.100.2");
    assert.equal(delayOf(accounts, "alice", "198.51.100.9"), 0);
    fail(throttle, "alice", "198.51.100.3");
    const delays: number[] = [];
    for (let n = 4; n <= 8; n++) delays.push(admitted(throttle, "alice", `198.51.100.${n}`).delayMs);
    assert.deepEqual(delays, [1_000, 2_000, 4_000, 8_000, 8_000]);
    assert.equal(delayOf(accounts, "bob@local.test", "198.51.100.9"), 0, "other accounts are not slowed");
    yield* TestClock.adjust(59_999);
    assert.equal(delayOf(accounts, "alice", "203.0.113.1"), 8_000, "still inside the window");
    yield* TestClock.adjust(1);
    assert.equal(delayOf(accounts, "alice", "203.0.113.1"), 0, "every failure aged out");
  })));

test("the window slides: old failures leave it one by one, and the delay shrinks with them", () =>
  withTestClock(Effect.gen(function* () {
    const { accounts, throttle } = yield* makeThrottle();
    for (let n = 1; n <= 3; n++) fail(throttle, "alice", `198.51.100.${n}`);
    yield* TestClock.adjust(30_000);
    for (let n = 4; n <= 5; n++) fail(throttle, "alice", `198.51.100.${n}`);
    assert.equal(delayOf(accounts, "alice", "203.0.113.1"), 4_000);
    yield* TestClock.adjust(30_000);
    assert.equal(delayOf(accounts, "alice", "203.0.113.1"), 0, "two failures left: under N again");
  })));

test("the right password still succeeds after the delay: the throttle never refuses a slowed account", () =>
  withTestClock(Effect.gen(function* () {
    const { accounts, throttle } = yield* makeThrottle();
    for (let n = 1; n <= 20; n++) fail(throttle, "alice", `198.51.100.${n}`);
    // What a session does with the verdict: wait its delay on the Clock, then check the password.
    const attempt = Effect.gen(function* () {
      const verdict = admitted(throttle, "alice", "203.0.113.7");
      assert.equal(yield* waitDelay(verdict, Effect.never), "waited");
      throttle.succeeded(verdict);
      return "logged in";
    });
    const fiber = yield* Effect.forkChild(attempt);
    yield* TestClock.adjust(7_999);
    assert.equal(fiber.pollUnsafe(), undefined, "still waiting");
    yield* TestClock.adjust(1);
    assert.equal(yield* Fiber.join(fiber), "logged in");
    assert.equal(delayOf(accounts, "alice", "203.0.113.7"), 0, "where she logged in, she is not slowed again");
    assert.equal(delayOf(accounts, "alice", "203.0.113.8"), 8_000, "elsewhere the guessing still counts");
  })));

test("an address failing for many accounts is refused, except for accounts that logged in from it", () =>
  withTestClock(Effect.gen(function* () {
    const { throttle } = yield* makeThrottle({ afterFailures: 100 });
    succeed(throttle, "bob@local.test", "203.0.113.5");
    for (let n = 0; n < 6; n++) fail(throttle, `user${n}`, "203.0.113.5");
    assert.deepEqual(throttle.check("dave", "203.0.113.5"), { _tag: "Refused", limit: "ip", account: "dave" });
    assert.equal(throttle.check("bob@local.test", "203.0.113.5")._tag, "Allowed", "bob logged in from there before");
    yield* TestClock.adjust(60_000);
    assert.equal(throttle.check("dave", "203.0.113.5")._tag, "Allowed");
  })));

test("a success clears the pair's failures; the pair's limit holds even where the user logged in before", () =>
  withTestClock(Effect.gen(function* () {
    const { throttle } = yield* makeThrottle({ afterFailures: 100 });
    fail(throttle, "alice", "10.0.0.1");
    fail(throttle, "alice", "10.0.0.1");
    succeed(throttle, "alice@local.test", "10.0.0.1");
    fail(throttle, "alice", "10.0.0.1");
    fail(throttle, "alice", "10.0.0.1");
    fail(throttle, "alice", "10.0.0.1");
    assert.equal(throttle.check("alice", "10.0.0.1")._tag, "Refused");
  })));

test("two protocols share the account's record (one delay, one set of known-good addresses) but keep their own limits", () =>
  withTestClock(Effect.gen(function* () {
    const { accounts } = yield* makeThrottle();
    const smtp = makeLoginThrottle(accounts, { windowMs: 60_000, maxFailuresPerIp: 2, maxFailuresPerAccountAndIp: 2 });
    const pop3 = makeLoginThrottle(accounts, limits);
    fail(smtp, "alice", "198.51.100.1");
    fail(smtp, "alice", "198.51.100.1");
    assert.equal(smtp.check("alice", "198.51.100.1")._tag, "Refused");
    fail(pop3, "alice@local.test", "198.51.100.1"); // POP3's own per-IP counts: admitted
    assert.equal(delayOf(accounts, "alice", "198.51.100.3"), 1_000, "three failures over both protocols");
    succeed(pop3, "alice@local.test", "192.0.2.10");
    assert.equal(delayOf(accounts, "alice", "192.0.2.10"), 0, "known good for SMTP too");
    assert.equal(admitted(smtp, "alice", "192.0.2.10").delayMs, 0);
  })));

test("memory is bounded: the oldest entries are dropped beyond maxEntries", () =>
  withTestClock(Effect.gen(function* () {
    const accounts = yield* makeLoginAccounts(accountOf, { ...accountDelay, maxEntries: 10 });
    const throttle = makeLoginThrottle(accounts, limits, { maxEntries: 10 });
    for (let n = 0; n < 3; n++) fail(throttle, "victim", "10.0.0.1");
    assert.equal(throttle.check("victim", "10.0.0.1")._tag, "Refused");
    for (let n = 0; n < 20; n++) fail(throttle, `spray${n}`, `10.1.0.${n}`);
    assert.deepEqual(fields(throttle.check("victim", "10.0.0.1")), { _tag: "Allowed", account: "victim", delayMs: 0 }, "the oldest entries were evicted");
  })));

test("attempts in flight together count when admitted: one IP gets its limit's worth, the rest are refused before any is answered", () =>
  withTestClock(Effect.gen(function* () {
    const { accounts, throttle } = yield* makeThrottle();
    // Forty attempts at once from one address, none answered yet (as if all waited out a delay).
    const verdicts = Array.from({ length: 40 }, (_, n) => throttle.check(`guess${n}`, "203.0.113.9"));
    assert.equal(verdicts.filter((v) => v._tag === "Allowed").length, limits.maxFailuresPerIp);
    assert.deepEqual(verdicts.at(-1), { _tag: "Refused", limit: "ip", account: "guess39" });
    // The same for one account from one address, and each attempt in flight raises the next one's delay.
    const pair = Array.from({ length: 10 }, () => fields(throttle.check("alice", "198.51.100.1")));
    assert.deepEqual(pair.slice(0, 4), [
      { _tag: "Allowed", account: "alice@local.test", delayMs: 0 },
      { _tag: "Allowed", account: "alice@local.test", delayMs: 0 },
      { _tag: "Allowed", account: "alice@local.test", delayMs: 0 },
      { _tag: "Refused", limit: "account-ip", account: "alice@local.test" },
    ]);
    assert.equal(pair.filter((v) => v._tag === "Allowed").length, limits.maxFailuresPerAccountAndIp);
    assert.deepEqual([4, 5, 6].map((n) => admitted(throttle, "alice", `198.51.100.${n}`).delayMs), [1_000, 2_000, 4_000]);
    assert.equal(delayOf(accounts, "alice", "198.51.100.9"), 8_000);
  })));

test("a client that leaves during the delay ends the attempt at once, without a password check, and it stays counted", () =>
  withTestClock(Effect.gen(function* () {
    const { throttle } = yield* makeThrottle();
    for (let n = 1; n <= 3; n++) fail(throttle, "alice", `198.51.100.${n}`);
    let passwordChecks = 0;
    // What a session does: wait the delay unless the client leaves, then check the password.
    const session = (ip: string, left: Deferred.Deferred<void>) =>
      Effect.gen(function* () {
        const attempt = admitted(throttle, "alice", ip);
        if ((yield* waitDelay(attempt, Deferred.await(left))) === "client-left") return "abandoned";
        passwordChecks++;
        return "checked";
      });
    const lefts = [yield* Deferred.make<void>(), yield* Deferred.make<void>(), yield* Deferred.make<void>()];
    const fibers = yield* Effect.forEach(lefts, (left) => Effect.forkChild(session("203.0.113.1", left)));
    yield* TestClock.adjust(500);
    assert.equal(throttle.check("alice", "203.0.113.1")._tag, "Refused", "three attempts waiting their delays fill the pair's limit");
    for (const left of lefts) yield* Deferred.succeed(left, undefined);
    assert.deepEqual(yield* Effect.forEach(fibers, Fiber.join), ["abandoned", "abandoned", "abandoned"]);
    yield* TestClock.adjust(30_000);
    assert.equal(passwordChecks, 0, "no password was checked for a client that left, even once its delay would have passed");
    assert.equal(throttle.check("alice", "203.0.113.1")._tag, "Refused", "the abandoned attempts count as failures");
  })));

test("a success takes its attempt back from the IP's and the account's counts", () =>
  withTestClock(Effect.gen(function* () {
    const { accounts, throttle } = yield* makeThrottle();
    for (let n = 0; n < 5; n++) fail(throttle, `user${n}`, "203.0.113.5");
    fail(throttle, "alice", "198.51.100.1");
    fail(throttle, "alice", "198.51.100.2");
    // Alice logs in from the crowded address after a long wait (the sub-bucket it was counted in has moved on).
    const attempt = admitted(throttle, "alice", "203.0.113.5");
    yield* TestClock.adjust(20_000);
    throttle.succeeded(attempt);
    assert.equal(throttle.check("dave", "203.0.113.5")._tag, "Allowed", "the address is at 5 failures again, not 6");
    assert.equal(delayOf(accounts, "alice", "192.0.2.1"), 0, "two failures of alice's, under N");
    fail(throttle, "alice", "198.51.100.3");
    assert.equal(delayOf(accounts, "alice", "192.0.2.1"), 1_000);
  })));

test("made-up names cannot push a real account's failures out of the bounded record, and are slowed like real ones", () =>
  withTestClock(Effect.gen(function* () {
    const accounts = yield* makeLoginAccounts(accountOf, { ...accountDelay, maxEntries: 10 });
    const throttle = makeLoginThrottle(accounts, limits, { maxEntries: 10 });
    for (let n = 0; n < 5; n++) fail(throttle, "alice", `198.51.100.${n}`);
    assert.equal(delayOf(accounts, "alice", "203.0.113.1"), 4_000);
    for (let n = 0; n < 200; n++) fail(throttle, `spray${n}@local.test`, `10.${n >> 8}.${n & 255}.1`);
    assert.equal(delayOf(accounts, "alice", "203.0.113.1"), 4_000, "alice's failures are still counted");
    // A name that exists and one that does not look the same to a guesser.
    for (let n = 0; n < 3; n++) fail(throttle, "nobody@local.test", `192.0.2.${n}`);
    for (let n = 0; n < 3; n++) fail(throttle, "bob@local.test", `192.0.2.${n}`);
    assert.equal(delayOf(accounts, "nobody@local.test", "203.0.113.1"), 1_000);
    assert.equal(delayOf(accounts, "bob@local.test", "203.0.113.1"), 1_000);
  })));

/**
 * Two nodes' records, each protocol's throttle reporting to the other node's throttle of
 * that protocol, as cluster/login-reports.ts does over NATS (here at once, in order).
 */
const makeTwoNodes = (options: Partial<AccountDelayOptions> = {}) =>
  Effect.gen(function* () {
    const reported: LoginEvent[] = [];
    const node = () => Effect.map(makeLoginAccounts(accountOf, { ...accountDelay, ...options }), (accounts) => ({ accounts, smtp: undefined as unknown as LoginThrottle, pop3: undefined as unknown as LoginThrottle }));
    const a = yield* node();
    const b = yield* node();
    const wire = (from: typeof a, to: typeof a) => {
      const peer = (protocol: "smtp" | "pop3") => (event: LoginEvent) => {
        reported.push(event);
        to[protocol].merge(event);
      };
      from.smtp = makeLoginThrottle(from.accounts, limits, { report: peer("smtp") });
      from.pop3 = makeLoginThrottle(from.accounts, limits, { report: peer("pop3") });
    };
    wire(a, b);
    wire(b, a);
    return { a, b, reported };
  });

test("merged reports: the per-IP and per-(account, IP) limits reached through one node refuse on the other", () =>
  withTestClock(Effect.gen(function* () {
    const { a, b } = yield* makeTwoNodes({ afterFailures: 100 });
    fail(a.smtp, "alice", "198.51.100.1");
    fail(b.smtp, "alice@local.test", "198.51.100.1");
    fail(a.smtp, "alice", "198.51.100.1");
    assert.deepEqual(b.smtp.check("alice", "198.51.100.1"), { _tag: "Refused", limit: "account-ip", account: "alice@local.test" });
    assert.equal(a.smtp.check("alice", "198.51.100.1")._tag, "Refused");
    assert.equal(b.pop3.check("alice", "198.51.100.1")._tag, "Allowed", "POP3 keeps its own per-IP counts");
    for (let n = 0; n < 6; n++) fail(n % 2 === 0 ? a.smtp : b.smtp, `user${n}`, "203.0.113.5");
    // Three guesses through each node: the address is at its limit of 6 on both.
    assert.deepEqual(b.smtp.check("dave", "203.0.113.5"), { _tag: "Refused", limit: "ip", account: "dave" });
    assert.deepEqual(a.smtp.check("dave", "203.0.113.5"), { _tag: "Refused", limit: "ip", account: "dave" });
    yield* TestClock.adjust(60_000);
    assert.equal(b.smtp.check("dave", "203.0.113.5")._tag, "Allowed", "merged failures age out with the window");
  })));

test("merged reports: SMTP failures on one node and POP3 failures on the other add up to one account delay", () =>
  withTestClock(Effect.gen(function* () {
    const { a, b } = yield* makeTwoNodes();
    fail(a.smtp, "alice", "198.51.100.1");
    fail(b.pop3, "alice@local.test", "198.51.100.2");
    fail(a.pop3, "alice", "198.51.100.3");
    assert.equal(delayOf(a.accounts, "alice", "198.51.100.9"), 1_000);
    assert.equal(delayOf(b.accounts, "alice", "198.51.100.9"), 1_000);
    assert.equal(admitted(b.smtp, "alice", "198.51.100.4").delayMs, 1_000);
    assert.equal(admitted(a.pop3, "alice", "198.51.100.5").delayMs, 2_000, "each node's failures raise the other's delay");
  })));

test("merged reports: a success on one node takes its failure back on the other, clears the pair and makes the address known good there", () =>
  withTestClock(Effect.gen(function* () {
    const { a, b } = yield* makeTwoNodes();
    for (let n = 0; n < 4; n++) fail(a.smtp, `user${n}`, "203.0.113.5");
    fail(b.smtp, "alice", "198.51.100.1");
    fail(b.smtp, "alice", "198.51.100.2");
    fail(b.smtp, "alice", "203.0.113.5");
    // Alice logs in on B after a long wait: the failure her attempt counted on A is in an older sub-bucket there.
    const attempt = admitted(b.smtp, "alice", "203.0.113.5");
    assert.equal(a.smtp.check("dave", "203.0.113.5")._tag, "Refused", "six failures from the address, on A too");
    yield* TestClock.adjust(20_000);
    b.smtp.succeeded(attempt);
    assert.equal(a.smtp.check("dave", "203.0.113.5")._tag, "Allowed", "the address is at 5 failures again on A, not 6");
    assert.equal(delayOf(a.accounts, "alice", "192.0.2.1"), 1_000, "alice's three failures stay, her success's attempt is taken back on A too");
    assert.equal(delayOf(a.accounts, "alice", "203.0.113.5"), 0, "known good on A");
    assert.equal(a.smtp.check("alice", "203.0.113.5")._tag, "Allowed", "exempt from the address's limit on A, and the pair's failures were cleared");
  })));

test("merged reports are not reported again (no echo between nodes)", () =>
  withTestClock(Effect.gen(function* () {
    const { a, b, reported } = yield* makeTwoNodes();
    fail(a.smtp, "alice", "198.51.100.1");
    succeed(b.pop3, "bob@local.test", "198.51.100.2");
    assert.deepEqual(reported.map((event) => event._tag), ["Failed", "Failed", "Succeeded"]);
    assert.deepEqual(reported[0], { _tag: "Failed", account: { key: "alice@local.test", exists: true }, ip: "198.51.100.1" });
  })));
