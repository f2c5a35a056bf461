// IP pools: which pool a message leaves from (the API's choice, then the rules in order,
// then the default), which address of the pool an attempt takes (by weight), and the
// header reader the rules use.
import { test } from "node:test";
import assert from "node:assert/strict";
import { choosePool, headerValue, pickSource, poolOf, type PoolsConfig } from "../../../actors/delivery/pools.ts";

const config: PoolsConfig = {
  pools: {
    bulk: [{ address: "127.0.0.2", ehlo: "bulk.tern.test", weight: 1 }],
    tx: [
      { address: "127.0.0.3", ehlo: "tx1.tern.test", weight: 3 },
      { address: "127.0.0.4", ehlo: "tx2.tern.test", weight: 1 },
    ],
  },
  rules: [
    { senderDomain: ".news.example.org", pool: "bulk" },
    { user: "Alice@example.org", pool: "tx" },
    { header: "X-Campaign", value: "spring", pool: "bulk" },
  ],
  defaultPool: "tx",
};

const none = () => undefined;

test("the API's pool first, then the first rule that matches, else the default pool", () => {
  assert.equal(choosePool(config, { sender: "a@news.example.org", requested: "tx", header: none }), "tx");
  assert.equal(choosePool(config, { sender: "a@mail.news.example.org", header: none }), "bulk", "a subdomain of the suffix");
  assert.equal(choosePool(config, { sender: "a@example.org", user: "alice@example.org", header: none }), "tx", "user names match case-insensitively");
  assert.equal(choosePool(config, { sender: "a@example.org", header: (name) => (name === "X-Campaign" ? "Spring" : undefined) }), "bulk");
  assert.equal(choosePool(config, { sender: "", header: none }), "tx", "the null sender matches no domain rule");
  assert.equal(choosePool({ ...config, defaultPool: undefined }, { sender: "a@elsewhere.test", header: none }), undefined, "no pool: the default address");
});

test("an attempt takes an address of the pool by weight", () => {
  const tx = config.pools.tx!;
  const picks = Array.from({ length: 100 }, (_, n) => pickSource(tx, n / 100)!.address);
  assert.equal(picks.filter((a) => a === "127.0.0.3").length, 75);
  assert.equal(picks.filter((a) => a === "127.0.0.4").length, 25);
  assert.equal(pickSource(config.pools.bulk!, 0.999)?.ehlo, "bulk.tern.test");
  assert.equal(pickSource([], 0.5), undefined);
});

test("headers are read case-insensitively, folded lines joined, the first occurrence wins", () => {
  const section = "Subject: hi\r\nx-campaign:  spring\r\n  sale\r\nX-Campaign: autumn\r\nFrom: a@b\r\n";
  assert.equal(headerValue(section, "X-Campaign"), "spring sale");
  assert.equal(headerValue(section, "subject"), "hi");
  assert.equal(headerValue(section, "To"), undefined);
  assert.equal(poolOf({ pool: "bulk" }), "bulk");
  assert.equal(poolOf({ pool: 3 }), undefined);
  assert.equal(poolOf(undefined), undefined);
});
