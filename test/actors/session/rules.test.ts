// The session's pure parts: line-ending checks, relay and sender policy, client guard.
import { test } from "node:test";
import assert from "node:assert/strict";
import { Effect } from "effect";
import { TestClock } from "effect/testing";
import { hasBareLineEnding, longestLine, normalizeLineEndings } from "../../../actors/session/ingest.ts";
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
  postmaster: "admin@example.test",
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

test("postmaster, bare or at a local domain, is always accepted (RFC 5321 §4.5.1)", () => {
  const withUsers = (...users: string[]) => ({ ...policy, localDomains: ["example.test", "catch.test"], isLocalUser: (a: string) => users.includes(a.toLowerCase()) });
  assert.deepEqual(decideRecipient("postmaster", client(), policy), { decision: { ok: true }, deliverTo: "admin@example.test" });
  assert.deepEqual(decideRecipient("PostMaster", client(), policy), { decision: { ok: true }, deliverTo: "admin@example.test" }, "any case");
  assert.deepEqual(decideRecipient("postmaster@example.test", client(), policy), { decision: { ok: true }, deliverTo: "admin@example.test" });
  assert.deepEqual(
    decideRecipient("postmaster@example.test", client(), withUsers("postmaster@example.test")),
    { decision: { ok: true }, deliverTo: "postmaster@example.test" },
    "a user of that name gets it",
  );
  assert.deepEqual(
    decideRecipient("postmaster@catch.test", client(), withUsers()),
    { decision: { ok: true }, deliverTo: "alice@example.test" },
    "the domain's catch-all comes before the node's postmaster",
  );
  const relay = decideRecipient("postmaster@remote.test", client(), policy).decision;
  assert.equal(relay.ok ? 0 : relay.reply.code, 554, "not for other domains: that would be relaying");
  const trusted = decideRecipient("postmaster", client({ remoteAddress: "10.1.2.3" }), { ...policy, postmaster: undefined }).decision;
  assert.equal(trusted.ok ? 0 : trusted.reply.code, 550, "without any user there is nowhere to put it, and a bare name is never relayed");
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

test("the guard limits connections and messages per IP", () =>
  withTestClock(Effect.gen(function* () {
    const guard = yield* makeClientGuard({ maxConnectionsPerIp: 2, maxMessagesPerIpPerMinute: 2 });
    assert.equal(guard.connect("1.1.1.1"), true);
    assert.equal(guard.connect("1.1.1.1"), true);
    assert.equal(guard.connect("1.1.1.1"), false);
    assert.equal(guard.connect("2.2.2.2"), true, "another IP has its own places");
    guard.disconnect("1.1.1.1");
    assert.equal(guard.connect("1.1.1.1"), true);
    assert.equal(guard.message("1.1.1.1") && guard.message("1.1.1.1"), true);
    assert.equal(guard.message("1.1.1.1"), false);
  })));

test("the guard's windows slide: the message rate frees up as the minute's oldest messages age out", () =>
  withTestClock(Effect.gen(function* () {
    const guard = yield* makeClientGuard({ maxConnectionsPerIp: 10, maxMessagesPerIpPerMinute: 3 });
    assert.equal(guard.message("1.1.1.1"), true);
    yield* TestClock.adjust(30_000);
    assert.equal(guard.message("1.1.1.1") && guard.message("1.1.1.1"), true);
    assert.equal(guard.message("1.1.1.1"), false, "three in the last minute");
    yield* TestClock.adjust(30_000);
    assert.equal(guard.message("1.1.1.1"), true, "the first one left the window");
    assert.equal(guard.message("1.1.1.1"), false, "the two from 30 s ago still count");
  })));

test("a recipient or sender domain that cannot exist is refused for good, before relay and user checks", () => {
  const longLabel = `x@${"a".repeat(64)}.example.test`;
  for (const address of ["x@a..example.test", longLabel, "x@example.test."]) {
    const decision = decideRecipient(address, client({ user: "alice@example.test" }), policy).decision;
    assert.deepEqual(decision.ok ? undefined : [decision.reply.code, decision.reply.text.slice(0, 6), decision.reason], [501, "5.1.3 ", "bad-recipient-domain"], address);
  }
  const sender = decideSender(longLabel, client(), () => true);
  assert.deepEqual(sender.ok ? undefined : [sender.reply.code, sender.reply.text.slice(0, 6), sender.reason], [501, "5.1.7 ", "bad-sender-domain"]);
  assert.equal(decideSender("", client(), () => false).ok, true, "the null sender has no domain to check");
  assert.equal(decideRecipient("x@[192.0.2.1]", client({ remoteAddress: "10.1.2.3" }), policy).decision.ok, true, "address literals relay as before");
  assert.equal(decideRecipient("x@[IPv6:2001:db8::1]", client({ remoteAddress: "10.1.2.3" }), policy).decision.ok, true);
});

test("the indexOf scans agree with a byte-by-byte reading on random chunks of CR, LF and text", () => {
  // The reference: every byte looked at, as the scans were first written.
  const bareReference = (chunk: Uint8Array, carryCR: boolean) => {
    for (let i = 0; i < chunk.length; i++) {
      const previous = i === 0 ? (carryCR ? 13 : -1) : chunk[i - 1]!;
      if (chunk[i] === 10 && previous !== 13) return true;
      if (previous === 13 && chunk[i] !== 10) return true;
    }
    return false;
  };
  const longestReference = (chunk: Uint8Array, run: number) => {
    let longest = 0;
    let current = run;
    for (const byte of chunk) {
      if (byte === 10) {
        longest = Math.max(longest, current);
        current = 0;
      } else if (byte !== 13) current++;
    }
    return { longest: Math.max(longest, current), run: current };
  };
  let seed = 7;
  const random = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
  const alphabet = [13, 10, 13, 10, 120, 120, 120, 46];
  for (let n = 0; n < 5_000; n++) {
    const chunk = Buffer.from(Array.from({ length: Math.floor(random() * 24) }, () => alphabet[Math.floor(random() * alphabet.length)]!));
    const carry = random() < 0.5;
    const run = Math.floor(random() * 5);
    assert.equal(hasBareLineEnding(chunk, carry), bareReference(chunk, carry), `bare: ${JSON.stringify(chunk.toString("latin1"))} carry ${carry}`);
    assert.deepEqual(longestLine(chunk, run), longestReference(chunk, run), `longest: ${JSON.stringify(chunk.toString("latin1"))} run ${run}`);
  }
});

test("a chunk of empty bare-LF lines is measured in one pass: a megabyte of them does not stall the session", { timeout: 10_000 }, () => {
  // Searching each line's CR to the chunk's end would take about 5·10^11 steps here (minutes);
  // within the line it is a million short lines (milliseconds).
  const chunk = Buffer.alloc(1024 * 1024, 0x0a);
  assert.deepEqual(longestLine(chunk, 0), { longest: 0, run: 0 });
  const withText = Buffer.concat([Buffer.from("abc\r"), chunk, Buffer.from("de")]);
  assert.deepEqual(longestLine(withText, 2), { longest: 5, run: 2 });
});
