// TXT, PTR and TLSA through the same client and cache as routing, against dnsmasq.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { Effect, Fiber } from "effect";
import { TestClock } from "effect/testing";
import { makeDnsClient } from "../../../actors/resolver/dns-client.ts";
import { reverseName } from "../../../actors/resolver/lookups.ts";
import { makeCachedResolver } from "../../../actors/resolver/resolver.ts";
import { DnsTemporaryFailure } from "../../../protocol/route.ts";
import { startDnsmasq, type RunningDnsmasq } from "../../support/dnsmasq.ts";
import { startScriptedDns, type ScriptedDns } from "../../support/fake-dns.ts";

describe("TXT, PTR and TLSA against dnsmasq", () => {
  let dnsmasq: RunningDnsmasq;
  let queries = 0;
  const resolver = () =>
    Effect.runSync(makeCachedResolver(
      makeDnsClient({ servers: [dnsmasq], timeoutMs: 500, tries: 1, observer: { queried: () => void queries++ } }),
      { maxEntries: 100, minTtlSec: 1, maxTtlSec: 3600 },
    ));
  before(async () => {
    dnsmasq = await startDnsmasq({
      txt: [
        { name: "spf.test", strings: ["v=spf1 ip4:192.0.2.0/24 ", "-all"] },
        { name: "spf.test", strings: ["unrelated=1"] },
        { name: "_dmarc.spf.test", strings: ["v=DMARC1; p=reject"] },
      ],
      hosts: [{ name: "mx.spf.test", address: "192.0.2.25" }],
      ptr: [
        { name: "25.2.0.192.in-addr.arpa", target: "mx.spf.test" },
        { name: reverseName("2001:db8::25")!, target: "mx6.spf.test" },
      ],
      // TLSA 3 1 1 <sha-256 of a key>, as raw RDATA: usage, selector, matching type, data.
      raw: [{ name: "_25._tcp.mx.spf.test", type: 52, hex: `030101${"ab".repeat(32)}` }],
    });
  });
  after(() => dnsmasq.stop());

  test("TXT records come back one string each, their character-strings joined", async () => {
    const texts = await Effect.runPromise(resolver().txt("spf.test"));
    assert.deepEqual([...texts].sort(), ["unrelated=1", "v=spf1 ip4:192.0.2.0/24 -all"]);
    assert.deepEqual(await Effect.runPromise(resolver().txt("_dmarc.spf.test")), ["v=DMARC1; p=reject"]);
  });

  test("no TXT and no such name both give none", async () => {
    assert.deepEqual(await Effect.runPromise(resolver().txt("mx.spf.test")), []);
    assert.deepEqual(await Effect.runPromise(resolver().txt("nowhere.test")), []);
  });

  test("TXT answers are cached like the rest", async () => {
    const cached = resolver();
    await Effect.runPromise(cached.txt("spf.test"));
    const before = queries;
    await Effect.runPromise(cached.txt("SPF.test."));
    assert.equal(queries, before);
  });

  test("PTR gives the names of an IPv4 or IPv6 address, and none when there is no PTR", async () => {
    assert.deepEqual(await Effect.runPromise(resolver().ptr("192.0.2.25")), ["mx.spf.test"]);
    assert.deepEqual(await Effect.runPromise(resolver().ptr("::ffff:192.0.2.25")), ["mx.spf.test"]);
    assert.deepEqual(await Effect.runPromise(resolver().ptr("2001:db8::25")), ["mx6.spf.test"]);
    assert.deepEqual(await Effect.runPromise(resolver().ptr("192.0.2.99")), []);
  });

  test("TLSA records of an SMTP server, with whether the resolver validated them", async () => {
    const answer = await Effect.runPromise(resolver().tlsa("mx.spf.test", 25));
    assert.deepEqual(
      answer.records.map(({ usage, selector, matchingType, data }) => ({ usage, selector, matchingType, data })),
      [{ usage: 3, selector: 1, matchingType: 1, data: "ab".repeat(32) }],
    );
    assert.equal(answer.authenticated, false, "dnsmasq does not validate here, so DANE must not trust these");
    assert.deepEqual((await Effect.runPromise(resolver().tlsa("mx.spf.test", 587))).records, []);
  });
});

describe("PTR budget", () => {
  let silent: ScriptedDns;
  before(async () => {
    silent = await startScriptedDns(() => "drop");
  });
  after(() => silent.stop());

  test("PTR gives up after its own short timeout, one try, however long routing may wait (TestClock)", () =>
    Effect.runPromise(Effect.provide(Effect.gen(function* () {
      const client = makeDnsClient({ servers: [silent], timeoutMs: 5_000, tries: 3 });
      const resolver = yield* makeCachedResolver(client, { maxEntries: 10, minTtlSec: 1, maxTtlSec: 60, ptrTimeoutMs: 150 });
      const lookup = yield* Effect.forkChild(Effect.flip(resolver.ptr("192.0.2.1")));
      yield* TestClock.adjust(149);
      assert.equal(lookup.pollUnsafe(), undefined, "still waiting for the one server");
      yield* TestClock.adjust(1);
      const failure = yield* TestClock.withLive(Effect.timeout(Fiber.join(lookup), "5 seconds"));
      assert.ok(failure instanceof DnsTemporaryFailure, String(failure));
      assert.ok(silent.queries.length <= 1, "no second try");
    }), TestClock.layer())));
});

test("reverse names (RFC 1035 §3.5, RFC 3596 §2.5)", () => {
  assert.equal(reverseName("192.0.2.1"), "1.2.0.192.in-addr.arpa");
  assert.equal(reverseName("::ffff:192.0.2.1"), "1.2.0.192.in-addr.arpa");
  assert.equal(reverseName("2001:db8::567:89ab"), "b.a.9.8.7.6.5.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa");
  assert.equal(reverseName("64:ff9b::192.0.2.1"), "1.0.2.0.0.0.0.c.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.b.9.f.f.4.6.0.0.ip6.arpa");
  assert.equal(reverseName("not an address"), undefined);
});
