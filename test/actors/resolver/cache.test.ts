// The node's DNS cache: TTLs and their bounds, negative caching from the SOA (RFC 2308),
// coalescing, LRU, no caching of temporary failures — and the resolver's metrics.
// TTLs run on a TestClock: the resolvers are made in `testClock`'s runtime, which sets its time.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import type * as dnsPacket from "dns-packet";
import { Effect, ManagedRuntime } from "effect";
import { TestClock } from "effect/testing";
import { Registry } from "prom-client";
import { makeDnsClient, type DnsServer } from "../../../actors/resolver/dns-client.ts";
import { makeResolverMetrics } from "../../../actors/resolver/metrics.ts";
import { makeCachedResolver, type CachedResolverOptions } from "../../../actors/resolver/resolver.ts";
import { DnsPermanentFailure, DnsTemporaryFailure } from "../../../protocol/route.ts";
import { startDnsmasq, type RunningDnsmasq } from "../../support/dnsmasq.ts";
import { replyTo, startScriptedDns, startZoneDns, type ScriptedDns } from "../../support/fake-dns.ts";

const testClock = ManagedRuntime.make(TestClock.layer());
after(() => testClock.dispose());
/** Sets the TestClock the cached resolvers were made with. */
const setClock = (ms: number) => testClock.runPromise(TestClock.setTime(ms));

const clientFor = (...servers: DnsServer[]) => makeDnsClient({ servers, timeoutMs: 300, tries: 1 });
const failureOf = <E>(effect: Effect.Effect<unknown, E>) => Effect.runPromise(Effect.flip(effect));
const mx = (name: string, exchange: string, ttl = 120): dnsPacket.Answer => ({ type: "MX", name, ttl, data: { preference: 10, exchange } });

/** Queries a server received while `action` ran. */
const queriesDuring = async (server: ScriptedDns, action: () => Promise<unknown>) => {
  const before = server.queries.length;
  await action();
  return server.queries.length - before;
};

