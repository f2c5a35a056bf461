// Which suppression list scopes an application of each tenant manages over the API: its
// sender domains (lower case, A-labels); for "default", the local domains no tenant owns.
import { test } from "node:test";
import assert from "node:assert/strict";
import { tenantScopes } from "../../../nodes/services/suppression.ts";

test("a tenant manages its sender domains; default the local domains no tenant owns; an unknown tenant nothing", () => {
  const scopesOf = tenantScopes(
    [
      { name: "acme", senderDomains: ["Acme.Example", "news.acme.example"] },
      { name: "shop", senderDomains: ["bücher.example", "local.example"] },
    ],
    ["local.example", "mail.example"],
  );
  assert.deepEqual(scopesOf("acme"), ["acme.example", "news.acme.example"]);
  assert.deepEqual(scopesOf("shop"), ["xn--bcher-kva.example", "local.example"]);
  assert.deepEqual(scopesOf("default"), ["mail.example"]);
  assert.equal(scopesOf("other"), undefined);
});
