// The API's submit decisions: tenants, sender ownership, recipients and send-at times.
import { test } from "node:test";
import assert from "node:assert/strict";
import { checkSender, checkTenant, decideRecipients, dueTimeOf, type SenderPolicy } from "../../../actors/api/policy.ts";
import { tenantOf } from "../../../actors/common/tenants.ts";

const tenants = [{ name: "acme", senderDomains: ["acme.test"] }];
const policy: SenderPolicy = { tenants, localDomains: ["example.test"], isUserAddress: (a) => a === "alerts@partner.test" };

test("a message's tenant owns its sender's domain, without regard to case; others are default", () => {
  assert.equal(tenantOf("News@ACME.test", tenants), "acme");
  assert.equal(tenantOf("a@example.test", tenants), "default");
  assert.equal(tenantOf("", tenants), "default");
  assert.equal(tenantOf("a@acme.test", []), "default");
});

test("the subject's tenant must be configured or default", () => {
  assert.equal(checkTenant("acme", tenants), undefined);
  assert.equal(checkTenant("default", []), undefined);
  assert.equal(checkTenant("other", tenants)?.code, "UnknownTenant");
});

test("a sender must be owned (local domain, a user's address or alias, the tenant's domains) and of the subject's tenant", () => {
  assert.equal(checkSender("a@example.test", "default", policy), undefined);
  assert.equal(checkSender("alerts@partner.test", "default", policy), undefined);
  assert.equal(checkSender("news@acme.test", "acme", policy), undefined);
  assert.equal(checkSender("news@acme.test", "default", policy)?.code, "SenderNotAllowed");
  assert.equal(checkSender("a@example.test", "acme", policy)?.code, "SenderNotAllowed");
  assert.equal(checkSender("x@elsewhere.test", "default", policy)?.code, "SenderNotAllowed");
  assert.equal(checkSender("", "default", policy)?.code, "SenderNotAllowed");
  assert.equal(checkSender("a@-bad-.test", "default", policy)?.code, "BadRequest");
});

test("recipients are decided as for authenticated submission, once each", () => {
  const decided = decideRecipients(["x@remote.test", "X@remote.test", "bob@example.test", "ghost@example.test"], "default", {
    localDomains: ["example.test"],
    isLocalUser: (a) => a === "bob@example.test",
    catchAll: {},
    postmaster: undefined,
    trustedNetworks: [],
  });
  assert.deepEqual(decided.accepted, [{ recipient: "x@remote.test", deliverTo: "x@remote.test" }, { recipient: "bob@example.test", deliverTo: "bob@example.test" }]);
  assert.deepEqual(decided.refused, [{ recipient: "ghost@example.test", reason: "unknown-user", reply: "550 5.1.1 No such user here" }]);
});

test("send-at: none or past is now, ISO or epoch ms, refused beyond the limit or when not a time", () => {
  const now = Date.parse("2030-01-01T00:00:00Z");
  assert.equal(dueTimeOf(undefined, now, 1_000), now);
  assert.equal(dueTimeOf(now - 5, now, 1_000), now);
  assert.equal(dueTimeOf("2030-01-01T00:00:00.500Z", now, 1_000), now + 500);
  assert.equal((dueTimeOf(now + 1_001, now, 1_000) as { code: string }).code, "LimitExceeded");
  assert.equal((dueTimeOf("tomorrow-ish", now, 1_000) as { code: string }).code, "BadRequest");
});
