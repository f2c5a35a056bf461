// The node config's dns section: defaults, the new resolver settings, and clear refusals.
import { test } from "node:test";
import assert from "node:assert/strict";
import { ConfigError, parseConfig } from "../../nodes/config.ts";

test("dns defaults: bounded cache, RFC 2308 cap, IPv4 first, no non-public targets, short PTR budget", () => {
  const { dns } = parseConfig({ dns: { servers: ["127.0.0.1:53"] } });
  assert.deepEqual(dns, {
    servers: [{ host: "127.0.0.1", port: 53 }],
    timeoutMs: 2000,
    tries: 2,
    cacheEntries: 10_000,
    minTtlSec: 5,
    maxTtlSec: 3600,
    maxNegativeTtlSec: 900,
    addressFamilies: "ipv4-first",
    allowedTargetNetworks: [],
    ptrTimeoutMs: 1000,
  });
});

test("dns settings are taken from the file", () => {
  const { dns } = parseConfig({
    dns: { servers: ["127.0.0.1:5353"], addressFamilies: "ipv6-first", allowedTargetNetworks: ["127.0.0.0/8", "fd00::/8"], minTtlSec: 0, maxNegativeTtlSec: 60 },
  });
  assert.equal(dns.addressFamilies, "ipv6-first");
  assert.deepEqual(dns.allowedTargetNetworks, ["127.0.0.0/8", "fd00::/8"]);
  assert.equal(dns.minTtlSec, 0);
  assert.equal(dns.maxNegativeTtlSec, 60);
});

test("a bad family or network is refused with its path and value", () => {
  assert.throws(
    () => parseConfig({ dns: { addressFamilies: "both", allowedTargetNetworks: ["loopback"] } }),
    (error: unknown) => {
      assert.ok(error instanceof ConfigError);
      assert.match(error.message, /dns\.addressFamilies = "both"/);
      assert.match(error.message, /dns\.allowedTargetNetworks\[0\] = "loopback": expected an IPv4 or IPv6 CIDR/);
      return true;
    },
  );
});
