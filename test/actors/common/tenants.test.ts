// A message's tenant is the tenant owning its sender's domain (api.tenants), else "default".
import { test } from "node:test";
import assert from "node:assert/strict";
import { tenantOf } from "../../../actors/common/tenants.ts";

const tenants = [{ name: "acme", senderDomains: ["Acme.Example"] }];

test("tenantOf: the tenant owning the sender's domain, in any case, else default", () => {
  assert.equal(tenantOf("news@ACME.example", tenants), "acme");
  assert.equal(tenantOf("x@other.example", tenants), "default");
  assert.equal(tenantOf("", tenants), "default");
  assert.equal(tenantOf("news@acme.example", []), "default");
});

