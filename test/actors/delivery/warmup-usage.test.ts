// The warm-up ledger and the choice of an attempt's source address: a cold address takes
// one message of its allowance per attempt and spends it only when the remote server
// took the message; at its cap the attempt overflows to an address with room, or waits.
// Counts of the current day and hour survive a restart (a new ledger over the same LMDB);
// those of windows that are over are dropped.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { open } from "lmdb";
import type { SourceAddress } from "../../../actors/delivery/pools.ts";
import { HOUR_MS, parseDay } from "../../../actors/delivery/warmup.ts";
import { chooseSource, makeWarmupUsage, memoryUsageStore, openUsageStore, type SourceChoice } from "../../../actors/delivery/warmup-usage.ts";

const t0 = Date.parse("2026-03-01T10:00:00Z");
const cold: SourceAddress = {
  address: "192.0.2.10",
  ehlo: "new.example.org",
  weight: 1,
  warmup: { schedule: "test", since: "2026-03-01", startDay: parseDay("2026-03-01")!, curve: { daily: [3, 6], hourly: [2, 4] } },
};
const coldNoHourly: SourceAddress = { ...cold, address: "192.0.2.11", warmup: { ...cold.warmup!, curve: { daily: [3, 6] } } };
const warm: SourceAddress = { address: "192.0.2.20", ehlo: "old.example.org", weight: 1 };

const sourceOf = (choice: SourceChoice | undefined) => (choice && "source" in choice ? choice.source.address : undefined);

/** Takes and spends one message as a delivered attempt would. */
const send = (usage: ReturnType<typeof makeWarmupUsage>, source: SourceAddress, provider: string, now: number) => {
  const taken = usage.take(source, provider, now);
  assert.ok("spend" in taken, `room for one more from ${source.address} to ${provider}`);
  taken.spend?.settle(true, now);
};

test("a cold address sends its hourly cap, then waits for the next hour; the day's cap then holds until midnight UTC", () => {
  const usage = makeWarmupUsage(memoryUsageStore(), t0);
  send(usage, cold, "gmail", t0);
  send(usage, cold, "gmail", t0 + 60_000);
  const full = usage.take(cold, "gmail", t0 + 120_000);
  assert.deepEqual("full" in full && full.full, { source: cold, provider: "gmail", window: "hour", cap: 2, until: t0 + HOUR_MS });
  assert.deepEqual(usage.used(cold.address, "gmail", t0), { day: 2, hour: 2 });
  // Next hour: one more reaches the day's cap of 3.
  send(usage, cold, "gmail", t0 + HOUR_MS);
  const day = usage.take(cold, "gmail", t0 + HOUR_MS + 1);
  assert.deepEqual("full" in day && [day.full.window, day.full.cap, new Date(day.full.until).toISOString()], ["day", 3, "2026-03-02T00:00:00.000Z"]);
  // Caps are per provider: another provider has its own allowance.
  assert.ok(usage.hasRoom(cold, "microsoft", t0 + HOUR_MS));
  assert.deepEqual(usage.providersOf(cold.address, t0 + HOUR_MS), ["gmail"]);
  // Day 2: the curve's second day, usage from zero.
  const day2 = Date.parse("2026-03-02T00:00:01Z");
  assert.deepEqual(usage.used(cold.address, "gmail", day2), { day: 0, hour: 0 });
  for (let n = 0; n < 4; n++) send(usage, cold, "gmail", day2 + n * HOUR_MS);
  // Day 3 is past the curve: warm, nothing counted.
  const day3 = Date.parse("2026-03-03T00:00:00Z");
  const taken = usage.take(cold, "gmail", day3);
  assert.ok("spend" in taken && taken.spend === undefined, "a warm address takes nothing");
});

test("in-flight attempts hold their message of the allowance; one the remote did not take is given back", () => {
  const usage = makeWarmupUsage(memoryUsageStore(), t0);
  const first = usage.take(coldNoHourly, "gmail", t0);
  const second = usage.take(coldNoHourly, "gmail", t0);
  const third = usage.take(coldNoHourly, "gmail", t0);
  assert.ok("spend" in first && "spend" in second && "spend" in third);
  assert.ok("full" in usage.take(coldNoHourly, "gmail", t0), "three in flight fill a cap of 3");
  first.spend!.settle(false, t0); // refused, or no connection: nothing spent
  first.spend!.settle(true, t0); // settling twice changes nothing
  assert.ok(usage.hasRoom(coldNoHourly, "gmail", t0));
  second.spend!.settle(true, t0);
  third.spend!.settle(true, t0);
  assert.deepEqual(usage.used(coldNoHourly.address, "gmail", t0), { day: 2, hour: 2 });
});

