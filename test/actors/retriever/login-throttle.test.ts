// Failed-login limits with a controlled clock: per IP, per user, per (user, IP), and the
// known-good exemption that keeps an attacker from locking the real user out.
import { test } from "node:test";
import assert from "node:assert/strict";
import { makeLoginThrottle, type LoginThrottleOptions } from "../../../actors/retriever/login-throttle.ts";

const options: LoginThrottleOptions = {
  windowMs: 60_000,
  maxFailuresPerIp: 6,
  maxFailuresPerUser: 4,
  maxFailuresPerUserAndIp: 3,
  rememberGoodIpMs: 86_400_000,
  maxEntries: 1_000,
};

const setup = () => {
  const clock = { now: 0 };
  return { clock, throttle: makeLoginThrottle(options, () => clock.now) };
};

test("the (user, IP) pair is refused after its limit, and again allowed once the window passes", () => {
  const { clock, throttle } = setup();
  for (let n = 0; n < 3; n++) {
    assert.equal(throttle.check("alice", "10.0.0.1"), "allowed");
    throttle.failed("alice", "10.0.0.1");
  }
  assert.equal(throttle.check("alice", "10.0.0.1"), "user-ip");
  assert.equal(throttle.check("ALICE", "10.0.0.1"), "user-ip", "user names compare case-insensitively");
  assert.equal(throttle.check("alice", "10.0.0.2"), "allowed", "other addresses are not the pair");
  clock.now += 60_000;
  assert.equal(throttle.check("alice", "10.0.0.1"), "allowed");
});

test("a user attacked from many addresses is refused from new addresses, but not from one they used before", () => {
  const { throttle } = setup();
  throttle.succeeded("alice", "192.0.2.10"); // alice's usual address
  for (let n = 1; n <= 4; n++) throttle.failed("alice", `198.51.100.${n}`);
  assert.equal(throttle.check("alice", "198.51.100.99"), "user");
  assert.equal(throttle.check("alice", "192.0.2.10"), "allowed", "the real user is not locked out");
  assert.equal(throttle.check("bob", "198.51.100.99"), "allowed");
});

test("an address failing for many users is refused for everyone it has not logged in as", () => {
  const { throttle } = setup();
  throttle.succeeded("carol", "203.0.113.5");
  for (let n = 0; n < 6; n++) throttle.failed(`user${n}`, "203.0.113.5");
  assert.equal(throttle.check("dave", "203.0.113.5"), "ip");
  assert.equal(throttle.check("carol", "203.0.113.5"), "allowed", "carol logged in from there before");
});

test("a success clears the pair's failures; known-good addresses are forgotten after a while", () => {
  const { clock, throttle } = setup();
  throttle.failed("alice", "10.0.0.1");
  throttle.failed("alice", "10.0.0.1");
  throttle.succeeded("alice", "10.0.0.1");
  throttle.failed("alice", "10.0.0.1");
  throttle.failed("alice", "10.0.0.1");
  assert.equal(throttle.check("alice", "10.0.0.1"), "allowed");
  for (let n = 1; n <= 4; n++) throttle.failed("alice", `10.9.0.${n}`);
  clock.now += 30_000;
  assert.equal(throttle.check("alice", "10.0.0.1"), "allowed");
  clock.now += 86_400_000; // the known-good mark lapses, and so do the failures
  assert.equal(throttle.check("alice", "10.0.0.1"), "allowed");
});

test("memory is bounded: the oldest entries are dropped beyond maxEntries", () => {
  const clock = { now: 0 };
  const throttle = makeLoginThrottle({ ...options, maxEntries: 10 }, () => clock.now);
  for (let n = 0; n < 3; n++) throttle.failed("victim", "10.0.0.1");
  assert.equal(throttle.check("victim", "10.0.0.1"), "user-ip");
  for (let n = 0; n < 20; n++) throttle.failed(`spray${n}`, `10.1.0.${n}`);
  assert.equal(throttle.check("victim", "10.0.0.1"), "allowed", "the oldest pair was evicted");
});
