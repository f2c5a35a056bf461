// Warm-up curves: the day of warm-up from the `since` date (UTC), the caps of each day,
// none before the first day and none once the curve is done (the address is warm), and
// when a full window opens again.
import { test } from "node:test";
import assert from "node:assert/strict";
import { capsAt, dayOf, DAY_MS, HOUR_MS, parseDay, reopensAt, warmupDay, type SourceWarmup } from "../../../actors/delivery/warmup.ts";

const warmup: SourceWarmup = {
  schedule: "standard",
  since: "2026-03-01",
  startDay: parseDay("2026-03-01")!,
  curve: { daily: [50, 100, 200], hourly: [10, 20, 40] },
};
const at = (date: string, hours = 0) => Date.parse(`${date}T00:00:00Z`) + hours * HOUR_MS;

test("dates are UTC days; impossible dates are refused", () => {
  assert.equal(parseDay("1970-01-02"), 1);
  assert.equal(parseDay("2026-03-01"), dayOf(Date.UTC(2026, 2, 1)));
  for (const bad of ["2026-02-30", "2026-13-01", "2026-3-1", "yesterday", "2026-03-01T00:00:00Z"]) assert.equal(parseDay(bad), undefined, bad);
});

test("day 1 is the since date, a new day starts at midnight UTC, and each day has its caps", () => {
  assert.equal(warmupDay(warmup, at("2026-03-01")), 1);
  assert.equal(warmupDay(warmup, at("2026-03-01", 23.99)), 1);
  assert.equal(warmupDay(warmup, at("2026-03-02")), 2);
  assert.deepEqual(capsAt(warmup, at("2026-03-01", 5)), { day: 1, daily: 50, hourly: 10 });
  assert.deepEqual(capsAt(warmup, at("2026-03-03", 12)), { day: 3, daily: 200, hourly: 40 });
});

test("past the last day of its curve an address is warm; before its first day it sends nothing", () => {
  assert.equal(capsAt(warmup, at("2026-03-04")), undefined, "day 4 of a 3-day curve: warm");
  assert.equal(capsAt(undefined, at("2026-03-01")), undefined, "no warm-up: warm");
  assert.deepEqual(capsAt(warmup, at("2026-02-28", 23)), { day: 0, daily: 0, hourly: 0 });
});

test("a curve without hourly caps caps the day only", () => {
  const daily: SourceWarmup = { ...warmup, curve: { daily: [5] } };
  assert.deepEqual(capsAt(daily, at("2026-03-01", 3)), { day: 1, daily: 5, hourly: undefined });
});

test("a full day opens at the next midnight UTC (or the first day of warm-up); a full hour at the next hour", () => {
  const now = at("2026-03-02", 13.5);
  assert.equal(reopensAt(warmup, "day", now), at("2026-03-03"));
  assert.equal(reopensAt(warmup, "hour", now), at("2026-03-02", 14));
  assert.equal(reopensAt(warmup, "day", at("2026-02-20", 7)), at("2026-03-01"), "not started: waits for day 1");
  assert.equal(at("2026-03-03") - at("2026-03-02"), DAY_MS);
});
