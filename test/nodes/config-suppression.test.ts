// suppression.*: the list is on by default, automatic adds per sender domain from hard
// bounces and complaints; a scope or kind it does not know is refused at start.
import { test } from "node:test";
import assert from "node:assert/strict";
import { parseConfig } from "../../nodes/config.ts";

test("defaults: on, sender-domain scope, every kind adds, 5 s to load at start", () => {
  assert.deepEqual(parseConfig({}).suppression, { enabled: true, scope: "sender-domain", autoAdd: ["bad-mailbox", "bad-domain", "complaint"], loadTimeoutMs: 5_000 });
});

test("scope, kinds and switch as configured; unknown values are refused with their path", () => {
  const config = parseConfig({ suppression: { enabled: false, scope: "global", autoAdd: ["complaint", "complaint"] } });
  assert.deepEqual([config.suppression.enabled, config.suppression.scope, config.suppression.autoAdd], [false, "global", ["complaint"]]);
  assert.deepEqual(parseConfig({ suppression: { autoAdd: [] } }).suppression.autoAdd, []);
  assert.throws(() => parseConfig({ suppression: { scope: "tenant" } }), /suppression\.scope = "tenant"/);
  assert.throws(() => parseConfig({ suppression: { autoAdd: ["quota"] } }), /suppression\.autoAdd\[0\] = "quota"/);
});
