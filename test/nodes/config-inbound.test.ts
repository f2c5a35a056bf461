// The inbound section: on by default with the hostname as authserv-id, policies only for
// local domains (or "*"), an authserv-id that can be written unquoted.
import { test } from "node:test";
import assert from "node:assert/strict";
import { parseConfig } from "../../nodes/config.ts";

test("defaults: MX mail authenticated, the hostname as authserv-id, no DMARC policy enforced", () => {
  const config = parseConfig({ hostname: "mx1.example.org" });
  assert.deepEqual(config.inbound, { authenticate: true, authservId: "mx1.example.org", timeoutMs: 10_000, maxHeaderBytes: 262_144, dmarc: {} });
});

test("an authserv-id of its own (one for every node of a cluster) and policies by domain, lower case", () => {
  const config = parseConfig({
    hostname: "mx1.example.org",
    localDomains: ["example.org", "example.net"],
    users: [{ address: "a@example.org", password: "pw" }],
    inbound: { authservId: "example.org", timeoutMs: 5_000, dmarc: { "Example.ORG": "reject", "*": "quarantine" } },
  });
  assert.equal(config.inbound.authservId, "example.org");
  assert.deepEqual(config.inbound.dmarc, { "example.org": "reject", "*": "quarantine" });
});

test("a policy for a domain that is not local, an unknown policy, a hostname that is no token: each named", () => {
  assert.throws(() => parseConfig({ localDomains: ["example.org"], users: [{ address: "a@example.org", password: "pw" }], inbound: { dmarc: { "example.com": "reject" } } }), /inbound\.dmarc names "example\.com", which is not one of localDomains/);
  assert.throws(() => parseConfig({ localDomains: ["example.org"], users: [{ address: "a@example.org", password: "pw" }], inbound: { dmarc: { "example.org": "block" } } }), /inbound\.dmarc/);
  // The hostname must be a host name anyway (it is said in greetings and Received fields).
  assert.throws(() => parseConfig({ hostname: "mail server", inbound: { authenticate: false } }), /hostname = "mail server": expected a host name/);
  assert.throws(() => parseConfig({ inbound: { maxHeaderBytes: 10 } }), /maxHeaderBytes/);
});
