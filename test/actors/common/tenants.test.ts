// A message's tenant is the one owning its sender's domain, else "default".
import { test } from "node:test";
import assert from "node:assert/strict";
import { tenantOf } from "../../../actors/common/tenants.ts";

const tenants = [
  { name: "acme", senderDomains: ["acme.test", "Mail.Acme.test"] },
  { name: "beta", senderDomains: ["beta.test"] },
];

test("the tenant owning the sender's domain, case-insensitively; else default", () => {
  assert.equal(tenantOf("Ann@ACME.test", tenants), "acme");
  assert.equal(tenantOf("news@mail.acme.TEST", tenants), "acme");
  assert.equal(tenantOf("b@beta.test", tenants), "beta");
  assert.equal(tenantOf("x@sub.beta.test", tenants), "default", "a subdomain is not the domain");
  assert.equal(tenantOf("", tenants), "default", "the null sender");
  assert.equal(tenantOf("a@acme.test", []), "default");
});
