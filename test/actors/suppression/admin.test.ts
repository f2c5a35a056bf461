// Suppression list administration: the operator manages every scope, a tenant its own
// sender domains only; adds keep an existing record, removes say what was there; a list
// pages through what the caller may see. The store here is a map; the KV bucket behind it
// in a node is tested in test/cluster/suppressions.test.ts.
import { test } from "node:test";
import assert from "node:assert/strict";
import { Effect, Exit } from "effect";
import { makeSuppressionAdmin, type Caller, type SuppressionStore } from "../../../actors/suppression/admin.ts";
import { makeSuppressionList } from "../../../actors/suppression/list.ts";
import type { SuppressionAdminError, SuppressionListReply, SuppressionRecord } from "../../../protocol/suppression.ts";

const setup = () => {
  const records = new Map<string, SuppressionRecord>();
  const store: SuppressionStore = {
    create: (key, record) => Effect.sync(() => (records.has(key) ? false : (records.set(key, record), true))),
    remove: (key) => Effect.sync(() => records.delete(key)),
    get: (key) => Effect.sync(() => records.get(key)),
  };
  const list = makeSuppressionList();
  const added: string[] = [];
  const admin = makeSuppressionAdmin({ list, store, node: "n1", now: () => 7_000, added: (reason) => void added.push(reason), log: () => undefined });
  return { admin, list, records, added };
};

const operator: Caller = { kind: "operator" };
const acme: Caller = { kind: "tenant", tenant: "acme", scopes: ["acme.example", "news.acme.example"] };

const run = <A>(effect: Effect.Effect<A, SuppressionAdminError>) => Effect.runPromise(effect);
const failure = async (effect: Effect.Effect<unknown, SuppressionAdminError>) => {
  const exit = await Effect.runPromiseExit(effect);
  assert.ok(Exit.isFailure(exit) && exit.cause.reasons[0]?._tag === "Fail", "expected a typed failure");
  return (exit.cause.reasons[0] as { error: SuppressionAdminError }).error;
};

test("an add writes each address once, keeps records already there, and the node's view has them at once", async () => {
  const { admin, list, records, added } = setup();
  const first = await run(admin.add(acme, { scope: "ACME.example", addresses: ["a@dest.test", "b@dest.test", "A@DEST.test"], detail: "asked to stop" }));
  assert.deepEqual(first, { changed: ["a@dest.test", "b@dest.test"], unchanged: [] });
  const again = await run(admin.add(acme, { scope: "acme.example", addresses: ["b@dest.test", "c@dest.test"] }));
  assert.deepEqual(again, { changed: ["c@dest.test"], unchanged: ["b@dest.test"] });
  assert.deepEqual(list.lookup("x@acme.example", "A@dest.test"), { scope: "acme.example", reason: "manual" });
  assert.equal(list.lookup("x@other.example", "a@dest.test"), undefined);
  assert.deepEqual([...records.values()][0], { address: "a@dest.test", scope: "acme.example", reason: "manual", at: 7_000, node: "n1", detail: "asked to stop" });
  assert.deepEqual(added, ["manual", "manual", "manual"]);
});

test("a tenant may not touch the global scope or another tenant's domain; the operator may", async () => {
  const { admin } = setup();
  const global = await failure(admin.add(acme, { scope: "global", addresses: ["a@dest.test"] }));
  assert.equal(global.code, "ScopeNotAllowed");
  assert.match(global.message, /operator/);
  assert.equal((await failure(admin.remove(acme, { scope: "shop.example", addresses: ["a@dest.test"] }))).code, "ScopeNotAllowed");
  assert.equal((await failure(admin.list(acme, { scope: "global" }))).code, "ScopeNotAllowed");
  // One entry out of scope refuses the whole import: nothing is written.
  assert.equal((await failure(admin.import(acme, { entries: [{ address: "a@dest.test", scope: "acme.example" }, { address: "b@dest.test", scope: "global" }] }))).code, "ScopeNotAllowed");
  assert.deepEqual(await run(admin.add(operator, { scope: "global", addresses: ["a@dest.test"] })), { changed: ["a@dest.test"], unchanged: [] });
});

test("an import takes a scope per address, recorded as an import", async () => {
  const { admin, list } = setup();
  const reply = await run(admin.import(acme, { entries: [{ address: "a@dest.test", scope: "acme.example" }, { address: "a@dest.test", scope: "news.acme.example" }] }));
  assert.deepEqual(reply.changed, ["a@dest.test", "a@dest.test"]);
  assert.deepEqual(list.lookup("x@news.acme.example", "a@dest.test"), { scope: "news.acme.example", reason: "import" });
});

test("a remove says which addresses were on the list and takes them off the view", async () => {
  const { admin, list } = setup();
  await run(admin.add(operator, { scope: "global", addresses: ["a@dest.test"] }));
  assert.deepEqual(await run(admin.remove(operator, { scope: "global", addresses: ["A@dest.test", "b@dest.test"] })), { changed: ["A@dest.test"], unchanged: ["b@dest.test"] });
  assert.equal(list.lookup("x@acme.example", "a@dest.test"), undefined);
});

test("a list pages through the scopes the caller may see, with records read from the store", async () => {
  const { admin } = setup();
  await run(admin.add(operator, { scope: "global", addresses: ["g@dest.test"] }));
  await run(admin.add(operator, { scope: "shop.example", addresses: ["s@dest.test"] }));
  await run(admin.add(acme, { scope: "acme.example", addresses: Array.from({ length: 5 }, (_, n) => `u${n}@dest.test`) }));
  await run(admin.add(acme, { scope: "news.acme.example", addresses: ["u0@dest.test"] }));
  const seen: string[] = [];
  let after: string | undefined;
  for (let pages = 0; pages < 10; pages++) {
    const page: SuppressionListReply = await run(admin.list(acme, { limit: 2, ...(after ? { after } : {}) }));
    assert.equal(page.total, 6);
    seen.push(...page.entries.map((e) => `${e.scope} ${e.address}`));
    if (page.next === undefined) break;
    after = page.next;
  }
  assert.equal(seen.length, 6, "the tenant sees its own scopes only");
  assert.ok(seen.every((line) => line.includes("acme.example")));
  assert.equal((await run(admin.list(operator, {}))).total, 8);
  const one = await run(admin.list(operator, { address: "U0@dest.test" }));
  assert.deepEqual(one.entries.map((e) => e.scope).sort(), ["acme.example", "news.acme.example"]);
  assert.equal(one.next, undefined);
});