describe("cache against a scripted server", () => {
  let server: ScriptedDns;
  let withSoa: ScriptedDns;
  const zone = {
    "cached.test": [mx("cached.test", "192.0.2.50")],
    "other.test": [mx("other.test", "192.0.2.51")],
    "third.test": [mx("third.test", "192.0.2.52")],
    "brief.test": [mx("brief.test", "192.0.2.53", 0)],
    "long.test": [mx("long.test", "192.0.2.54", 86_400)],
  } satisfies Record<string, dnsPacket.Answer[]>;
  const resolverOn = (target: ScriptedDns, options: Partial<CachedResolverOptions> = {}) =>
    testClock.runPromise(makeCachedResolver(clientFor(target), { maxEntries: 100, minTtlSec: 10, maxTtlSec: 3600, maxNegativeTtlSec: 600, ...options }));
  before(async () => {
    server = await startZoneDns(zone);
    withSoa = await startZoneDns(zone, { soa: { name: "test", ttl: 100, minimum: 30 } });
  });
  after(() => Promise.all([server.stop(), withSoa.stop()]));

  test("a second resolve within the TTL sends no query; after it, one", async () => {
    const resolver = await resolverOn(server);
    await setClock(0);
    assert.equal(await queriesDuring(server, () => Effect.runPromise(resolver.resolve("cached.test"))), 1);
    await setClock(119_000);
    const route = await Effect.runPromise(resolver.resolve("CACHED.test."));
    assert.equal(route.hosts[0]?.name, "192.0.2.50");
    assert.equal(route.dns?.server, `127.0.0.1:${server.port}`, "a cached route still names the server that answered");
    assert.equal(await queriesDuring(server, () => Effect.runPromise(resolver.resolve("cached.test"))), 0);
    await setClock(121_000);
    assert.equal(await queriesDuring(server, () => Effect.runPromise(resolver.resolve("cached.test"))), 1);
  });

  test("TTLs are raised to the minimum and cut to the maximum", async () => {
    const resolver = await resolverOn(server, { minTtlSec: 10, maxTtlSec: 300 });
    await setClock(0);
    await Effect.runPromise(Effect.all([resolver.resolve("brief.test"), resolver.resolve("long.test")]));
    await setClock(9_000);
    assert.equal(await queriesDuring(server, () => Effect.runPromise(resolver.resolve("brief.test"))), 0, "TTL 0 kept for the 10 s minimum");
    await setClock(11_000);
    assert.equal(await queriesDuring(server, () => Effect.runPromise(resolver.resolve("brief.test"))), 1);
    await setClock(299_000);
    assert.equal(await queriesDuring(server, () => Effect.runPromise(resolver.resolve("long.test"))), 0);
    await setClock(301_000);
    assert.equal(await queriesDuring(server, () => Effect.runPromise(resolver.resolve("long.test"))), 1, "a day's TTL cut to 300 s");
  });

  test("concurrent resolves of one domain share one query", async () => {
    const resolver = await resolverOn(server);
    const resolveFive = Effect.all(Array.from({ length: 5 }, () => resolver.resolve("cached.test")), { concurrency: "unbounded" });
    let routes: ReadonlyArray<unknown> = [];
    assert.equal(await queriesDuring(server, async () => (routes = await Effect.runPromise(resolveFive))), 1);
    assert.equal(routes.length, 5);
  });

  test("NXDOMAIN is cached for min(SOA TTL, SOA MINIMUM) (RFC 2308)", async () => {
    const resolver = await resolverOn(withSoa);
    await setClock(0);
    const first = await failureOf(resolver.resolve("gone.test"));
    assert.ok(first instanceof DnsPermanentFailure);
    await setClock(29_000);
    assert.equal(await queriesDuring(withSoa, () => failureOf(resolver.resolve("gone.test"))), 0);
    await setClock(31_000);
    assert.equal(await queriesDuring(withSoa, () => failureOf(resolver.resolve("gone.test"))), 1);
  });

  test("the negative TTL is capped by maxNegativeTtlSec", async () => {
    const resolver = await resolverOn(withSoa, { maxNegativeTtlSec: 15 });
    await setClock(0);
    await failureOf(resolver.resolve("gone.test"));
    await setClock(16_000);
    assert.equal(await queriesDuring(withSoa, () => failureOf(resolver.resolve("gone.test"))), 1);
  });

  test("a negative answer without SOA is not cached (RFC 2308 §5)", async () => {
    const resolver = await resolverOn(server);
    await setClock(0);
    await failureOf(resolver.resolve("gone.test"));
    assert.equal(await queriesDuring(server, () => failureOf(resolver.resolve("gone.test"))), 1);
  });

  test("temporary failures are not cached", async () => {
    const failing = await startScriptedDns((query) => replyTo(query, { rcode: "SERVFAIL" }));
    try {
      const resolver = await resolverOn(failing);
      const first = await failureOf(resolver.resolve("broken.test"));
      assert.ok(first instanceof DnsTemporaryFailure);
      assert.equal(await queriesDuring(failing, () => failureOf(resolver.resolve("broken.test"))), 1);
    } finally {
      await failing.stop();
    }
  });

  test("the least recently used entry is evicted beyond maxEntries", async () => {
    const resolver = await resolverOn(server, { maxEntries: 2 });
    await setClock(0);
    for (const domain of ["cached.test", "other.test", "cached.test", "third.test"]) await Effect.runPromise(resolver.resolve(domain));
    assert.equal(resolver.size(), 2);
    assert.equal(await queriesDuring(server, () => Effect.runPromise(resolver.resolve("cached.test"))), 0);
    assert.equal(await queriesDuring(server, () => Effect.runPromise(resolver.resolve("other.test"))), 1);
  });
});

describe("negative caching against dnsmasq serving with an SOA", () => {
  let dnsmasq: RunningDnsmasq;
  before(async () => {
    dnsmasq = await startDnsmasq({ authoritative: true, ttlSec: 40, hosts: [{ name: "mx.neg.test", address: "192.0.2.7" }], mx: [{ domain: "neg.test", host: "mx.neg.test", preference: 10 }] });
  });
  after(() => dnsmasq.stop());

  test("NXDOMAIN and no-AAAA answers are both kept for the SOA's 40 s", async () => {
    const queried: string[] = [];
    const registry = new Registry();
    const metrics = makeResolverMetrics(registry);
    const client = makeDnsClient({ servers: [dnsmasq], timeoutMs: 300, tries: 1, observer: { ...metrics.client, queried: (type, outcome, seconds) => {
      queried.push(`${type} ${outcome}`);
      metrics.client.queried?.(type, outcome, seconds);
    } } });
    const resolver = await testClock.runPromise(makeCachedResolver(client, { maxEntries: 100, minTtlSec: 1, maxTtlSec: 3600 }));
    await setClock(0);
    assert.ok((await failureOf(resolver.resolve("missing.neg.test"))) instanceof DnsPermanentFailure);
    await Effect.runPromise(resolver.resolve("neg.test"));
    assert.deepEqual(queried.sort(), ["A noerror", "AAAA noerror", "MX noerror", "MX nxdomain"]);
    await setClock(39_000);
    await failureOf(resolver.resolve("missing.neg.test"));
    await Effect.runPromise(resolver.resolve("neg.test"));
    assert.equal(queried.length, 4, "nothing asked again within 40 s");
    await setClock(41_000);
    await failureOf(resolver.resolve("missing.neg.test"));
    assert.equal(queried.length, 5);
  });
});

