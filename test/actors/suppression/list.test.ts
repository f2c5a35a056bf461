// The in-memory view of the suppression list: addresses compared without case (and IDN
// domains in their A-label form), global entries refusing every sender, sender-domain
// entries only mail from that domain, a reload replacing the view as a whole, and pages
// of keys in order, by scope and by address.
import { test } from "node:test";
import assert from "node:assert/strict";
import { makeSuppressionList } from "../../../actors/suppression/list.ts";
import { normalAddress, normalScope, scopeTokenOfKey, suppressionKey } from "../../../protocol/suppression.ts";

test("addresses are compared lower-cased, local part included, with IDN domains as A-labels", () => {
  assert.equal(normalAddress("John.Doe@Example.COM"), "john.doe@example.com");
  assert.equal(normalAddress("anna@bücher.example"), "anna@xn--bcher-kva.example");
  assert.equal(suppressionKey("global", "John.Doe@Example.COM"), suppressionKey("global", "john.doe@example.com"));
  assert.equal(suppressionKey("global", "anna@BÜCHER.example"), suppressionKey("global", "anna@xn--bcher-kva.example"));
  assert.notEqual(suppressionKey("global", "a@example.com"), suppressionKey("example.com", "a@example.com"));
  // Keys hold only characters NATS KV allows, whatever the address.
  assert.match(suppressionKey("news.example.com", "\"odd local\"+tag@example.com"), /^[-/_=.a-zA-Z0-9]+$/);
});

test("scopes: global, or a domain lower-cased; an address literal is no scope", () => {
  assert.equal(normalScope("GLOBAL"), "global");
  assert.equal(normalScope("News.Example.COM"), "news.example.com");
  assert.equal(normalScope("bücher.example"), "xn--bcher-kva.example");
  assert.equal(normalScope("[192.0.2.1]"), undefined);
  assert.equal(normalScope("not a domain"), undefined);
  // A domain's token cannot prefix a longer domain's.
  assert.notEqual(scopeTokenOfKey(suppressionKey("example.com", "a@x.test")), scopeTokenOfKey(suppressionKey("example.com.au", "a@x.test")));
});

test("a global entry refuses every sender; a sender-domain entry only mail from that domain", () => {
  const list = makeSuppressionList();
  list.put(suppressionKey("global", "gone@dest.test"), "bad-mailbox");
  list.put(suppressionKey("news.example", "angry@dest.test"), "complaint");
  assert.deepEqual(list.lookup("a@other.example", "Gone@Dest.Test"), { scope: "global", reason: "bad-mailbox" });
  assert.deepEqual(list.lookup("", "gone@dest.test"), { scope: "global", reason: "bad-mailbox" });
  assert.deepEqual(list.lookup("promo@NEWS.example", "ANGRY@dest.test"), { scope: "news.example", reason: "complaint" });
  assert.equal(list.lookup("promo@shop.example", "angry@dest.test"), undefined);
  assert.equal(list.lookup("", "angry@dest.test"), undefined);
  list.remove(suppressionKey("news.example", "angry@dest.test"));
  assert.equal(list.lookup("promo@news.example", "angry@dest.test"), undefined);
});

test("a reload fills a fresh view: the old one answers until it is finished, then entries removed meanwhile are gone", () => {
  const list = makeSuppressionList();
  assert.equal(list.loaded(), false);
  list.put(suppressionKey("global", "old@dest.test"), "manual");
  const reload = list.reload();
  reload.put(suppressionKey("global", "new@dest.test"), "import");
  assert.ok(list.lookup("", "old@dest.test"), "the current view still answers");
  assert.equal(list.lookup("", "new@dest.test"), undefined);
  reload.finish();
  assert.equal(list.loaded(), true);
  assert.equal(list.lookup("", "old@dest.test"), undefined);
  assert.deepEqual(list.lookup("", "new@dest.test"), { scope: "global", reason: "import" });
  assert.equal(list.size(), 1);
});

test("pages: keys in order after a cursor, by scope and by address, with the total selected", () => {
  const list = makeSuppressionList();
  const addresses = Array.from({ length: 25 }, (_, n) => `user${n}@dest.test`);
  for (const address of addresses) list.put(suppressionKey("example.com", address), "manual");
  list.put(suppressionKey("example.com.au", "user1@dest.test"), "manual");
  list.put(suppressionKey("global", "user1@dest.test"), "bad-mailbox");
  const scopes = new Set([scopeTokenOfKey(suppressionKey("example.com", "x@y.z"))]);
  const seen: string[] = [];
  let after: string | undefined;
  for (;;) {
    const page = list.page({ scopes, after, limit: 10 });
    assert.equal(page.total, 25);
    seen.push(...page.keys);
    if (page.keys.length < 10) break;
    after = page.keys.at(-1);
  }
  assert.equal(seen.length, 25);
  assert.deepEqual(seen, [...seen].sort());
  assert.deepEqual(new Set(seen), new Set(addresses.map((a) => suppressionKey("example.com", a))));
  const everywhere = list.page({ address: "USER1@dest.test", limit: 10 });
  assert.deepEqual(new Set(everywhere.keys), new Set(["global", "example.com", "example.com.au"].map((s) => suppressionKey(s, "user1@dest.test"))));
  assert.equal(list.page({ limit: 1000 }).total, 27);
});

test("pages stay in order and complete while entries come and go between them", () => {
  const list = makeSuppressionList();
  const reload = list.reload();
  const scope = "example.com";
  for (let n = 0; n < 300; n++) reload.put(suppressionKey(scope, `old${n}@dest.test`), "import");
  reload.finish();
  const token = new Set([scopeTokenOfKey(suppressionKey(scope, "x@y.z"))]);
  const first = list.page({ scopes: token, limit: 100 });
  // Between pages: new keys, a removal, a key removed and put back twice, another scope's key.
  for (let n = 0; n < 50; n++) list.put(suppressionKey(scope, `new${n}@dest.test`), "manual");
  list.remove(suppressionKey(scope, "old7@dest.test"));
  for (let n = 0; n < 2; n++) {
    list.remove(suppressionKey(scope, "old8@dest.test"));
    list.put(suppressionKey(scope, "old8@dest.test"), "manual");
  }
  list.put(suppressionKey("example.org", "old9@dest.test"), "manual");
  const seen = [...first.keys];
  let after = first.keys.at(-1);
  for (;;) {
    const page = list.page({ scopes: token, after, limit: 100 });
    assert.equal(page.total, 349);
    if (page.keys.length === 0) break;
    seen.push(...page.keys);
    after = page.keys.at(-1);
  }
  assert.deepEqual(seen, [...new Set(seen)].sort(), "in order, each key once");
  const expected = new Set([...Array.from({ length: 300 }, (_, n) => `old${n}`), ...Array.from({ length: 50 }, (_, n) => `new${n}`)].map((name) => suppressionKey(scope, `${name}@dest.test`)));
  expected.delete(suppressionKey(scope, "old7@dest.test"));
  // Keys of the first page were listed before the changes; every later one is as it is now.
  assert.ok([...expected].filter((key) => key > first.keys.at(-1)!).every((key) => seen.includes(key)));
  assert.equal(seen.includes(suppressionKey(scope, "old7@dest.test")) && suppressionKey(scope, "old7@dest.test") > first.keys.at(-1)!, false);
  assert.equal(list.page({ limit: 1000 }).total, 350);
});
