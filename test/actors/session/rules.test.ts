// The session's pure parts: line-ending checks, relay and sender policy, client guard.
import { test } from "node:test";
import assert from "node:assert/strict";
import { Effect } from "effect";
import { TestClock } from "effect/testing";
import { hasBareLineEnding, normalizeLineEndings } from "../../../actors/session/ingest.ts";
import { decideRecipient, decideSender } from "../../../actors/session/policy.ts";
import { makeClientGuard } from "../../../actors/session/guard.ts";

const bytes = (text: string) => Buffer.from(text, "latin1");

test("bare CR and bare LF are found, also across chunk boundaries", () => {
  assert.equal(hasBareLineEnding(bytes("a\r\nb\r\n"), false), false);
  assert.equal(hasBareLineEnding(bytes("a\nb"), false), true);
  assert.equal(hasBareLineEnding(bytes("a\rb"), false), true);
  assert.equal(hasBareLineEnding(bytes("\nrest"), true), false); // CR ended the previous chunk
  assert.equal(hasBareLineEnding(bytes("rest"), true), true); // that CR was bare
  assert.equal(hasBareLineEnding(bytes("\n.\n"), false), true);
});

test("normalising turns every bare CR and LF into CRLF and keeps CRLF as it is", () => {
  const whole = (chunks: string[]) => {
    let carry = false;
    const out: Buffer[] = [];
    for (const chunk of chunks) {
      const result = normalizeLineEndings(bytes(chunk), carry);
      carry = result.endsInCR;
      out.push(result.out);
    }
    if (carry) out.push(bytes("\r\n"));
    return Buffer.concat(out).toString("latin1");
  };
  assert.equal(whole(["a\nb\rc\r\nd"]), "a\r\nb\r\nc\r\nd");
  assert.equal(whole(["a\r", "\nb"]), "a\r\nb");
  assert.equal(whole(["a\r", "b"]), "a\r\nb");
  assert.equal(whole(["x\n.\n"]), "x\r\n.\r\n");
  assert.equal(whole(["end\r"]), "end\r\n");
});

const policy = {
  localDomains: ["example.test"],
  isLocalUser: (a: string) => a.toLowerCase() === "alice@example.test",
  catchAll: { "catch.test": "alice@example.test" } as Record<string, string>,
  trustedNetworks: ["10.0.0.0/8"],
};
const client = (over: Partial<{ remoteAddress: string; user: string | undefined; smtpUtf8: boolean }> = {}) => ({
  remoteAddress: "203.0.113.9",
  user: undefined,
  smtpUtf8: false,
  ...over,
});

test("no open relay: other domains only for authenticated users or trusted networks", () => {
  assert.equal(decideRecipient("alice@example.test", client(), policy).decision.ok, true);
  const relay = decideRecipient("x@remote.test", client(), policy).decision;
  assert.deepEqual(relay.ok ? undefined : relay.reply, { code: 554, text: "5.7.1 Relay access denied" });
  assert.equal(decideRecipient("x@remote.test", client({ user: "alice@example.test" }), policy).decision.ok, true);
  assert.equal(decideRecipient("x@remote.test", client({ remoteAddress: "10.1.2.3" }), policy).decision.ok, true);
});

test("unknown local users get 550 5.1.1 unless the domain has a catch-all", () => {
  const unknown = decideRecipient("bob@example.test", client(), policy).decision;
  assert.equal(unknown.ok ? 0 : unknown.reply.code, 550);
  assert.deepEqual(decideRecipient("anyone@catch.test", client(), { ...policy, localDomains: ["catch.test"] }), {
    decision: { ok: true },
    deliverTo: "alice@example.test",
  });
});