describe("resolver metrics", () => {
  let dnsmasq: RunningDnsmasq;
  let silent: ScriptedDns;
  let truncating: ScriptedDns;
  before(async () => {
    dnsmasq = await startDnsmasq({ mx: [{ domain: "metered.test", host: "192.0.2.5", preference: 10 }] });
    silent = await startScriptedDns(() => "drop");
    truncating = await startScriptedDns((query, transport) =>
      replyTo(query, { truncated: transport === "udp", answers: [mx("big.test", "192.0.2.6")] }));
  });
  after(() => Promise.all([dnsmasq.stop(), silent.stop(), truncating.stop()]));

  /** One series' value; a histogram's `_count`/`_sum` are found under the histogram's name. */
  const valueOf = async (registry: Registry, name: string, labels: Record<string, string>) => {
    const metric = await registry.getSingleMetric(name.replace(/_(count|sum)$/, ""))?.get();
    const found = metric?.values.find(
      (value) => ((value as { metricName?: string }).metricName ?? name) === name && Object.entries(labels).every(([key, wanted]) => value.labels[key] === wanted),
    );
    return found?.value ?? 0;
  };

  test("queries by type and outcome, cache hits and misses, latency, timeouts per server, TCP fallbacks", async () => {
    const registry = new Registry();
    const metrics = makeResolverMetrics(registry);
    const client = makeDnsClient({ servers: [silent, dnsmasq], timeoutMs: 100, tries: 1, observer: metrics.client });
    const resolver = Effect.runSync(makeCachedResolver(client, { maxEntries: 100, minTtlSec: 1, maxTtlSec: 3600, observer: metrics.cache }));
    await Effect.runPromise(resolver.resolve("metered.test"));
    await Effect.runPromise(resolver.resolve("metered.test"));
    await failureOf(resolver.resolve("unknown.test"));
    const tcpClient = makeDnsClient({ servers: [truncating], timeoutMs: 300, tries: 1, observer: metrics.client });
    await Effect.runPromise(tcpClient.query("big.test", "MX"));

    assert.equal(await valueOf(registry, "tern_dns_queries_total", { type: "MX", outcome: "noerror" }), 2);
    assert.equal(await valueOf(registry, "tern_dns_queries_total", { type: "MX", outcome: "nxdomain" }), 1);
    assert.equal(await valueOf(registry, "tern_dns_cache_misses_total", { type: "MX" }), 2);
    assert.equal(await valueOf(registry, "tern_dns_cache_hits_total", { type: "MX" }), 1);
    assert.equal(await valueOf(registry, "tern_dns_timeouts_total", { server: `127.0.0.1:${silent.port}` }), 2);
    assert.equal(await valueOf(registry, "tern_dns_timeouts_total", { server: `127.0.0.1:${dnsmasq.port}` }), 0);
    assert.equal(await valueOf(registry, "tern_dns_tcp_fallbacks_total", { server: `127.0.0.1:${truncating.port}` }), 1);
    assert.equal(await valueOf(registry, "tern_dns_query_duration_seconds_count", { type: "MX" }), 3);
    assert.equal(await valueOf(registry, "tern_dns_cache_entries", {}), 1);
    // The silent server's timeout is inside the first query's time.
    assert.ok((await valueOf(registry, "tern_dns_query_duration_seconds_sum", { type: "MX" })) >= 0.1);
  });

  test("a query that times out everywhere is counted as such", async () => {
    const registry = new Registry();
    const metrics = makeResolverMetrics(registry);
    const client = makeDnsClient({ servers: [silent], timeoutMs: 50, tries: 2, observer: metrics.client });
    await failureOf(client.query("nobody.test", "TXT"));
    assert.equal(await valueOf(registry, "tern_dns_queries_total", { type: "TXT", outcome: "timeout" }), 1);
    assert.equal(await valueOf(registry, "tern_dns_timeouts_total", { server: `127.0.0.1:${silent.port}` }), 2);
  });
});
