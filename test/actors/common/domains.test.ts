import { test } from "node:test";
import assert from "node:assert/strict";
import { domainMatcher, domainOf, localPartOf, matchesDomain } from "../../../actors/common/domains.ts";

test("an address's domain is what follows its last @, lower-cased", () => {
  assert.equal(domainOf("Alice@Example.ORG"), "example.org");
  assert.equal(domainOf('"a@b"@example.org'), "example.org");
  assert.equal(domainOf("postmaster"), "postmaster");
});

test("an address's local part is what precedes its last @, case kept", () => {
  assert.equal(localPartOf("Alice@example.org"), "Alice");
  assert.equal(localPartOf('"a@b"@example.org'), '"a@b"');
  assert.equal(localPartOf("postmaster"), "postmaster");
});

test("a plain pattern matches that name only, in any case", () => {
  assert.equal(matchesDomain("bank.example", "bank.example"), true);
  assert.equal(matchesDomain("Bank.Example", "BANK.example"), true);
  assert.equal(matchesDomain("bank.example", "www.bank.example"), false);
  assert.equal(matchesDomain("bank.example", "evilbank.example"), false);
});

test("a .suffix pattern matches names under it, not the name itself nor look-alikes", () => {
  assert.equal(matchesDomain(".google.com", "aspmx.l.google.com"), true);
  assert.equal(matchesDomain(".google.com", "ALT1.ASPMX.L.GOOGLE.COM"), true);
  assert.equal(matchesDomain(".google.com", "google.com"), false);
  assert.equal(matchesDomain(".google.com", "notgoogle.com"), false);
});

test("a matcher over several patterns matches a name when any pattern does", () => {
  const requireTls = domainMatcher(["bank.example", ".gov.example"]);
  assert.equal(requireTls("bank.example"), true);
  assert.equal(requireTls("BANK.EXAMPLE"), true);
  assert.equal(requireTls("tax.gov.example"), true);
  assert.equal(requireTls("gov.example"), false);
  assert.equal(requireTls("www.bank.example"), false);
  assert.equal(requireTls("other.example"), false);
  assert.equal(domainMatcher([])("bank.example"), false);
});
