// `reputation`: how many sender domains are counted by name, and the thresholds that slow
// or pause a source address or sender domain, with their defaults; mistakes refused by name.
import { test } from "node:test";
import assert from "node:assert/strict";
import { parseConfig } from "../../nodes/config.ts";

test("no reputation section: 100 sender domains by name and no threshold (nothing is held)", () => {
  assert.deepEqual(parseConfig({}).reputation, { maxSenderDomains: 100, thresholds: [] });
});

test("thresholds with their defaults: a 1 h window, 100 messages, a 30-minute pause, level 2, recovery under 80 % of the limit", () => {
  const { reputation } = parseConfig({
    reputation: {
      maxSenderDomains: 500,
      thresholds: [
        { dimension: "source", bounceRate: 0.05, action: "slow" },
        { name: "domain-complaints", dimension: "sender_domain", window: "24h", complaintRate: 0.003, bounceRate: 0.1, minMessages: 1000, action: "pause", pauseMs: 3_600_000 },
        { dimension: "sender_domain", deferralRate: 0.5, action: "slow", level: 4, recoverRatio: 0.5 },
      ],
    },
  });
  assert.equal(reputation.maxSenderDomains, 500);
  assert.deepEqual(reputation.thresholds, [
    { name: "source-bounce-1h", dimension: "source", window: "1h", limits: { bounce: 0.05 }, minMessages: 100, action: { _tag: "slow", level: 2 }, recoverRatio: 0.8 },
    { name: "domain-complaints", dimension: "sender_domain", window: "24h", limits: { bounce: 0.1, complaint: 0.003 }, minMessages: 1000, action: { _tag: "pause", ms: 3_600_000 }, recoverRatio: 0.8 },
    { name: "sender_domain-deferral-1h", dimension: "sender_domain", window: "1h", limits: { deferral: 0.5 }, minMessages: 100, action: { _tag: "slow", level: 4 }, recoverRatio: 0.5 },
  ]);
  assert.deepEqual(parseConfig({ reputation: { thresholds: [{ dimension: "source", bounceRate: 0.1, action: "pause" }] } }).reputation.thresholds[0]!.action, { _tag: "pause", ms: 30 * 60_000 });
});

test("threshold mistakes are refused by name", () => {
  const refused = (threshold: unknown, pattern: RegExp) => assert.throws(() => parseConfig({ reputation: { thresholds: [threshold] } }), pattern);
  refused({ dimension: "source", action: "pause" }, /a threshold needs bounceRate, complaintRate or deferralRate/);
  refused({ dimension: "provider", bounceRate: 0.1, action: "pause" }, /thresholds\[0\]\.dimension = "provider"/);
  refused({ dimension: "source", bounceRate: 5, action: "pause" }, /thresholds\[0\]\.bounceRate = 5: expected a share above 0 and at most 1/);
  refused({ dimension: "source", bounceRate: 0.1, action: "bounce" }, /thresholds\[0\]\.action = "bounce"/);
  refused({ dimension: "source", bounceRate: 0.1, action: "slow", pauseMs: 1000 }, /reputation\.thresholds\[0\] gives pauseMs to a slow/);
  refused({ dimension: "source", bounceRate: 0.1, action: "pause", level: 3 }, /reputation\.thresholds\[0\] gives level to a pause/);
  refused({ dimension: "source", bounceRate: 0.1, action: "slow", level: 6 }, /thresholds\[0\]\.level = 6/);
  refused({ dimension: "source", bounceRate: 0.1, action: "slow", window: "7d" }, /thresholds\[0\]\.window = "7d"/);
  assert.throws(
    () => parseConfig({ reputation: { thresholds: [{ dimension: "source", bounceRate: 0.1, action: "slow" }, { dimension: "source", bounceRate: 0.2, action: "pause" }] } }),
    /two reputation\.thresholds are named "source-bounce-1h"; give each a distinct name/,
  );
  assert.throws(() => parseConfig({ reputation: { maxSenderDomains: 0 } }), /maxSenderDomains = 0/);
});
