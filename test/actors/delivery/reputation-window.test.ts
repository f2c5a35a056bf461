// Sliding windows of outcomes (actors/delivery/reputation-window.ts): counts by slot, the
// window's totals as slots fall out, figures since a time, and the rates.
import { test } from "node:test";
import assert from "node:assert/strict";
import { add, isEmpty, makeRing, rateOf, sumCounts, totals, totalsSince, windowMs, type Counts } from "../../../actors/delivery/reputation-window.ts";

const MINUTE = 60_000;
const t0 = Date.UTC(2026, 0, 1, 10, 0, 0);

test("a 1h window counts by outcome and bounce category, and forgets each minute's outcomes an hour later", () => {
  const ring = makeRing("1h");
  add(ring, t0, { _tag: "delivered" }, 3);
  add(ring, t0 + 10 * MINUTE, { _tag: "bounced", category: "bad-mailbox" });
  add(ring, t0 + 10 * MINUTE + 59_000, { _tag: "bounced", category: "policy" });
  add(ring, t0 + 30 * MINUTE, { _tag: "deferred" }, 2);
  add(ring, t0 + 30 * MINUTE, { _tag: "complained" });
  assert.deepEqual(totals(ring, t0 + 30 * MINUTE), { delivered: 3, deferred: 2, complained: 1, bounced: 2, bounces: { "bad-mailbox": 1, policy: 1 } });
  // The slot of t0 leaves once the window's 60 slots start after it.
  assert.equal(totals(ring, t0 + 59 * MINUTE).delivered, 3);
  assert.equal(totals(ring, t0 + 60 * MINUTE).delivered, 0);
  assert.equal(totals(ring, t0 + 70 * MINUTE).bounced, 0);
  assert.deepEqual(totals(ring, t0 + 89 * MINUTE), { delivered: 0, deferred: 2, complained: 1, bounced: 0, bounces: {} });
  assert.ok(!isEmpty(ring, t0 + 89 * MINUTE));
  assert.ok(isEmpty(ring, t0 + 90 * MINUTE));
});

test("a 24h window keeps quarter-hour slots; a ring idle for longer than its window starts empty", () => {
  const ring = makeRing("24h");
  assert.equal(windowMs("24h"), 24 * 60 * MINUTE);
  add(ring, t0, { _tag: "delivered" }, 10);
  add(ring, t0 + 12 * 60 * MINUTE, { _tag: "delivered" }, 5);
  assert.equal(totals(ring, t0 + 23 * 60 * MINUTE).delivered, 15);
  assert.equal(totals(ring, t0 + 24 * 60 * MINUTE).delivered, 5);
  assert.equal(totals(ring, t0 + 72 * 60 * MINUTE).delivered, 0);
  add(ring, t0 + 72 * 60 * MINUTE, { _tag: "deferred" });
  assert.deepEqual(totals(ring, t0 + 72 * 60 * MINUTE), { delivered: 0, deferred: 1, complained: 0, bounced: 0, bounces: {} });
});

test("a clock that goes back counts in the newest slot and expires nothing", () => {
  const ring = makeRing("1h");
  add(ring, t0 + 5 * MINUTE, { _tag: "delivered" });
  add(ring, t0, { _tag: "delivered" });
  assert.equal(totals(ring, t0).delivered, 2);
  assert.equal(totals(ring, t0 + 64 * MINUTE).delivered, 2);
  assert.equal(totals(ring, t0 + 65 * MINUTE).delivered, 0);
});

test("figures since a time leave out the slot it falls in and everything before", () => {
  const ring = makeRing("1h");
  add(ring, t0, { _tag: "bounced", category: "bad-mailbox" }, 4);
  add(ring, t0 + 5 * MINUTE + 30_000, { _tag: "bounced", category: "bad-mailbox" }, 2);
  add(ring, t0 + 6 * MINUTE, { _tag: "delivered" }, 7);
  const now = t0 + 10 * MINUTE;
  assert.deepEqual(totalsSince(ring, now, t0 + 5 * MINUTE + 10_000), { delivered: 7, deferred: 0, complained: 0, bounced: 0, bounces: {} });
  assert.equal(totalsSince(ring, now, t0 - 2 * 60 * MINUTE).bounced, 6, "a time before the window: the whole window");
  assert.equal(totalsSince(ring, now, now).delivered, 0, "nothing after now");
});

test("rates: bounces over final outcomes, complaints over deliveries, deferrals over every attempt; none without figures; sums add up", () => {
  const counts: Counts = { delivered: 30, deferred: 10, complained: 3, bounced: 10, bounces: { "bad-mailbox": 8, policy: 2 } };
  assert.equal(rateOf(counts, "bounce"), 0.25);
  assert.equal(rateOf(counts, "complaint"), 0.1);
  assert.equal(rateOf(counts, "deferral"), 0.2);
  const none: Counts = { delivered: 0, deferred: 0, complained: 0, bounced: 0, bounces: {} };
  assert.deepEqual([rateOf(none, "bounce"), rateOf(none, "complaint"), rateOf(none, "deferral")], [0, 0, 0]);
  assert.deepEqual(sumCounts(counts, { delivered: 10, deferred: 0, complained: 1, bounced: 1, bounces: { quota: 1, policy: 0 } }), {
    delivered: 40,
    deferred: 10,
    complained: 4,
    bounced: 11,
    bounces: { "bad-mailbox": 8, policy: 2, quota: 1 },
  });
});
