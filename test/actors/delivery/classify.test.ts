// Reply parsing and bounce classification: enhanced codes first when they are specific,
// the operator's rules before everything else that reads text.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Effect } from "effect";
import { loadRules, makeClassifier, parseRules } from "../../../actors/delivery/classify.ts";
import type { RecipientResult, Reply } from "../../../protocol/delivery.ts";
import { parseReply } from "../../../protocol/smtp-reply.ts";

/** A reply as smtp-client makes it from the wire. */
const reply = (raw: string): Reply => {
  const parsed = parseReply(raw);
  assert.ok(parsed, `${raw} is an SMTP reply`);
  return parsed;
};

test("replies parse into code, enhanced code and text, multi-line included; other text is no reply", () => {
  assert.deepEqual(parseReply("550 5.1.1 <x@y>: Recipient address rejected"), { _tag: "Reply", code: 550, enhanced: "5.1.1", text: "<x@y>: Recipient address rejected" });
  assert.deepEqual(parseReply("452-4.2.2 The email account that you tried to reach is over quota.\r\n452 4.2.2 Please direct the recipient to ..."), {
    _tag: "Reply",
    code: 452,
    enhanced: "4.2.2",
    text: "The email account that you tried to reach is over quota. Please direct the recipient to ...",
  });
  assert.deepEqual(parseReply("250"), { _tag: "Reply", code: 250, text: "" });
  assert.equal(parseReply("550 4.1.1 mismatched class")?.enhanced, undefined, "the enhanced class must match the basic code");
  assert.equal(parseReply("ECONNREFUSED: connect ECONNREFUSED 127.0.0.2:25"), undefined);
  assert.equal(parseReply("2500 not a code"), undefined);
});

test("each category from its enhanced code", () => {
  const classify = makeClassifier();
  const cases: Array<[string, string]> = [
    ["550 5.1.1 user unknown", "bad-mailbox"],
    ["550 5.2.1 mailbox disabled", "bad-mailbox"],
    ["550 5.1.2 host not found", "bad-domain"],
    ["556 5.1.10 null MX", "bad-domain"],
    ["550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup", "bad-mailbox"],
    ["552 5.2.2 mailbox full", "quota"],
    ["552 5.3.4 message too big for system", "too-large"],
    ["550 5.7.1 message rejected as spam", "policy"],
    ["421 4.7.0 TLS required", "tls"],
    ["530 5.7.10 encryption needed", "tls"],
    ["421 4.7.28 unusual rate of unsolicited mail", "rate-limited"],
    ["451 4.4.3 directory server failure", "dns"],
    ["554 5.0.0 something else", "other"],
  ];
  for (const [raw, category] of cases) assert.equal(classify(reply(raw)), category, raw);
});

test("generic codes are read by their text", () => {
  const classify = makeClassifier();
  assert.equal(classify(reply("451 4.7.1 Rate limit exceeded, slow down")), "rate-limited");
  assert.equal(classify(reply("550 5.7.1 Service unavailable; client host blocked using zen.spamhaus.org")), "policy");
  assert.equal(classify(reply("550 5.0.0 Mailbox is full")), "quota");
  assert.equal(classify(reply("550 Requested action not taken: mailbox unavailable")), "bad-mailbox");
});

