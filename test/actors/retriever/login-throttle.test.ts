// Failed-login limits under TestClock: per IP, per user, per (user, IP), and the
// known-good exemption that keeps an attacker from locking the real user out.
import { test } from "node:test";
import assert from "node:assert/strict";
import { Effect } from "effect";
import { TestClock } from "effect/testing";
import { makeLoginThrottle, type LoginThrottleOptions } from "../../../actors/retriever/login-throttle.ts";

const options: LoginThrottleOptions = {
  windowMs: 60_000,
  maxFailuresPerIp: 6,
  maxFailuresPerUser: 4,
  maxFailuresPerUserAndIp: 3,
  rememberGoodIpMs: 86_400_000,
  maxEntries: 1_000,
};

/** Runs a test body with a TestClock as the Clock (it starts at 0 and moves only when adjusted). */
const withTestClock = (body: Effect.Effect<void>) => Effect.runPromise(Effect.provide(body, TestClock.layer()));

test("the (user, IP) pair is refused after its limit, and again allowed once the window passes", () =>
  withTestClock(Effect.gen(function* () {
    const throttle = yield* makeLoginThrottle(options);
    for (let n = 0; n < 3; n++) {
      assert.equal(throttle.check("alice", "10.0.0.1"), "allowed");
      throttle.failed("alice", "10.0.0.1");
    }
    assert.equal(throttle.check("alice", "10.0.0.1"), "user-ip");
    assert.equal(throttle.check("ALICE", "10.0.0.1"), "user-ip", "user names compare case-insensitively");
    assert.equal(throttle.check("alice", "10.0.0.2"), "allowed", "other addresses are not the pair");
    yield* TestClock.adjust(59_999);
    assert.equal(throttle.check("alice", "10.0.0.1"), "user-ip", "still inside the window");
    yield* TestClock.adjust(1);
    assert.equal(throttle.check("alice", "10.0.0.1"), "allowed");
  })));

test("failures older than the window stop counting: a new window starts with the next failure", () =>
  withTestClock(Effect.gen(function* () {
    const throttle = yield* makeLoginThrottle(options);
    for (let n = 0; n < 5; n++) throttle.failed(`user${n}`, "203.0.113.9");
    yield* TestClock.adjust(60_000);
    // Five old failures and one new one: under the per-IP limit of 6.
    throttle.failed("user5", "203.0.113.9");
    assert.equal(throttle.check("someone", "203.0.113.9"), "allowed");
    for (let n = 0; n < 5; n++) throttle.failed(`user${n}`, "203.0.113.9");
    assert.equal(throttle.check("someone", "203.0.113.9"), "ip", "six failures inside the new window");
  })));

test("a user attacked from many addresses is refused from new addresses, but not from one they used before", () =>
  withTestClock(Effect.gen(function* () {
    const throttle = yield* makeLoginThrottle(options);
    throttle.succeeded("alice", "192.0.2.10"); // alice's usual address
    for (let n = 1; n <= 4; n++) throttle.failed("alice", `198.51.100.${n}`);
    assert.equal(throttle.check("alice", "198.51.100.99"), "user");
    assert.equal(throttle.check("alice", "192.0.2.10"), "allowed", "the real user is not locked out");
    assert.equal(throttle.check("bob", "198.51.100.99"), "allowed");
  })));

test("an address failing for many users is refused for everyone it has not logged in as", () =>
  withTestClock(Effect.gen(function* () {
    const throttle = yield* makeLoginThrottle(options);
    throttle.succeeded("carol", "203.0.113.5");
    for (let n = 0; n < 6; n++) throttle.failed(`user${n}`, "203.0.113.5");
    assert.equal(throttle.check("dave", "203.0.113.5"), "ip");
    assert.equal(throttle.check("carol", "203.0.113.5"), "allowed", "carol logged in from there before");
  })));

test("a success clears the pair's failures; known-good addresses are forgotten after a while", () =>
  withTestClock(Effect.gen(function* () {
    const throttle = yield* makeLoginThrottle(options);
    throttle.failed("alice", "10.0.0.1");
    throttle.failed("alice", "10.0.0.1");
    throttle.succeeded("alice", "10.0.0.1");
    throttle.failed("alice", "10.0.0.1");
    throttle.failed("alice", "10.0.0.1");
    assert.equal(throttle.check("alice", "10.0.0.1"), "allowed");
    for (let n = 1; n <= 4; n++) throttle.failed("alice", `10.9.0.${n}`);
    yield* TestClock.adjust(30_000);
    assert.equal(throttle.check("alice", "10.0.0.1"), "allowed");
    yield* TestClock.adjust(86_400_000); // the known-good mark lapses, and so do the failures
    assert.equal(throttle.check("alice", "10.0.0.1"), "allowed");
  })));

test("memory is bounded: the oldest entries are dropped beyond maxEntries", () =>
  withTestClock(Effect.gen(function* () {
    const throttle = yield* makeLoginThrottle({ ...options, maxEntries: 10 });
    for (let n = 0; n < 3; n++) throttle.failed("victim", "10.0.0.1");
    assert.equal(throttle.check("victim", "10.0.0.1"), "user-ip");
    for (let n = 0; n < 20; n++) throttle.failed(`spray${n}`, `10.1.0.${n}`);
    assert.equal(throttle.check("victim", "10.0.0.1"), "allowed", "the oldest pair was evicted");
  })));
