// The local DMARC policy by recipient domain, and what a verdict makes the node do: the
// weaker of the local and the sender's policy for a DMARC fail; junk at most for a message
// that names several authors; delivery for anything else.
import { test } from "node:test";
import assert from "node:assert/strict";
import { dmarcAction, policyFor, refusalReply, type InboundPolicy } from "../../../actors/authentication/policy.ts";
import type { DmarcVerdict, SenderPolicy } from "../../../actors/authentication/verdict.ts";

const dmarc = (result: DmarcVerdict["result"], policy?: SenderPolicy, severalAuthors = false): DmarcVerdict => ({
  result,
  policy,
  domain: "bank.example",
  severalAuthors,
});

test("a domain's own entry, else \"*\", else none", () => {
  const policies = { "strict.example": "reject", "*": "quarantine" } as const;
  assert.equal(policyFor(policies, "strict.example"), "reject");
  assert.equal(policyFor(policies, "Strict.Example"), "reject");
  assert.equal(policyFor(policies, "other.example"), "quarantine");
  assert.equal(policyFor({}, "other.example"), "none");
});

test("a DMARC fail takes the weaker of the local and the sender's policy", () => {
  const table: Array<[InboundPolicy, SenderPolicy | undefined, string]> = [
    ["reject", "reject", "refuse"],
    ["reject", "quarantine", "quarantine"],
    ["reject", "none", "deliver"],
    ["reject", undefined, "deliver"],
    ["quarantine", "reject", "quarantine"],
    ["quarantine", "quarantine", "quarantine"],
    ["quarantine", "none", "deliver"],
    ["none", "reject", "deliver"],
    ["none", "quarantine", "deliver"],
  ];
  for (const [local, sender, action] of table) assert.equal(dmarcAction(dmarc("fail", sender), local), action, `local ${local}, sender ${sender}`);
});

test("pass, none, temperror and permerror are delivered whatever the policies", () => {
  for (const result of ["pass", "none", "temperror", "permerror"] as const) {
    assert.equal(dmarcAction(dmarc(result, "reject"), "reject"), "deliver", result);
  }
});

test("a message naming several authors is junk at most, never refused", () => {
  assert.equal(dmarcAction(dmarc("permerror", undefined, true), "reject"), "quarantine");
  assert.equal(dmarcAction(dmarc("permerror", undefined, true), "quarantine"), "quarantine");
  assert.equal(dmarcAction(dmarc("permerror", undefined, true), "none"), "deliver");
});

test("the refusal is 550 5.7.1 and names the author domain", () => {
  const reply = refusalReply(dmarc("fail", "reject"));
  assert.equal(reply.code, 550);
  assert.match(reply.text, /^5\.7\.1 .*bank\.example/);
});
