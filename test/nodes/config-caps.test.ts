// The listeners' overall connection caps in the node config.
import { test } from "node:test";
import assert from "node:assert/strict";
import { parseConfig } from "../../nodes/config.ts";

test("defaults: 1000 SMTP, 200 SMTPS, 500 POP3 and 500 IMAP (with IMAPS) sessions", () => {
  const config = parseConfig({});
  assert.equal(config.smtp.maxConnections, 1_000);
  assert.equal(config.smtp.maxSmtpsConnections, 200);
  assert.equal(config.pop3.maxConnections, 500);
  assert.equal(config.imap.maxConnections, 500);
});

test("each cap is set on its own", () => {
  const config = parseConfig({ smtp: { maxConnections: 5, maxSmtpsConnections: 2 }, pop3: { maxConnections: 7 }, imap: { maxConnections: 9 } });
  assert.deepEqual([config.smtp.maxConnections, config.smtp.maxSmtpsConnections, config.pop3.maxConnections, config.imap.maxConnections], [5, 2, 7, 9]);
});

test("a cap must be a whole number of at least 1", () => {
  assert.throws(() => parseConfig({ smtp: { maxConnections: 0 } }), /smtp\.maxConnections = 0: /);
  assert.throws(() => parseConfig({ smtp: { maxSmtpsConnections: 2.5 } }), /smtp\.maxSmtpsConnections = 2\.5: /);
  assert.throws(() => parseConfig({ pop3: { maxConnections: "many" } }), /pop3\.maxConnections = "many": /);
  assert.throws(() => parseConfig({ imap: { maxConnections: -1 } }), /imap\.maxConnections = -1: /);
});
