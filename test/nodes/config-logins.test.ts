// The logins section (the per-account delay) and postmaster.
import { test } from "node:test";
import assert from "node:assert/strict";
import { parseConfig } from "../../nodes/config.ts";

const users = [
  { address: "alice@x.test", password: "p" },
  { address: "postmaster@y.test", password: "p" },
];

test("the per-account delay: defaults, and every key can be set", () => {
  assert.deepEqual(parseConfig({}).logins, { accountDelayAfterFailures: 5, accountDelayMs: 1_000, accountMaxDelayMs: 30_000, accountWindowMs: 900_000 });
  const set = { accountDelayAfterFailures: 3, accountDelayMs: 500, accountMaxDelayMs: 4_000, accountWindowMs: 60_000 };
  assert.deepEqual(parseConfig({ logins: set }).logins, set);
  assert.throws(() => parseConfig({ logins: { accountDelayMs: 0 } }), /logins\.accountDelayMs = 0/);
});

test("the per-user POP3 limit is gone (the per-account delay took its place, and locks nobody out)", () => {
  assert.throws(() => parseConfig({ pop3: { maxFailedLoginsPerUser: 10 } }), /pop3\.maxFailedLoginsPerUser = 10: Expected no excess property/);
});

test("postmaster: a user of that name, else the first user, unless set", () => {
  assert.equal(parseConfig({}).postmaster, "me@localhost");
  assert.equal(parseConfig({ localDomains: ["x.test", "y.test"], users }).postmaster, "postmaster@y.test");
  assert.equal(parseConfig({ localDomains: ["x.test"], users: [users[0]!] }).postmaster, "alice@x.test");
  assert.equal(parseConfig({ localDomains: ["x.test", "y.test"], users, postmaster: "Alice@X.test" }).postmaster, "alice@x.test");
  assert.equal(parseConfig({ localDomains: ["x.test"], users: [] }).postmaster, undefined);
  assert.equal(parseConfig({ localDomains: ["x.test"], users: [], postmaster: "ops@elsewhere.test" }).postmaster, "ops@elsewhere.test", "a remote address is relayed to");
});

test("postmaster in a local domain must be a user: otherwise its mail would have no mailbox", () => {
  assert.throws(
    () => parseConfig({ localDomains: ["x.test"], users: [users[0]!], postmaster: "root@x.test" }),
    /postmaster "root@x\.test" is in localDomains but is not one of users\[\]\.address/,
  );
  assert.throws(() => parseConfig({ postmaster: "root" }), /postmaster = "root": expected local@domain/);
});
