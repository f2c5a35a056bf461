// The `delivery` section: defaults (the README's retry schedule, queue lifetime, notices,
// limits) and refused values.
import { test } from "node:test";
import assert from "node:assert/strict";
import { parseConfig } from "../../nodes/config.ts";
import { retryDelayMs } from "../../actors/delivery/backoff.ts";

test("delivery defaults: 5-day lifetime, delay notice at 4 hours, small per-site limits, RFC 5321 timeouts", () => {
  const d = parseConfig({}).delivery;
  assert.equal(d.maxAgeMs, 5 * 24 * 3_600_000);
  assert.equal(d.delayNoticeMs, 4 * 3_600_000);
  assert.equal(d.connectionsPerSite, 4);
  assert.equal(d.maxConnections, 200);
  assert.equal(d.greetingTimeoutMs, 300_000);
  assert.equal(d.socketTimeoutMs, 600_000);
  assert.equal(d.holdMs, d.retryBaseMs);
  assert.deepEqual(d.requireTls, []);
  assert.equal(d.bounceRulesFile, undefined);
  // Automatic back-off: starter rules only, a step back up per 10 quiet minutes, 1 s between messages at level 1.
  assert.equal(d.throttleRulesFile, undefined);
  assert.equal(d.throttleRecoveryMs, 600_000);
  assert.equal(d.throttleGapMs, 1_000);
  // The default schedule (no jitter): 1, 2, 4, 8, 16, 32 minutes, then hourly.
  const minutes = [1, 2, 3, 4, 5, 6, 7, 8].map((n) => retryDelayMs({ baseMs: d.retryBaseMs, maxMs: d.retryMaxMs }, n, 0.5) / 60_000);
  assert.deepEqual(minutes, [1, 2, 4, 8, 16, 32, 60, 60]);
});

test("delivery values are checked, and named when refused", () => {
  const config = parseConfig({ delivery: { requireTls: ["bank.example", ".gov.example"], siteConnections: { ".google.com": 10 }, retryBaseMs: 500 } });
  assert.deepEqual(config.delivery.requireTls, ["bank.example", ".gov.example"]);
  assert.equal(config.delivery.holdMs, 500, "a hold lasts as long as a first retry");
  assert.throws(() => parseConfig({ delivery: { maxAgeMs: 0 } }), /delivery\.maxAgeMs = 0/);
  assert.throws(() => parseConfig({ delivery: { siteConnections: { "mx.example": -1 } } }), /delivery\.siteConnections\.mx\.example = -1/);
  assert.throws(() => parseConfig({ delivery: { requireTls: "bank.example" } }), /delivery\.requireTls = "bank\.example"/);
  assert.throws(() => parseConfig({ delivery: { throttleRecoveryMs: 0 } }), /delivery\.throttleRecoveryMs = 0/);
});

test("site budgets: limits the whole cluster keeps per host pattern; a budget must limit something", () => {
  const config = parseConfig({ delivery: { siteBudgets: { ".google.com": { connections: 20, messagesPerHour: 50_000 } } } });
  assert.deepEqual(config.delivery.siteBudgets, { ".google.com": { connections: 20, messagesPerHour: 50_000 } });
  assert.equal(config.delivery.siteBudgetLeaseMs, 5_000);
  assert.deepEqual(parseConfig({}).delivery.siteBudgets, {});
  assert.throws(() => parseConfig({ delivery: { siteBudgets: { ".google.com": {} } } }), /site budget needs connections, messagesPerSecond, messagesPerHour, connectionsPerMinute or messagesPerConnection/);
  assert.throws(() => parseConfig({ delivery: { siteBudgets: { ".google.com": { perSource: true } } } }), /site budget needs connections/, "perSource alone limits nothing");
  const shaped = parseConfig({ delivery: { siteBudgets: { "domain:.example.org": { connectionsPerMinute: 30, messagesPerConnection: 50, perSource: true } } } });
  assert.deepEqual(shaped.delivery.siteBudgets, { "domain:.example.org": { connectionsPerMinute: 30, messagesPerConnection: 50, perSource: true } });
  assert.throws(() => parseConfig({ delivery: { siteBudgets: { ".google.com": { connections: 0 } } } }), /delivery\.siteBudgets\.\.google\.com\.connections = 0/);
});

test("site budgets may name a mailbox provider of the starter table or of delivery.providers", () => {
  const config = parseConfig({ delivery: { siteBudgets: { "provider:gmail": { connections: 20 }, "provider:acme": { connections: 2 } }, providers: { acme: [".mx.acme.example"] } } });
  assert.deepEqual(config.delivery.providers.gmail, [".google.com", ".googlemail.com"]);
  assert.deepEqual(config.delivery.providers.acme, [".mx.acme.example"]);
  assert.throws(() => parseConfig({ delivery: { siteBudgets: { "provider:nosuch": { connections: 2 } } } }), /"provider:nosuch", which is not a provider of the table/);
});
