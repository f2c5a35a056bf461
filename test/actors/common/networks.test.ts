import { test } from "node:test";
import assert from "node:assert/strict";
import { clientAddress, inNetworks, networksOf, parseCidr } from "../../../actors/common/networks.ts";

test("IPv4 networks match by prefix", () => {
  const networks = networksOf(["127.0.0.0/8", "192.168.1.0/25"]);
  assert.equal(networks.has("127.0.0.5"), true);
  assert.equal(networks.has("128.0.0.1"), false);
  assert.equal(networks.has("192.168.1.7"), true);
  assert.equal(networks.has("192.168.1.127"), true);
  assert.equal(networks.has("192.168.1.128"), false);
  assert.equal(networks.has("192.168.1.200"), false);
});

test("IPv6 networks match by prefix, and never match IPv4 addresses outside IPv4 ranges", () => {
  const networks = networksOf(["::1/128", "2001:db8::/32"]);
  assert.equal(networks.has("::1"), true);
  assert.equal(networks.has("::2"), false);
  assert.equal(networks.has("2001:db8::1"), true);
  assert.equal(networks.has("2001:db8:ffff:ffff::1"), true);
  assert.equal(networks.has("2001:db9::1"), false);
  assert.equal(networks.has("127.0.0.1"), false);
});

test("an IPv4-mapped IPv6 address (a dual-stack socket's IPv4 client) matches IPv4 networks", () => {
  const networks = networksOf(["127.0.0.0/8"]);
  assert.equal(networks.has("::ffff:127.0.0.1"), true);
  assert.equal(networks.has("::ffff:7f00:1"), true);
  assert.equal(networks.has("::ffff:10.0.0.1"), false);
});

test("a bare address is a network of one", () => {
  const networks = networksOf(["192.0.2.1", "2001:db8::5"]);
  assert.equal(networks.has("192.0.2.1"), true);
  assert.equal(networks.has("192.0.2.2"), false);
  assert.equal(networks.has("2001:db8::5"), true);
  assert.equal(networks.has("2001:db8::6"), false);
});

test("/0 matches every address of its family", () => {
  assert.equal(networksOf(["0.0.0.0/0"]).has("203.0.113.9"), true);
  assert.equal(networksOf(["::/0"]).has("2001:db8::1"), true);
});

test("bad CIDRs are refused by the parser and match nothing in a list", () => {
  for (const bad of ["", "everyone", "localhost", "10.0.0.0/33", "::/129", "10.0.0.0/", "10.0.0.0/8x", "10.0.0.0/-1", "10.0.0.0/8/8", "256.0.0.0/8", "10.0.0/8", "1::2::3/64", "01.2.3.4/8"]) {
    assert.equal(parseCidr(bad), undefined, bad);
  }
  // A malformed entry narrows the list, never widens it: the good entries still work.
  const networks = networksOf(["10.0.0.0/", "everyone", "192.0.2.0/24"]);
  assert.equal(networks.has("10.1.2.3"), false);
  assert.equal(networks.has("192.0.2.7"), true);
});

test("the parser reports network, prefix and family", () => {
  assert.deepEqual(parseCidr("10.0.0.0/8"), { network: "10.0.0.0", prefix: 8, family: "ipv4" });
  assert.deepEqual(parseCidr("fe80::/10"), { network: "fe80::", prefix: 10, family: "ipv6" });
  assert.deepEqual(parseCidr("::1"), { network: "::1", prefix: 128, family: "ipv6" });
});

test("anything that is not an address is in no network", () => {
  const networks = networksOf(["0.0.0.0/0", "::/0"]);
  for (const notAnAddress of ["", "localhost", "127.0.0.1:25", "1.2.3", "::g"]) assert.equal(networks.has(notAnAddress), false, notAnAddress);
});

test("inNetworks answers for a list of CIDR strings, the same list or a new one", () => {
  const trusted = ["127.0.0.0/8", "::1/128"];
  assert.equal(inNetworks("127.0.0.1", trusted), true);
  assert.equal(inNetworks("::1", trusted), true);
  assert.equal(inNetworks("10.0.0.1", trusted), false);
  assert.equal(inNetworks("10.0.0.1", ["10.0.0.0/8"]), true);
  assert.equal(inNetworks("10.0.0.1", []), false);
});

test("a client's IPv4-mapped address is written as IPv4; other addresses stay as they are", () => {
  assert.equal(clientAddress("::ffff:192.0.2.7"), "192.0.2.7");
  assert.equal(clientAddress("::FFFF:127.0.0.1"), "127.0.0.1");
  assert.equal(clientAddress("192.0.2.7"), "192.0.2.7");
  assert.equal(clientAddress("2001:db8::1"), "2001:db8::1");
  assert.equal(clientAddress("::ffff:2001:db8::1"), "::ffff:2001:db8::1");
});
