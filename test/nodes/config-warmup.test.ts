// `delivery.pools` with warm-up: a pool is a list of addresses or `{ addresses, overflow }`;
// a cold address names a schedule of `delivery.warmupSchedules` and its first day. Hourly
// caps are given, derived (`spreadHours`) or absent; mistakes are refused by name.
import { test } from "node:test";
import assert from "node:assert/strict";
import { parseConfig } from "../../nodes/config.ts";
import { parseDay } from "../../actors/delivery/warmup.ts";

const cold = { address: "192.0.2.10", ehlo: "new.example.org", warmup: { schedule: "standard", since: "2026-03-01" } };
const warm = { address: "192.0.2.20", ehlo: "old.example.org" };

test("a pool with a cold address: its curve and first day resolved, the pool's overflow kept", () => {
  const { pools } = parseConfig({
    delivery: {
      warmupSchedules: { standard: { daily: [50, 100, 200], spreadHours: 8 }, steep: { daily: [1000, 5000], hourly: [200, 1000] }, flat: { daily: [20] } },
      pools: { bulk: { addresses: [cold, warm], overflow: "wait" }, tx: [warm] },
    },
  }).delivery;
  assert.deepEqual(pools.pools.bulk![0], {
    address: "192.0.2.10",
    ehlo: "new.example.org",
    weight: 1,
    warmup: { schedule: "standard", since: "2026-03-01", startDay: parseDay("2026-03-01"), curve: { daily: [50, 100, 200], hourly: [7, 13, 25] } },
  });
  assert.deepEqual(pools.pools.bulk![1], { ...warm, weight: 1 });
  assert.deepEqual(pools.overflow, { bulk: "wait" }, "tx (a plain list) overflows to warm addresses, the default");
  assert.deepEqual(pools.pools.tx, [{ ...warm, weight: 1 }]);
});

test("warm-up mistakes are refused by name", () => {
  const withPools = (pools: unknown, warmupSchedules: unknown = { standard: { daily: [50, 100] } }) => () => parseConfig({ delivery: { pools, warmupSchedules } });
  assert.throws(withPools({ bulk: [{ ...cold, warmup: { schedule: "nosuch", since: "2026-03-01" } }] }), /pool bulk names warm-up schedule "nosuch", which is not one of delivery\.warmupSchedules/);
  assert.throws(withPools({ bulk: [{ ...cold, warmup: { schedule: "standard", since: "2026-02-30" } }] }), /since = "2026-02-30": expected a date YYYY-MM-DD/);
  assert.throws(withPools({ bulk: [cold] }, { standard: { daily: [] } }), /daily/);
  assert.throws(withPools({ bulk: [cold] }, { standard: { daily: [50, 0] } }), /daily\[1\] = 0/);
  assert.throws(withPools({ bulk: [cold] }, { standard: { daily: [50, 100], hourly: [10] } }), /standard\.hourly has 1 caps for 2 days of daily/);
  assert.throws(withPools({ bulk: [cold] }, { standard: { daily: [50], hourly: [10], spreadHours: 4 } }), /both hourly and spreadHours/);
  assert.throws(withPools({ bulk: { addresses: [cold], overflow: "bounce" } }), /overflow/);
  assert.throws(withPools({ bulk: [cold], tx: [{ ...cold, warmup: undefined }] }), /source address 192\.0\.2\.10 is in several pools with different warm-ups/);
  assert.throws(() => parseConfig({ delivery: { providers: { other: [".mx.other.example"] } } }), /delivery\.providers names "other"/);
});
