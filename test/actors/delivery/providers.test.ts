// Mailbox providers: a budget key names a host pattern or a provider of the table, and
// matches the MX hosts of that provider; a destination's provider (for warm-up caps) is
// the one of its MX hosts, else "other".
import { test } from "node:test";
import assert from "node:assert/strict";
import { keyMatchesHost, OTHER_PROVIDER, patternsOf, providerOfHosts, starterProviders } from "../../../actors/delivery/providers.ts";

test("a provider's budget holds for each of its MX host names; a host pattern for its own", () => {
  assert.equal(keyMatchesHost("provider:gmail", starterProviders, "gmail-smtp-in.l.google.com"), true);
  assert.equal(keyMatchesHost("provider:gmail", starterProviders, "aspmx.l.google.com"), true, "a Workspace domain's MX");
  assert.equal(keyMatchesHost("provider:microsoft", starterProviders, "example-org.mail.protection.outlook.com"), true);
  assert.equal(keyMatchesHost("provider:gmail", starterProviders, "mx.example.org"), false);
  assert.equal(keyMatchesHost(".example.org", starterProviders, "mx1.example.org"), true);
  assert.equal(keyMatchesHost("provider:nosuch", starterProviders, "mx1.example.org"), false);
  assert.equal(patternsOf("provider:nosuch", starterProviders), undefined);
});

test("a destination's provider is found by its MX hosts; one of no provider is \"other\"", () => {
  assert.equal(providerOfHosts(["alt1.aspmx.l.google.com", "aspmx.l.google.com"], starterProviders), "gmail");
  assert.equal(providerOfHosts(["mx1.example.org", "example-org.mail.protection.outlook.com"], starterProviders), "microsoft", "any of the hosts");
  assert.equal(providerOfHosts(["mx1.example.org"], starterProviders), OTHER_PROVIDER);
  assert.equal(providerOfHosts(["mx1.example.org"], { ...starterProviders, acme: [".example.org"] }), "acme");
});
