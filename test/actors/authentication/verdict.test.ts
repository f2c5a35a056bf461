// mailauth's results as a verdict: each method's result, the sender's DMARC policy, the
// rows of the field, and what the metrics count; the verdict given when checks cannot end.
import { test } from "node:test";
import assert from "node:assert/strict";
import { methodResults, unavailableVerdict, verdictOf, type MailauthResults } from "../../../actors/authentication/verdict.ts";

const results = (overrides: Partial<MailauthResults> = {}): MailauthResults => ({
  dkim: {
    results: [
      { info: "dkim=pass header.i=@a.example header.s=s1", status: { result: "pass" } },
      { info: "dkim=fail (body hash did not verify) header.i=@b.example", status: { result: "fail" } },
    ] as MailauthResults["dkim"]["results"],
  },
  spf: { info: "spf=pass smtp.mailfrom=x@a.example", status: { result: "pass" } },
  arc: { status: { result: "none" } },
  dmarc: {
    response: { info: "dmarc=pass (p=REJECT) policy.dmarc=reject header.from=a.example", policy: "reject", status: { result: "pass", header: { from: "a.example" } } },
  },
  ...overrides,
});

test("each method's result, the DMARC policy and author domain, and the rows in order", () => {
  const verdict = verdictOf(results());
  assert.equal(verdict.spf, "pass");
  assert.deepEqual(verdict.dkim, ["pass", "fail"]);
  assert.equal(verdict.arc, "none");
  assert.deepEqual(verdict.dmarc, { result: "pass", policy: "reject", domain: "a.example", severalAuthors: false });
  assert.deepEqual(verdict.rows, [
    "dkim=pass header.i=@a.example header.s=s1",
    "dkim=fail (body hash did not verify) header.i=@b.example",
    "spf=pass smtp.mailfrom=x@a.example",
    "arc=none",
    "dmarc=pass (p=REJECT) policy.dmarc=reject header.from=a.example",
  ]);
  assert.deepEqual(methodResults(verdict), [
    { method: "spf", result: "pass" },
    { method: "dkim", result: "pass" },
    { method: "dkim", result: "fail" },
    { method: "arc", result: "none" },
    { method: "dmarc", result: "pass" },
  ]);
});

test("an unsigned message has dkim=none", () => {
  const verdict = verdictOf(results({ dkim: { results: [] } }));
  assert.deepEqual(verdict.dkim, ["none"]);
  assert.equal(verdict.rows[0], "dkim=none (message not signed)");
});

test("no From address: dmarc=none; several authors: permerror, marked as such", () => {
  const none = verdictOf(results({ dmarc: { response: false, reason: "no-author-domain" } }));
  assert.deepEqual(none.dmarc, { result: "none", policy: undefined, domain: undefined, severalAuthors: false });
  assert.equal(none.rows.at(-1), "dmarc=none (no author domain)");
  const several = verdictOf(results({ dmarc: { response: false, reason: "multiple-from-fields" } }));
  assert.deepEqual(several.dmarc, { result: "permerror", policy: undefined, domain: undefined, severalAuthors: true });
  assert.equal(several.rows.at(-1), "dmarc=permerror (multiple from fields)");
});

test("a temperror carries no policy (it may not be the one that applies)", () => {
  const verdict = verdictOf(results({ dmarc: { response: { info: "dmarc=temperror", policy: "reject", status: { result: "temperror" } } } }));
  assert.equal(verdict.dmarc.policy, undefined);
});

test("checks that could not end give temperror for every method, with the reason as a comment", () => {
  const verdict = unavailableVerdict("authentication timed out");
  assert.deepEqual(methodResults(verdict).map((r) => r.result), ["temperror", "temperror", "temperror", "temperror"]);
  assert.equal(verdict.dmarc.result, "temperror");
  assert.deepEqual(verdict.rows, ["dkim", "spf", "arc", "dmarc"].map((m) => `${m}=temperror (authentication timed out)`));
});
