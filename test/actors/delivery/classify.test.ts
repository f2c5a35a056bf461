// Reply parsing and bounce classification: enhanced codes first when they are specific,
// the operator's rules before everything else that reads text.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Effect } from "effect";
import { loadRules, makeClassifier, parseRules } from "../../../actors/delivery/classify.ts";
import { parseReply, statusOf } from "../../../actors/delivery/reply.ts";

test("replies parse into code, enhanced code and text, multi-line included", () => {
  assert.deepEqual(parseReply("550 5.1.1 <x@y>: Recipient address rejected"), { code: 550, enhanced: "5.1.1", text: "<x@y>: Recipient address rejected" });
  assert.deepEqual(parseReply("452-4.2.2 The email account that you tried to reach is over quota.\r\n452 4.2.2 Please direct the recipient to ..."), {
    code: 452,
    enhanced: "4.2.2",
    text: "The email account that you tried to reach is over quota. Please direct the recipient to ...",
  });
  assert.equal(parseReply("550 4.1.1 mismatched class").enhanced, undefined, "the enhanced class must match the basic code");
  assert.equal(parseReply("ECONNREFUSED: connect ECONNREFUSED 127.0.0.2:25").code, undefined);
  assert.equal(statusOf(parseReply("554 no enhanced code"), "5"), "5.0.0");
  assert.equal(statusOf(parseReply("ETIMEDOUT"), "4"), "4.0.0");
});

test("each category from its enhanced code", () => {
  const classify = makeClassifier();
  const cases: Array<[string, string]> = [
    ["550 5.1.1 user unknown", "bad-mailbox"],
    ["550 5.2.1 mailbox disabled", "bad-mailbox"],
    ["550 5.1.2 host not found", "bad-domain"],
    ["556 5.1.10 null MX", "bad-domain"],
    ["552 5.2.2 mailbox full", "quota"],
    ["552 5.3.4 message too big for system", "too-large"],
    ["550 5.7.1 message rejected as spam", "policy"],
    ["421 4.7.0 TLS required", "tls"],
    ["530 5.7.10 encryption needed", "tls"],
    ["421 4.7.28 unusual rate of unsolicited mail", "rate-limited"],
    ["451 4.4.3 directory server failure", "dns"],
    ["554 5.0.0 something else", "other"],
  ];
  for (const [reply, category] of cases) assert.equal(classify(reply), category, reply);
});

test("generic codes are read by their text; troubles without a reply by what went wrong", () => {
  const classify = makeClassifier();
  assert.equal(classify("451 4.7.1 Rate limit exceeded, slow down"), "rate-limited");
  assert.equal(classify("550 5.7.1 Service unavailable; client host blocked using zen.spamhaus.org"), "policy");
  assert.equal(classify("550 5.0.0 Mailbox is full"), "quota");
  assert.equal(classify("550 Requested action not taken: mailbox unavailable"), "bad-mailbox");
  assert.equal(classify("ETIMEDOUT: Timeout", "timeout"), "other");
  assert.equal(classify("ECONNRESET", "tls"), "tls");
  assert.equal(classify("451 4.4.3 SERVFAIL", "dns"), "dns");
  assert.equal(classify("550 5.1.2 NXDOMAIN", "dns"), "bad-domain", "a definite DNS answer is a bad domain");
});

test("the operator's rules come first, optionally per reply class; bad rules are refused", async () => {
  const rules = await Effect.runPromise(parseRules("rules.json", JSON.stringify([
    { match: "mailbox unavailable", category: "quota", class: "4" },
    { match: "5\\.1\\.1 .*suspended", category: "policy" },
  ])));
  const classify = makeClassifier(rules);
  assert.equal(classify("450 4.2.0 mailbox unavailable"), "quota");
  assert.equal(classify("550 5.2.0 mailbox unavailable"), "bad-mailbox", "the rule is for 4xx only");
  assert.equal(classify("550 5.1.1 account suspended"), "policy", "the rule wins over a specific enhanced code");
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
    assert.equal(classify("451 4.7.1 Greylisted, see https://example.org/greylisting"), "other");
    assert.equal(makeClassifier()("451 4.7.1 Greylisted, see https://example.org/greylisting"), "policy", "without the rule");
    const missing = await Effect.runPromise(Effect.flip(loadRules(join(dir, "nope.json"))));
    assert.equal(missing._tag, "RulesFileError");
    assert.match(missing.detail, /ENOENT/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
