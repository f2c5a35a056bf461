// Which site budget a delivery falls under: MX host patterns, providers, recipient domains,
// the first rule that matches, and per-source budgets named by the source address.
import { test } from "node:test";
import assert from "node:assert/strict";
import { budgetFor, budgetsOf, type BudgetRules } from "../../../actors/delivery/budget-rules.ts";
import { starterProviders } from "../../../actors/delivery/providers.ts";

const rules: BudgetRules = {
  rules: {
    "domain:.example.org": { connections: 2 },
    "provider:gmail": { connections: 20, connectionsPerMinute: 60, perSource: true },
    ".mx.example.net": { messagesPerSecond: 5 },
  },
  providers: starterProviders,
  poolAddresses: ["192.0.2.1", "192.0.2.2"],
  node: "n1",
};

const route = (domain: string, ...hosts: string[]) => ({ domain, hosts: hosts.map((name) => ({ name, preference: 10, addresses: ["192.0.2.9"] })) });

test("a recipient-domain rule matches the domain (and its subdomains with a leading dot), whatever the MX hosts", () => {
  assert.equal(budgetFor(rules, route("mail.example.org", "mx.elsewhere.test"), undefined), "domain:.example.org");
  assert.equal(budgetFor(rules, route("Example.org", "mx.elsewhere.test"), undefined), "domain:.example.org");
  assert.equal(budgetFor(rules, route("notexample.org", "mx.elsewhere.test"), undefined), undefined);
  assert.equal(budgetFor(rules, route("example.com", "mx.elsewhere.test"), undefined), undefined);
});

test("a per-source rule is one budget per source address; mail without a pool address counts under the node's own", () => {
  const gmail = route("gmail.com", "gmail-smtp-in.l.google.com");
  assert.equal(budgetFor(rules, gmail, "192.0.2.2"), "provider:gmail@192.0.2.2");
  assert.equal(budgetFor(rules, gmail, undefined), "provider:gmail@n1");
  assert.equal(budgetFor(rules, route("example.net", "a.mx.example.net"), "192.0.2.2"), ".mx.example.net", "a shared rule ignores the source");
});

test("the first matching rule applies", () => {
  assert.equal(budgetFor(rules, route("example.org", "alt1.gmail-smtp-in.l.google.com"), "192.0.2.1"), "domain:.example.org");
});

test("a node keeps a lease on each budget: one per shared rule, one per source address and its own for per-source rules", () => {
  assert.deepEqual(
    budgetsOf(rules).map(({ budget, limits }) => [budget, limits]),
    [
      ["domain:.example.org", { connections: 2 }],
      ["provider:gmail@n1", { connections: 20, connectionsPerMinute: 60 }],
      ["provider:gmail@192.0.2.1", { connections: 20, connectionsPerMinute: 60 }],
      ["provider:gmail@192.0.2.2", { connections: 20, connectionsPerMinute: 60 }],
      [".mx.example.net", { messagesPerSecond: 5 }],
    ],
  );
});
