// Reputation thresholds (actors/delivery/reputation-rules.ts): when one acts, how a slow
// recovers (hysteresis) and a pause ends, what holds a key when several act at once.
import { test } from "node:test";
import assert from "node:assert/strict";
import { CLEAR, crossingOf, dueAt, holdOf, judge, judgedFrom, type RuleState, type Threshold } from "../../../actors/delivery/reputation-rules.ts";
import type { Counts } from "../../../actors/delivery/reputation-window.ts";

const counts = (delivered: number, bounced: number, extra: Partial<Counts> = {}): Counts => ({ delivered, bounced, deferred: 0, complained: 0, bounces: { "bad-mailbox": bounced }, ...extra });

const slow: Threshold = { name: "ip-bounces", dimension: "source", window: "1h", limits: { bounce: 0.05 }, minMessages: 100, action: { _tag: "slow", level: 2 }, recoverRatio: 0.8 };
const pause: Threshold = { name: "domain-complaints", dimension: "sender_domain", window: "24h", limits: { bounce: 0.1, complaint: 0.003 }, minMessages: 100, action: { _tag: "pause", ms: 30 * 60_000 }, recoverRatio: 0.8 };
const t0 = Date.UTC(2026, 0, 1);

test("a threshold acts at its limit, and only with at least minMessages final outcomes", () => {
  assert.equal(crossingOf(slow, counts(90, 9)), undefined, "99 messages: too few to judge, whatever the rate");
  assert.equal(crossingOf(slow, counts(96, 4)), undefined, "4 % is under 5 %");
  assert.deepEqual(crossingOf(slow, counts(95, 5)), { kind: "bounce", rate: 0.05, limit: 0.05, messages: 100 });
  // Deferrals are not final outcomes: they neither make up the volume nor a bounce rate.
  assert.equal(crossingOf(slow, counts(50, 5, { deferred: 500 })), undefined);
  // The first rate of the threshold that crosses is the cause: complaints over deliveries.
  assert.deepEqual(crossingOf(pause, counts(1000, 10, { complained: 3 })), { kind: "complaint", rate: 0.003, limit: 0.003, messages: 1010 });
});

test("slowed at the limit, kept slowed while the rate stays above 80 % of it, recovered under that, even when the window thins out", () => {
  const slowed = judge(slow, CLEAR, counts(190, 10), t0);
  assert.equal(slowed.change, "slowed");
  assert.deepEqual(slowed.state, { _tag: "slowed", since: t0, cause: { kind: "bounce", rate: 0.05, limit: 0.05, messages: 200 } });
  assert.equal(dueAt(slowed.state), undefined, "a slow ends on figures, not on the clock");
  // 4.5 % is under the limit but above 80 % of it (4 %): still slowed.
  const hovering = judge(slow, slowed.state, counts(191, 9), t0 + 60_000);
  assert.deepEqual(hovering, { state: slowed.state, change: undefined });
  const recovered = judge(slow, slowed.state, counts(261, 9), t0 + 120_000);
  assert.deepEqual(recovered, { state: CLEAR, change: "recovered" });
  // The window emptied (nothing sent for an hour): no rate left to hold it.
  assert.equal(judge(slow, slowed.state, counts(0, 0), t0 + 3_600_000).change, "recovered");
});

test("paused for pauseMs, then resumed and judged only on what comes after the pause", () => {
  const paused = judge(pause, CLEAR, counts(80, 20), t0);
  assert.equal(paused.change, "paused");
  assert.deepEqual(paused.state, { _tag: "paused", since: t0, until: t0 + 30 * 60_000, cause: { kind: "bounce", rate: 0.2, limit: 0.1, messages: 100 } });
  assert.equal(dueAt(paused.state), t0 + 30 * 60_000);
  assert.equal(judge(pause, paused.state, counts(80, 20), t0 + 30 * 60_000 - 1).change, undefined);
  const resumed = judge(pause, paused.state, counts(80, 20), t0 + 30 * 60_000);
  assert.deepEqual(resumed, { state: { _tag: "clear", judgedFrom: t0 + 30 * 60_000 }, change: "resumed" });
  // The caller hands over the figures since judgedFrom: fresh ones, too few to act again.
  assert.equal(judgedFrom(resumed.state), t0 + 30 * 60_000);
  assert.equal(judge(pause, resumed.state, counts(10, 5), t0 + 31 * 60_000).change, undefined);
  assert.equal(judge(pause, resumed.state, counts(80, 20), t0 + 40 * 60_000).change, "paused", "fresh evidence as bad pauses again");
});

test("what holds a key: the latest pause over any slow, else the slowest level", () => {
  const slower: Threshold = { ...slow, name: "ip-bounces-hard", limits: { bounce: 0.1 }, action: { _tag: "slow", level: 4 } };
  const ipPause: Threshold = { ...slow, name: "ip-pause", action: { _tag: "pause", ms: 60_000 } };
  const cause = { kind: "bounce" as const, rate: 0.2, limit: 0.05, messages: 100 };
  const slowed: RuleState = { _tag: "slowed", since: t0, cause };
  assert.equal(holdOf([{ threshold: slow, state: CLEAR }]), undefined);
  assert.deepEqual(holdOf([{ threshold: slow, state: slowed }, { threshold: slower, state: slowed }]), { pausedUntil: 0, level: 4, rule: "ip-bounces-hard" });
  assert.deepEqual(holdOf([{ threshold: slow, state: slowed }, { threshold: ipPause, state: { _tag: "paused", since: t0, until: t0 + 60_000, cause } }]), {
    pausedUntil: t0 + 60_000,
    level: 2,
    rule: "ip-pause",
  });
});