test("non-ASCII addresses need SMTPUTF8; authenticated senders only use their own addresses", () => {
  const utf8 = decideRecipient("josé@example.test", client(), policy).decision;
  assert.equal(utf8.ok ? 0 : utf8.reply.code, 553);
  const owns = (user: string, address: string) => user === address;
  assert.equal(decideSender("alice@example.test", client({ user: "alice@example.test" }), owns).ok, true);
  const spoof = decideSender("bob@example.test", client({ user: "alice@example.test" }), owns);
  assert.equal(spoof.ok ? "" : spoof.reply.text.slice(0, 5), "5.7.1");
  assert.equal(decideSender("", client({ user: "alice@example.test" }), owns).ok, true); // bounces stay possible
  assert.equal(decideSender("anyone@x.test", client(), owns).ok, true); // MX traffic: no owner check
});

/** Runs a test body with a TestClock as the Clock (it starts at 0 and moves only when adjusted). */
const withTestClock = (body: Effect.Effect<void>) => Effect.runPromise(Effect.provide(body, TestClock.layer()));

test("the guard limits connections and failed logins per IP and per (user, IP), and forgets with time", () =>
  withTestClock(Effect.gen(function* () {
    const guard = yield* makeClientGuard({
      maxConnectionsPerIp: 2,
      maxMessagesPerIpPerMinute: 2,
      maxAuthFailuresPerIp: 4,
      maxAuthFailuresPerUserAndIp: 2,
      authFailureWindowMs: 1000,
    });
    assert.equal(guard.connect("1.1.1.1"), true);
    assert.equal(guard.connect("1.1.1.1"), true);
    assert.equal(guard.connect("1.1.1.1"), false);
    guard.disconnect("1.1.1.1");
    assert.equal(guard.connect("1.1.1.1"), true);
    assert.equal(guard.message("1.1.1.1") && guard.message("1.1.1.1"), true);
    assert.equal(guard.message("1.1.1.1"), false);

    guard.authFailed("1.1.1.1", "bob");
    guard.authFailed("1.1.1.1", "bob");
    assert.equal(guard.authBlocked("1.1.1.1", "bob"), true);
    assert.equal(guard.authBlocked("2.2.2.2", "bob"), false, "bob from elsewhere is not locked out");
    assert.equal(guard.authBlocked("1.1.1.1", "carol"), false);
    guard.authFailed("1.1.1.1", "carol");
    guard.authFailed("1.1.1.1", "dave");
    assert.equal(guard.authBlocked("1.1.1.1", "erin"), true, "the IP as a whole is over its limit");
    yield* TestClock.adjust(1500);
    assert.equal(guard.authBlocked("1.1.1.1", "bob"), false);
  })));

test("the guard's windows slide: the message rate frees up as the minute's oldest messages age out", () =>
  withTestClock(Effect.gen(function* () {
    const guard = yield* makeClientGuard({
      maxConnectionsPerIp: 10,
      maxMessagesPerIpPerMinute: 3,
      maxAuthFailuresPerIp: 10,
      maxAuthFailuresPerUserAndIp: 2,
      authFailureWindowMs: 10_000,
    });
    assert.equal(guard.message("1.1.1.1"), true);
    yield* TestClock.adjust(30_000);
    assert.equal(guard.message("1.1.1.1") && guard.message("1.1.1.1"), true);
    assert.equal(guard.message("1.1.1.1"), false, "three in the last minute");
    yield* TestClock.adjust(30_000);
    assert.equal(guard.message("1.1.1.1"), true, "the first one left the window");
    assert.equal(guard.message("1.1.1.1"), false, "the two from 30 s ago still count");

    guard.authFailed("1.1.1.1", "bob");
    yield* TestClock.adjust(5_000);
    guard.authFailed("1.1.1.1", "bob");
    assert.equal(guard.authBlocked("1.1.1.1", "bob"), true);
    yield* TestClock.adjust(5_000);
    assert.equal(guard.authBlocked("1.1.1.1", "bob"), false, "the older failure is out of the window");
    yield* TestClock.adjust(4_000);
    guard.authFailed("1.1.1.1", "bob");
    assert.equal(guard.authBlocked("1.1.1.1", "bob"), true, "the newer one still counts");
  })));
