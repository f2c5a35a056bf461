// status.keepFinishedMs: how long finished recipients stay answerable by `tern status`.
import { test } from "node:test";
import assert from "node:assert/strict";
import { parseConfig } from "../../nodes/config.ts";

test("finished recipients are kept 7 days unless configured; the time must be a positive whole number of ms", () => {
  assert.equal(parseConfig({}).status.keepFinishedMs, 7 * 24 * 3_600_000);
  assert.equal(parseConfig({ status: { keepFinishedMs: 3_600_000 } }).status.keepFinishedMs, 3_600_000);
  assert.throws(() => parseConfig({ status: { keepFinishedMs: 0 } }), /status\.keepFinishedMs = 0/);
  assert.throws(() => parseConfig({ status: { keepFinishedMs: "7d" } }), /status\.keepFinishedMs = "7d"/);
});
