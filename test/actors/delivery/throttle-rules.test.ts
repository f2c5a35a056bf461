// Throttle rules: the starter table against the replies the large providers send, and the
// operator's rules file (added rules first, starters changed by name, errors naming the field).
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Effect } from "effect";
import { DEFAULT_PAUSE_MS, loadThrottleRules, makeThrottleMatcher, parseThrottleRules, starterThrottleRules } from "../../../actors/delivery/throttle-rules.ts";
import type { Reply } from "../../../protocol/delivery.ts";
import { parseReply } from "../../../protocol/smtp-reply.ts";

/** A reply as the SMTP client parses it from the wire. */
const reply = (line: string): Reply => parseReply(line)!;

const starters = makeThrottleMatcher(starterThrottleRules);
const verdict = (line: string, match = starters) => {
  const rule = match(reply(line));
  return rule ? `${rule.name}:${rule.action._tag}${rule.action._tag === "pause" ? `:${rule.action.ms / 60_000}m` : ""}` : undefined;
};

test("the starter rules know the large providers' throttling replies", () => {
  const cases: Array<[string, string | undefined]> = [
    ["421 4.7.28 [192.0.2.1] Our system has detected an unusual rate of unsolicited mail originating from your IP address.", "gmail-unusual-rate:pause:15m"],
    ["421 4.7.0 [192.0.2.1] Our system has detected that this message is suspicious due to the very low reputation of the sending IP address.", "gmail-low-reputation:pause:30m"],
    ["421 4.7.0 [192.0.2.1] Our system has detected an unusual rate of unsolicited mail; temporarily rate limited", "gmail-rate-limited:slow"],
    ["451 4.7.650 The mail server [192.0.2.1] has been temporarily rate limited due to IP reputation.", "microsoft-ip-reputation:pause:30m"],
    ["451 4.7.500 Server busy. Please try again later from [192.0.2.1]. (S77719)", "microsoft-server-busy:slow"],
    ["421 4.7.0 [TSS04] Messages from 192.0.2.1 temporarily deferred due to unexpected volume or user complaints", "yahoo-tss04:pause:30m"],
    ["421 4.7.0 [TS01] Messages from 192.0.2.1 temporarily deferred due to user complaints", "yahoo-ts01:pause:60m"],
    ["421 4.7.0 [TS03] All messages from 192.0.2.1 will be permanently deferred; Retrying will NOT succeed.", "yahoo-ts03:pause:240m"],
    ["421 4.7.0 Too many connections from your IP", "too-many-connections:slow"],
    ["450 4.4.5 Too many concurrent SMTP connections", "too-many-connections:slow"],
    ["452 4.3.1 rate limit exceeded, slow down", "rate-limited:slow"],
    ["451 4.7.1 Please try again later", "try-again-later:slow"],
    // Not the site's pace: greylisting, one mailbox receiving too fast, ordinary deferrals and bounces.
    ["451 4.7.1 Greylisted, please try again later", "greylisting:ignore"],
    ["450 4.2.1 The user you are trying to contact is receiving mail at a rate that prevents additional messages", "recipient-rate:ignore"],
    ["451 4.3.0 Mail server temporarily rejected message", undefined],
    ["550 5.1.1 no such user", undefined],
    ["250 2.0.0 OK rate limit notice", undefined],
  ];
  for (const [line, expected] of cases) assert.equal(verdict(line), expected, line);
});

test("the rules file adds rules before the starters and changes a starter by its name", async () => {
  const rules = await Effect.runPromise(
    parseThrottleRules("throttle.json", JSON.stringify([
      { name: "acme-slow", code: 451, match: "acme says hold back", action: "slow" },
      { name: "gmail-unusual-rate", pauseMs: 3_600_000 },
      { name: "try-again-later", action: "ignore" },
      { name: "acme-pause", enhanced: "4.7.99", action: "pause" },
    ])),
  );
  const match = makeThrottleMatcher(rules);
  assert.deepEqual(rules.slice(0, 2).map((rule) => rule.name), ["acme-slow", "acme-pause"], "added rules come first, in file order");
  assert.equal(rules.length, starterThrottleRules.length + 2);
  assert.equal(verdict("451 4.7.0 acme says hold back", match), "acme-slow:slow");
  assert.equal(verdict("421 4.7.0 acme says hold back", match), undefined, "code 451 only; and no starter matches");
  assert.equal(verdict("421 4.7.28 unusual rate", match), "gmail-unusual-rate:pause:60m", "the starter keeps its match, takes the new pause");
  assert.equal(verdict("451 4.7.1 Please try again later", match), "try-again-later:ignore");
  assert.equal(verdict("451 4.7.99 hold on", match), `acme-pause:pause:${DEFAULT_PAUSE_MS / 60_000}m`, "pause without pauseMs: the default");
});

test("a bad rules file is refused with the rule and field named", async () => {
  const problem = async (rules: unknown) => (await Effect.runPromise(Effect.flip(parseThrottleRules("throttle.json", JSON.stringify(rules))))).detail;
  assert.match(await problem([{ name: "a", match: "x", action: "pause", pauseMs: -5 }]), /\[0\]\.pauseMs = -5: Expected a value greater than or equal to 1/);
  assert.match(await problem([{ name: "a", match: "x", action: "stop" }]), /\[0\]\.action = "stop"/);
  assert.match(await problem([{ name: "a", match: "x", action: "slow", pausems: 5 }]), /\[0\]\.pausems = 5: Expected no excess property/);
  assert.match(await problem([{ name: "a", code: 250, action: "slow" }]), /\[0\]\.code = 250/);
  assert.match(await problem([{ name: "a", enhanced: "4.7", action: "slow" }]), /\[0\]\.enhanced = "4\.7": expected an enhanced status code/);
  assert.match(await problem([{ name: "a", match: "(", action: "slow" }]), /\[0\] \(a\)\.match: Invalid regular expression/);
  assert.match(await problem([{ name: "a", action: "slow" }]), /\[0\] \(a\): give code, enhanced or match/);
  assert.match(await problem([{ name: "a", match: "x" }]), /\[0\] \(a\)\.action: missing/);
  assert.match(await problem([{ name: "a", match: "x", action: "slow", pauseMs: 10 }]), /\[0\] \(a\)\.pauseMs: only for action "pause"/);
  assert.match(await problem([{ name: "a", match: "x", action: "slow" }, { name: "a", match: "y", action: "slow" }]), /"a" appears twice/);
  assert.match(await problem({ name: "a" }), /\(root\)/);
  assert.match((await Effect.runPromise(Effect.flip(parseThrottleRules("t.json", "[{")))).detail, /not JSON/);
});

test("the rules file is read from disk; a missing one is a typed error", async () => {
  const dir = await mkdtemp(join(tmpdir(), "tern-throttle-"));
  try {
    const path = join(dir, "throttle.json");
    await writeFile(path, JSON.stringify([{ name: "local", match: "go slower", action: "slow" }]));
    const rules = await Effect.runPromise(loadThrottleRules(path));
    assert.equal(verdict("421 4.3.2 go slower", makeThrottleMatcher(rules)), "local:slow");
    const missing = await Effect.runPromise(Effect.flip(loadThrottleRules(join(dir, "nope.json"))));
    assert.equal(missing._tag, "ThrottleRulesError");
    assert.match(missing.detail, /ENOENT/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
