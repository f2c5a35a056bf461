// The back-off of one site and source as a value: throttling replies step it down (a
// burst counts once), a pause holds it, quiet time brings it back one step at a time.
import { test } from "node:test";
import assert from "node:assert/strict";
import { connectionsAt, gapAt, isNormal, isPaused, MAX_LEVEL, NORMAL, nextStepAt, recover, throttled, type SiteThrottle, type StepDown, type ThrottleChange } from "../../../actors/delivery/throttle.ts";

const policy = { recoveryMs: 10_000, gapMs: 1_000 };
const cause = { rule: "gmail-unusual-rate", reply: { _tag: "Reply", code: 421, enhanced: "4.7.28", text: "unusual rate" } as const };
const slow: StepDown = { _tag: "slow" };
const pause = (ms: number): StepDown => ({ _tag: "pause", ms });

/** Recovers as far as `now` allows, listing each change. */
const recoverAll = (state: SiteThrottle, now: number) => {
  const changes: ThrottleChange[] = [];
  for (;;) {
    const stepped = recover(state, policy, now);
    if (!stepped.change) return { state, changes };
    changes.push(stepped.change);
    state = stepped.state;
  }
};

test("each slow reply steps down one level: half the connections (at least 1), a gap doubling per level", () => {
  let state = NORMAL;
  const seen: Array<[number, number, number]> = [];
  for (let n = 1; n <= MAX_LEVEL + 1; n++) {
    const stepped = throttled(state, slow, cause, 1_000 * n, 1_000 * n);
    assert.equal(stepped.change, n <= MAX_LEVEL ? "slowed" : undefined, `reply ${n}`);
    state = stepped.state;
    seen.push([state.level, connectionsAt(state.level, 8), gapAt(state.level, policy)]);
  }
  assert.deepEqual(seen, [
    [1, 4, 1_000],
    [2, 2, 2_000],
    [3, 1, 4_000],
    [4, 1, 8_000],
    [5, 1, 16_000],
    [5, 1, 16_000],
  ]);
  assert.equal(state.since, 1_000, "since the first step");
  assert.deepEqual(state.cause, cause);
  assert.equal(connectionsAt(0, 8), 8);
  assert.equal(gapAt(0, policy), 0);
});

test("replies to messages started before the last step do not step again, but restart the quiet period", () => {
  const first = throttled(NORMAL, slow, cause, 900, 1_000);
  assert.equal(first.change, "slowed");
  // Three more connections were mid-transaction when the first 421 came: same signal.
  let state = first.state;
  for (const at of [1_010, 1_020, 1_030]) {
    const stepped = throttled(state, slow, cause, 950, at);
    assert.equal(stepped.change, undefined);
    state = stepped.state;
  }
  assert.equal(state.level, 1);
  assert.equal(nextStepAt(state, policy), 1_030 + policy.recoveryMs);
  // A message sent at the slower pace that is throttled again steps further.
  assert.equal(throttled(state, slow, cause, 2_000, 2_500).state.level, 2);
});

test("a pause holds the site until its end, steps down one level, and the quiet period starts when it ends", () => {
  const paused = throttled(NORMAL, pause(60_000), cause, 0, 1_000);
  assert.equal(paused.change, "paused");
  const state = paused.state;
  assert.ok(isPaused(state, 1_000) && isPaused(state, 60_999) && !isPaused(state, 61_000));
  assert.equal(state.level, 1);
  assert.equal(nextStepAt(state, policy), 61_000);
  assert.deepEqual(recoverAll(state, 60_999).changes, [], "nothing before the end");
  const resumed = recoverAll(state, 61_000);
  assert.deepEqual(resumed.changes, ["resumed"]);
  assert.equal(resumed.state.level, 1, "resumes slowly");
  assert.equal(nextStepAt(resumed.state, policy), 71_000);
  const back = recoverAll(resumed.state, 71_000);
  assert.deepEqual(back.changes, ["recovered"]);
  assert.ok(isNormal(back.state));
  assert.equal(back.state, NORMAL);
});

test("recovery goes up one level per quiet period; a throttling reply in between starts the period again", () => {
  let state = NORMAL;
  for (let n = 0; n < 3; n++) state = throttled(state, slow, cause, n, n).state;
  assert.equal(state.level, 3);
  // One quiet period: one step.
  let r = recoverAll(state, 2 + 10_000);
  assert.deepEqual(r.changes, ["recovered"]);
  assert.equal(r.state.level, 2);
  // A stale reply (message from before the last step down) restarts the quiet period without stepping.
  state = throttled(r.state, slow, cause, 1, 15_000).state;
  assert.equal(state.level, 2);
  assert.deepEqual(recoverAll(state, 24_999).changes, []);
  r = recoverAll(state, 25_000);
  assert.equal(r.state.level, 1);
  // A late look catches up step by step, each timed from when the previous was due.
  r = recoverAll(state, 25_000 + 10_000);
  assert.deepEqual(r.changes, ["recovered", "recovered"]);
  assert.ok(isNormal(r.state));
});

test("a slow reply during recovery counts again; the level never goes past the maximum or below normal", () => {
  let state = throttled(NORMAL, slow, cause, 0, 0).state;
  state = recoverAll(state, 10_000).state;
  assert.ok(isNormal(state));
  assert.equal(recover(NORMAL, policy, 1e12).change, undefined);
  // Back at normal, a reply to a message started at level 1 still steps down: the site is still unhappy.
  assert.equal(throttled(state, slow, cause, 5_000, 10_001).change, "slowed");
  let deep = NORMAL as SiteThrottle;
  for (let n = 0; n < 10; n++) deep = throttled(deep, pause(1_000), cause, n * 10_000, n * 10_000).state;
  assert.equal(deep.level, MAX_LEVEL);
});