test("a failure is classified by its tag; a host that refused the connection by the reply it gave", () => {
  const classify = makeClassifier();
  const cases: Array<[RecipientResult, string]> = [
    [{ _tag: "DnsTemporary", domain: "x.test", detail: "MX x.test: SERVFAIL", rcode: "SERVFAIL" }, "dns"],
    [{ _tag: "DnsPermanent", domain: "x.test", reason: "nxdomain", detail: "MX x.test: NXDOMAIN" }, "bad-domain"],
    [{ _tag: "DnsPermanent", domain: "x.test", reason: "null-mx", detail: "null MX" }, "bad-domain"],
    [{ _tag: "TlsFailed", detail: "ETLS: handshake failed" }, "tls"],
    [{ _tag: "TlsFailed", detail: "STARTTLS refused", reply: reply("454 4.7.0 slow down, too many connections") }, "tls"],
    [{ _tag: "Timeout", detail: "ETIMEDOUT: Timeout" }, "other"],
    [{ _tag: "ConnectionFailed", detail: "ECONNREFUSED: connect ECONNREFUSED 192.0.2.1:25" }, "other"],
    [{ _tag: "ConnectionFailed", detail: "greeting refused", reply: reply("421 4.7.0 Too many connections from your IP, slow down") }, "rate-limited"],
    [{ _tag: "ConnectionFailed", detail: "greeting refused", reply: reply("554 5.7.1 client host blocked using zen.spamhaus.org") }, "policy"],
    [{ _tag: "OverQuota", user: "u@local.test", usedBytes: 3_900, quotaBytes: 4_000, messageBytes: 500 }, "quota"],
    [{ _tag: "UnknownUser", user: "u@local.test" }, "bad-mailbox"],
    [{ _tag: "MailboxUnavailable", user: "u@local.test", error: "MailboxUnavailable", detail: "owner node n2 does not answer" }, "other"],
    [{ _tag: "TooLarge", detail: "Message size larger than allowed 1000" }, "too-large"],
    [{ _tag: "ConversionFailed", missing: "8BITMIME", detail: "8-bit multipart/mixed body" }, "other"],
    [{ _tag: "QueueWaitExceeded", limitMs: 60_000 }, "rate-limited"],
    [{ _tag: "Returned", reason: "spam run" }, "other"],
  ];
  for (const [result, category] of cases) assert.equal(classify(result), category, JSON.stringify(result));
});

test("the operator's rules come first, optionally per reply class; bad rules are refused", async () => {
  const rules = await Effect.runPromise(parseRules("rules.json", JSON.stringify([
    { match: "mailbox unavailable", category: "quota", class: "4" },
    { match: "5\\.1\\.1 .*suspended", category: "policy" },
  ])));
  const classify = makeClassifier(rules);
  assert.equal(classify(reply("450 4.2.0 mailbox unavailable")), "quota");
  assert.equal(classify(reply("550 5.2.0 mailbox unavailable")), "bad-mailbox", "the rule is for 4xx only");
  assert.equal(classify(reply("550 5.1.1 account suspended")), "policy", "the rule wins over a specific enhanced code");
  assert.equal(classify({ _tag: "MailboxUnavailable", user: "u@local.test", error: "StoreError", detail: "mailbox unavailable" }), "other", "rules read replies, not this node's own failures");
  const bad = await Effect.runPromise(Effect.flip(parseRules("rules.json", JSON.stringify([{ match: "(", category: "quota" }]))));
  assert.equal(bad._tag, "RulesFileError");
  const unknown = await Effect.runPromise(Effect.flip(parseRules("rules.json", JSON.stringify([{ match: "x", category: "weird" }]))));
  assert.equal(unknown._tag, "RulesFileError");
});

test("the rules file is read from disk; a missing one is a typed error", async () => {
  const dir = await mkdtemp(join(tmpdir(), "tern-rules-"));
  try {
    const path = join(dir, "bounce-rules.json");
    await writeFile(path, JSON.stringify([{ match: "greylist", category: "other", class: "4" }]));
    const classify = makeClassifier(await Effect.runPromise(loadRules(path)));
    assert.equal(classify(reply("451 4.7.1 Greylisted, see https://example.org/greylisting")), "other");
    assert.equal(makeClassifier()(reply("451 4.7.1 Greylisted, see https://example.org/greylisting")), "policy", "without the rule");
    const missing = await Effect.runPromise(Effect.flip(loadRules(join(dir, "nope.json"))));
    assert.equal(missing._tag, "RulesFileError");
    assert.match(missing.detail, /ENOENT/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