test("overflow warm: at its cap a cold address hands the attempt to an address with room; wait: the attempt waits", () => {
  const usage = makeWarmupUsage(memoryUsageStore(), t0);
  const pool = [{ ...coldNoHourly, weight: 100 }, warm];
  const picks: Array<string | undefined> = [];
  for (let n = 0; n < 5; n++) {
    const choice = chooseSource(usage, pool, "warm", "gmail", t0, 0, 0.5);
    if (choice && "source" in choice) choice.spend?.settle(true, t0);
    picks.push(sourceOf(choice));
  }
  assert.deepEqual(picks, ["192.0.2.11", "192.0.2.11", "192.0.2.11", "192.0.2.20", "192.0.2.20"], "the cap of 3 from the cold address, the rest from the warm one");

  const waiting = chooseSource(usage, pool, "wait", "gmail", t0, 0, 0.5);
  assert.ok(waiting && "wait" in waiting);
  assert.deepEqual({ ...waiting.wait, source: waiting.wait.source.address }, { source: "192.0.2.11", provider: "gmail", window: "day", cap: 3, until: Date.parse("2026-03-02T00:00:00Z") });
  // The weighted pick still lands on the warm address sometimes, and then sends: wait only holds the cold one's share.
  assert.equal(sourceOf(chooseSource(usage, pool, "wait", "gmail", t0, 0.999, 0.5)), "192.0.2.20");
});

test("overflow goes to cold addresses that still have room; with no room anywhere the attempt waits", () => {
  const usage = makeWarmupUsage(memoryUsageStore(), t0);
  const other: SourceAddress = { ...coldNoHourly, address: "192.0.2.12" };
  const pool = [coldNoHourly, other];
  const sources: Array<string | undefined> = [];
  for (let n = 0; n < 6; n++) {
    const choice = chooseSource(usage, pool, "warm", "yahoo", t0, 0, 0);
    if (choice && "source" in choice) choice.spend?.settle(true, t0);
    sources.push(sourceOf(choice));
  }
  assert.deepEqual(sources, ["192.0.2.11", "192.0.2.11", "192.0.2.11", "192.0.2.12", "192.0.2.12", "192.0.2.12"]);
  const none = chooseSource(usage, pool, "warm", "yahoo", t0, 0, 0);
  assert.ok(none && "wait" in none && none.wait.source.address === "192.0.2.11");
});

test("before its first day a cold address sends nothing, and its mail waits for that day", () => {
  const usage = makeWarmupUsage(memoryUsageStore(), t0);
  const later: SourceAddress = { ...coldNoHourly, warmup: { ...coldNoHourly.warmup!, since: "2026-03-05", startDay: parseDay("2026-03-05")! } };
  const choice = chooseSource(usage, [later], "wait", "gmail", t0, 0, 0);
  assert.ok(choice && "wait" in choice);
  assert.equal(new Date(choice.wait.until).toISOString(), "2026-03-05T00:00:00.000Z");
});

test("counts are kept in LMDB: a restarted ledger has today's and this hour's usage; finished windows are dropped", async () => {
  const dir = await mkdtemp(join(tmpdir(), "tern-warmup-"));
  try {
    const failures: unknown[] = [];
    let root = open({ path: join(dir, "tern.lmdb"), maxDbs: 8 });
    let usage = makeWarmupUsage(openUsageStore(root, (e) => failures.push(e)), t0);
    send(usage, cold, "gmail", t0);
    send(usage, cold, "other", t0);
    send(usage, cold, "gmail", t0 + HOUR_MS); // a new hour: the earlier hour's count is replaced
    await root.close();

    root = open({ path: join(dir, "tern.lmdb"), maxDbs: 8 });
    usage = makeWarmupUsage(openUsageStore(root, (e) => failures.push(e)), t0 + HOUR_MS + 5);
    assert.deepEqual(usage.used(cold.address, "gmail", t0 + HOUR_MS + 5), { day: 2, hour: 1 });
    assert.deepEqual(usage.used(cold.address, "other", t0 + HOUR_MS + 5), { day: 1, hour: 0 });
    assert.deepEqual(usage.providersOf(cold.address, t0 + HOUR_MS + 5), ["gmail", "other"]);
    await root.close();

    // The next day, yesterday's counts are gone from the store as well as from the view.
    const nextDay = Date.parse("2026-03-02T08:00:00Z");
    root = open({ path: join(dir, "tern.lmdb"), maxDbs: 8 });
    usage = makeWarmupUsage(openUsageStore(root, (e) => failures.push(e)), nextDay);
    assert.deepEqual(usage.used(cold.address, "gmail", nextDay), { day: 0, hour: 0 });
    await root.flushed;
    assert.equal([...root.openDB({ name: "warmup.usage" }).getKeys({})].length, 0);
    await root.close();
    assert.deepEqual(failures, []);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
