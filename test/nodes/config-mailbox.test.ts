// The pop3 and mailbox sections of the node config, and users[].quotaBytes.
import { test } from "node:test";
import assert from "node:assert/strict";
import { parseConfig } from "../../nodes/config.ts";

test("defaults: plaintext POP3 login only from loopback, 30 s lock lease, no quota", () => {
  const config = parseConfig({});
  assert.deepEqual(config.pop3.plaintextLoginNetworks, ["127.0.0.0/8", "::1/128"]);
  assert.equal(config.pop3.lockLeaseMs, 30_000);
  assert.equal(config.pop3.failedLoginDelayMs, 1_000);
  assert.deepEqual([config.pop3.maxFailedLoginsPerIp, config.pop3.maxFailedLoginsPerUserAndIp], [20, 5]);
  assert.deepEqual(config.mailbox, { quotaBytes: undefined, quotas: {}, idleMs: 60_000, askTimeoutMs: 30_000, moveStepTimeoutMs: 30_000 });
});

test("quotas: a default for everyone and per-user overrides, keyed by the lower-cased address", () => {
  const config = parseConfig({
    localDomains: ["x.test"],
    users: [
      { address: "Big@X.test", password: "p", quotaBytes: 5_000_000 },
      { address: "plain@x.test", password: "p" },
    ],
    mailbox: { quotaBytes: 1_000_000, idleMs: 5_000 },
    pop3: { plaintextLoginNetworks: [], lockLeaseMs: 10_000 },
  });
  assert.deepEqual(config.mailbox.quotas, { "big@x.test": 5_000_000 });
  assert.equal(config.mailbox.quotaBytes, 1_000_000);
  assert.equal(config.mailbox.idleMs, 5_000);
  assert.deepEqual(config.pop3.plaintextLoginNetworks, []);
  assert.equal(config.pop3.lockLeaseMs, 10_000);
});

test("bad values are named", () => {
  assert.throws(() => parseConfig({ pop3: { lockLeaseMs: 100 } }), /pop3\.lockLeaseMs = 100: /);
  assert.throws(() => parseConfig({ pop3: { plaintextLoginNetworks: ["everyone"] } }), /pop3\.plaintextLoginNetworks\[0\] = "everyone"/);
  assert.throws(() => parseConfig({ mailbox: { quotaBytes: 0 } }), /mailbox\.quotaBytes = 0: /);
  assert.throws(() => parseConfig({ users: [{ address: "a@localhost", password: "p", quotaBytes: -1 }] }), /users\[0\]\.quotaBytes = -1/);
});
