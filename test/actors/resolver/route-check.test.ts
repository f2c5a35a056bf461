// The asking node's check of a route that came over NATS: only what its own resolver
// could have answered under its own dns.allowedTargetNetworks may be used.
import { test } from "node:test";
import assert from "node:assert/strict";
import { isHostName, makeRouteCheck } from "../../../actors/resolver/route-check.ts";
import type { MailRoute } from "../../../protocol/route.ts";

const route = (addresses: string[], overrides: Partial<MailRoute> = {}): MailRoute => ({
  domain: "example.test",
  implicitMx: false,
  hosts: [{ name: "mx.example.test", preference: 10, addresses }],
  ...overrides,
});

const strict = makeRouteCheck([]);

test("a route to public addresses for the domain asked passes", () => {
  assert.deepEqual(strict.problems("example.test", route(["192.0.2.10", "2001:db8::25"])), []);
  assert.deepEqual(strict.problems("Example.Test.", route(["198.51.100.7"])), [], "names compare normalized");
});

test("loopback, unspecified, private and link-local targets are refused unless allowed", () => {
  for (const address of ["127.0.0.1", "::1", "0.0.0.0", "::", "10.1.2.3", "192.168.0.1", "169.254.169.254", "fe80::1", "fd00::1"]) {
    const problems = strict.problems("example.test", route([address]));
    assert.equal(problems.length, 1, address);
    assert.match(problems[0]!, /outside dns\.allowedTargetNetworks/, address);
  }
});

test("IPv4 loopback spelled as IPv6 is still loopback", () => {
  for (const address of ["::ffff:127.0.0.1", "::ffff:7f00:1", "0:0:0:0:0:0:0:1"]) {
    assert.notDeepEqual(strict.problems("example.test", route([address])), [], address);
  }
});

test("allowedTargetNetworks admits exactly its networks", () => {
  const check = makeRouteCheck(["127.0.0.2/32"]);
  assert.deepEqual(check.problems("example.test", route(["127.0.0.2"])), []);
  assert.match(check.problems("example.test", route(["127.0.0.1"])).join(), /127\.0\.0\.1 outside/);
  assert.match(check.problems("example.test", route(["::1"])).join(), /::1 outside/);
});

test("one refused address spoils the whole answer", () => {
  const problems = strict.problems("example.test", route(["192.0.2.10", "127.0.0.1"]));
  assert.deepEqual(problems, ['host "mx.example.test": 127.0.0.1 outside dns.allowedTargetNetworks']);
});

test("an address that is not a plain IP is refused: the socket would resolve a name, or a zone escapes the network checks", () => {
  for (const address of ["localhost", "mx.example.test", "2130706433", "127.1", "fe80::1%lo", ""]) {
    assert.match(strict.problems("example.test", route([address])).join(), /not an IP address/, JSON.stringify(address));
  }
});

test("an answer for another domain is refused", () => {
  assert.deepEqual(strict.problems("example.test", route(["192.0.2.10"], { domain: "other.test" })), ['answer is for "other.test"']);
});

test("a route without hosts, a host without addresses, and a preference out of range are refused", () => {
  assert.deepEqual(strict.problems("example.test", route([], { hosts: [] })), ["no hosts"]);
  assert.deepEqual(strict.problems("example.test", route([])), ['host "mx.example.test" has no address']);
  for (const preference of [-1, 65536, 1.5, Number.NaN]) {
    const hosts = [{ name: "mx.example.test", preference, addresses: ["192.0.2.10"] }];
    assert.equal(strict.problems("example.test", route([], { hosts })).length, 1, String(preference));
  }
});

test("host names must be DNS names or IP addresses (an address literal's host is its address)", () => {
  const named = (name: string) => strict.problems("example.test", route(["192.0.2.10"], { hosts: [{ name, preference: 0, addresses: ["192.0.2.10"] }] }));
  assert.deepEqual(named("192.0.2.10"), []);
  assert.deepEqual(strict.problems("[192.0.2.10]", { domain: "[192.0.2.10]", implicitMx: true, hosts: [{ name: "192.0.2.10", preference: 0, addresses: ["192.0.2.10"] }] }), []);
  for (const name of ["mx example.test", "mx.example.test\r\nX: y", "", "-mx.example.test", "mx..example.test", "mx.example.test."]) {
    assert.match(named(name).join(), /is not a host name/, JSON.stringify(name));
  }
});

test("isHostName follows RFC 1123 label rules, with underscores tolerated", () => {
  assert.ok(isHostName("mx1.example.test"));
  assert.ok(isHostName("xn--bcher-kva.example"));
  assert.ok(isHostName("_mx.example.test"));
  assert.ok(!isHostName(`${"a".repeat(64)}.test`));
  assert.ok(!isHostName(`${"a.".repeat(127)}ab`), "254 characters");
  assert.ok(!isHostName("mx-.example.test"));
});
