import { test } from "node:test";
import assert from "node:assert/strict";
import { domainMatcher, domainOf, domainSyntaxProblem, localPartOf, matchesDomain, withAsciiDomain } from "../../../actors/common/domains.ts";

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

test("domains that can exist pass the syntax check: names up to the DNS limits, IDNs, single labels", () => {
  for (const domain of ["example.org", "EXAMPLE.org", "mx-1.example.org", "postmaster", "xn--bcher-kva.example", "bücher.example", "123.example"]) {
    assert.equal(domainSyntaxProblem(domain), undefined, domain);
  }
  assert.equal(domainSyntaxProblem(`${"a".repeat(63)}.org`), undefined, "a label of 63 octets");
  const longest = [..."abc"].map((c) => c.repeat(63)).join(".") + "." + "d".repeat(61); // 253 characters
  assert.equal(longest.length, 253);
  assert.equal(domainSyntaxProblem(longest), undefined);
});

test("address literals pass when they hold an IP address of the right family, else they cannot exist", () => {
  for (const literal of ["[192.0.2.1]", "[IPv6:2001:db8::1]", "[ipv6:::1]", "[IPv6:::ffff:192.0.2.1]"]) assert.equal(domainSyntaxProblem(literal), undefined, literal);
  for (const literal of ["[192.0.2]", "[IPv6:192.0.2.1]", "[2001:db8::1]", "[example.org]", "[192.0.2.1"]) {
    assert.equal(domainSyntaxProblem(literal), "bad-address-literal", literal);
  }
});

test("domains that cannot exist are named with their problem", () => {
  assert.equal(domainSyntaxProblem("a..b"), "empty-label");
  assert.equal(domainSyntaxProblem(".example.org"), "empty-label");
  assert.equal(domainSyntaxProblem("example.org."), "empty-label");
  assert.equal(domainSyntaxProblem(""), "empty-label");
  assert.equal(domainSyntaxProblem(`${"a".repeat(64)}.org`), "label-too-long");
  assert.equal(domainSyntaxProblem(`bü${"c".repeat(62)}.de`), "label-too-long", "the limit applies to the A-label");
  const tooLong = [..."abc"].map((c) => c.repeat(63)).join(".") + "." + "d".repeat(62);
  assert.equal(tooLong.length, 254);
  assert.equal(domainSyntaxProblem(tooLong), "domain-too-long");
  assert.equal(domainSyntaxProblem("ex_ample.org"), "bad-character");
  assert.equal(domainSyntaxProblem("ex ample.org"), "bad-character");
  assert.equal(domainSyntaxProblem("-example.org"), "hyphen-at-label-edge");
  assert.equal(domainSyntaxProblem("example-.org"), "hyphen-at-label-edge");
});

test("withAsciiDomain writes a Unicode domain as its A-label when the local part is ASCII, and leaves everything else", () => {
  assert.equal(withAsciiDomain("anna@bücher.test"), "anna@xn--bcher-kva.test");
  assert.equal(withAsciiDomain("Anna@München.example"), "Anna@xn--mnchen-3ya.example", "the local part keeps its case");
  assert.equal(withAsciiDomain("anna@example.test"), "anna@example.test");
  assert.equal(withAsciiDomain("jörg@bücher.test"), "jörg@bücher.test", "a non-ASCII local part needs SMTPUTF8 whatever the domain");
  assert.equal(withAsciiDomain(""), "", "the null sender");
  assert.equal(withAsciiDomain("postmaster"), "postmaster");
});
