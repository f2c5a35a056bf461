// The resolver against a real dnsmasq, and against a scripted server for the cases dnsmasq
// cannot produce (SERVFAIL, silence, spoofed replies, counted queries).
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import type * as dnsPacket from "dns-packet";
import { Effect } from "effect";
import { makeDnsClient, type DnsServer } from "../../actors/resolver/dns-client.ts";
import { makeCachedResolver, resolveMailRoute } from "../../actors/resolver/mail-route.ts";
import { DnsPermanentFailure, DnsTemporaryFailure } from "../../protocol/route.ts";
import { startDnsmasq, type RunningDnsmasq } from "../support/dnsmasq.ts";
import { replyTo, startScriptedDns, type ScriptedDns } from "../support/fake-dns.ts";

const clientFor = (...servers: DnsServer[]) => makeDnsClient({ servers, timeoutMs: 300, tries: 1 });
const failureOf = <E>(effect: Effect.Effect<unknown, E>) => Effect.runPromise(Effect.flip(effect));

/** A scripted server that answers from a tiny zone: NXDOMAIN for unknown names. */
const zoneServer = (zone: Record<string, dnsPacket.Answer[]>): Promise<ScriptedDns> =>
  startScriptedDns((query) => {
    const question = query.questions?.[0];
    const records = question === undefined ? undefined : zone[question.name.toLowerCase()];
    if (records === undefined) return replyTo(query, { rcode: "NXDOMAIN" });
    return replyTo(query, { answers: records.filter((record) => record.type === question?.type) });
  });

describe("resolveMailRoute against dnsmasq", () => {
  let dnsmasq: RunningDnsmasq;
  before(async () => {
    dnsmasq = await startDnsmasq({
      mx: [
        { domain: "example.test", host: "mx3.example.test", preference: 30 },
        { domain: "example.test", host: "mx1.example.test", preference: 10 },
        { domain: "example.test", host: "mx2.example.test", preference: 20 },
        { domain: "partly.test", host: "ghost.partly.test", preference: 5 },
        { domain: "partly.test", host: "real.partly.test", preference: 10 },
        { domain: "hollow.test", host: "ghost.hollow.test", preference: 10 },
      ],
      hosts: [
        { name: "mx1.example.test", address: "192.0.2.1" },
        { name: "mx2.example.test", address: "192.0.2.2" },
        { name: "mx3.example.test", address: "192.0.2.3" },
        { name: "real.partly.test", address: "192.0.2.20" },
        { name: "plain.test", address: "192.0.2.9" },
      ],
    });
  });
  after(() => dnsmasq.stop());

  test("several MX come back lowest preference first, with addresses", async () => {
    const route = await Effect.runPromise(resolveMailRoute(clientFor(dnsmasq), "Example.TEST."));
    assert.deepEqual(route, {
      domain: "example.test",
      implicitMx: false,
      hosts: [
        { name: "mx1.example.test", preference: 10, addresses: ["192.0.2.1"] },
        { name: "mx2.example.test", preference: 20, addresses: ["192.0.2.2"] },
        { name: "mx3.example.test", preference: 30, addresses: ["192.0.2.3"] },
      ],
    });
  });

  test("no MX but an A record: the domain itself is the implicit MX", async () => {
    const route = await Effect.runPromise(resolveMailRoute(clientFor(dnsmasq), "plain.test"));
    assert.deepEqual(route, {
      domain: "plain.test",
      implicitMx: true,
      hosts: [{ name: "plain.test", preference: 0, addresses: ["192.0.2.9"] }],
    });
  });

  test("NXDOMAIN is a permanent failure", async () => {
    const failure = await failureOf(resolveMailRoute(clientFor(dnsmasq), "nowhere.test"));
    assert.ok(failure instanceof DnsPermanentFailure, String(failure));
    assert.match(failure.detail, /NXDOMAIN/);
  });

  test("an MX host without an address is skipped", async () => {
    const route = await Effect.runPromise(resolveMailRoute(clientFor(dnsmasq), "partly.test"));
    assert.deepEqual(route.hosts, [{ name: "real.partly.test", preference: 10, addresses: ["192.0.2.20"] }]);
  });

  test("when no MX host has an address and none failed temporarily, the failure is permanent", async () => {
    const failure = await failureOf(resolveMailRoute(clientFor(dnsmasq), "hollow.test"));
    assert.ok(failure instanceof DnsPermanentFailure, String(failure));
  });
});

describe("resolveMailRoute against a scripted server", () => {
  const running: ScriptedDns[] = [];
  const start = async (server: Promise<ScriptedDns>) => {
    const started = await server;
    running.push(started);
    return started;
  };
  after(() => Promise.all(running.map((server) => server.stop())));

  test("SERVFAIL is a temporary failure", async () => {
    const server = await start(startScriptedDns((query) => replyTo(query, { rcode: "SERVFAIL" })));
    const failure = await failureOf(resolveMailRoute(clientFor(server), "broken.test"));
    assert.ok(failure instanceof DnsTemporaryFailure, String(failure));
    assert.match(failure.detail, /SERVFAIL/);
  });

  test("no reply from any server is a temporary failure, after every try", async () => {
    const server = await start(startScriptedDns(() => "drop"));
    const client = makeDnsClient({ servers: [server], timeoutMs: 100, tries: 2 });
    const failure = await failureOf(resolveMailRoute(client, "silent.test"));
    assert.ok(failure instanceof DnsTemporaryFailure, String(failure));
    assert.match(failure.detail, /timeout/);
    assert.equal(server.queries.length, 2);
  });

  test("a silent first server is skipped for a working second one", async () => {
    const silent = await start(startScriptedDns(() => "drop"));
    const working = await start(zoneServer({ "plain.test": [{ type: "A", name: "plain.test", ttl: 60, data: "192.0.2.9" }] }));
    const route = await Effect.runPromise(resolveMailRoute(clientFor(silent, working), "plain.test"));
    assert.deepEqual(route.hosts, [{ name: "plain.test", preference: 0, addresses: ["192.0.2.9"] }]);
    // Each query (MX, then the implicit-MX A) starts again at the first server: no memory of dead ones.
    assert.deepEqual(silent.queries.map((query) => query.questions?.[0]?.type), ["MX", "A"]);
  });

  test("replies with a wrong id or a wrong question are ignored; the real one is accepted", async () => {
    const evil: dnsPacket.Answer = { type: "MX", name: "victim.test", ttl: 60, data: { preference: 0, exchange: "198.51.100.66" } };
    const real: dnsPacket.Answer = { type: "MX", name: "victim.test", ttl: 60, data: { preference: 10, exchange: "192.0.2.10" } };
    const server = await start(
      startScriptedDns((query) => [
        replyTo(query, { id: ((query.id ?? 0) + 1) & 0xffff, answers: [evil] }),
        { ...replyTo(query, { answers: [evil] }), questions: [{ type: "MX", name: "other.test" }] },
        { ...replyTo(query, { answers: [evil] }), questions: [{ type: "A", name: "victim.test" }] },
        replyTo(query, { answers: [real] }),
      ]),
    );
    const route = await Effect.runPromise(resolveMailRoute(clientFor(server), "victim.test"));
    assert.deepEqual(route.hosts, [{ name: "192.0.2.10", preference: 10, addresses: ["192.0.2.10"] }]);
  });

  test("MX hosts without glue are looked up with their own A query", async () => {
    const server = await start(
      zoneServer({
        "glueless.test": [{ type: "MX", name: "glueless.test", ttl: 60, data: { preference: 10, exchange: "mx.glueless.test" } }],
        "mx.glueless.test": [{ type: "A", name: "mx.glueless.test", ttl: 60, data: "192.0.2.44" }],
      }),
    );
    const route = await Effect.runPromise(resolveMailRoute(clientFor(server), "glueless.test"));
    assert.deepEqual(route.hosts, [{ name: "mx.glueless.test", preference: 10, addresses: ["192.0.2.44"] }]);
    assert.deepEqual(server.queries.map((query) => query.questions?.[0]?.type), ["MX", "A"]);
  });

  test("a null MX (RFC 7505) is a permanent failure", async () => {
    const server = await start(
      zoneServer({ "nomail.test": [{ type: "MX", name: "nomail.test", ttl: 60, data: { preference: 0, exchange: "." } }] }),
    );
    const failure = await failureOf(resolveMailRoute(clientFor(server), "nomail.test"));
    assert.ok(failure instanceof DnsPermanentFailure, String(failure));
  });

  test("a temporary failure on the only MX host's lookup is temporary", async () => {
    const server = await start(
      startScriptedDns((query) =>
        query.questions?.[0]?.type === "MX"
          ? replyTo(query, { answers: [{ type: "MX", name: "flaky.test", ttl: 60, data: { preference: 10, exchange: "mx.flaky.test" } }] })
          : replyTo(query, { rcode: "SERVFAIL" })),
    );
    const failure = await failureOf(resolveMailRoute(clientFor(server), "flaky.test"));
    assert.ok(failure instanceof DnsTemporaryFailure, String(failure));
  });
});

describe("makeCachedResolver", () => {
  const zone = {
    "cached.test": [{ type: "MX", name: "cached.test", ttl: 120, data: { preference: 10, exchange: "192.0.2.50" } }],
    "other.test": [{ type: "MX", name: "other.test", ttl: 120, data: { preference: 10, exchange: "192.0.2.51" } }],
    "third.test": [{ type: "MX", name: "third.test", ttl: 120, data: { preference: 10, exchange: "192.0.2.52" } }],
  } satisfies Record<string, dnsPacket.Answer[]>;
  let server: ScriptedDns;
  let clockMs = 0;
  const resolverWith = (maxEntries = 100) =>
    makeCachedResolver(clientFor(server), { maxEntries, minTtlSec: 10, maxTtlSec: 3600, negativeTtlSec: 30, now: () => clockMs });
  before(async () => {
    server = await zoneServer(zone);
  });
  after(() => server.stop());
  const queriesDuring = async (action: () => Promise<unknown>) => {
    const before = server.queries.length;
    await action();
    return server.queries.length - before;
  };

  test("a second resolve within the TTL sends no query; after it, one", async () => {
    const resolver = resolverWith();
    clockMs = 0;
    assert.equal(await queriesDuring(() => Effect.runPromise(resolver.resolve("cached.test"))), 1);
    clockMs = 119_000;
    const route = await Effect.runPromise(resolver.resolve("CACHED.test."));
    assert.equal(route.hosts[0]?.name, "192.0.2.50");
    assert.equal(await queriesDuring(() => Effect.runPromise(resolver.resolve("cached.test"))), 0);
    clockMs = 121_000;
    assert.equal(await queriesDuring(() => Effect.runPromise(resolver.resolve("cached.test"))), 1);
  });

  test("concurrent resolves of one domain share one query", async () => {
    const resolver = resolverWith();
    const resolveFive = Effect.all(
      Array.from({ length: 5 }, () => resolver.resolve("cached.test")),
      { concurrency: "unbounded" },
    );
    let routes: ReadonlyArray<unknown> = [];
    assert.equal(await queriesDuring(async () => (routes = await Effect.runPromise(resolveFive))), 1);
    assert.equal(routes.length, 5);
  });

  test("NXDOMAIN is remembered for the negative TTL", async () => {
    const resolver = resolverWith();
    clockMs = 0;
    const first = await failureOf(resolver.resolve("gone.test"));
    assert.ok(first instanceof DnsPermanentFailure);
    clockMs = 29_000;
    assert.equal(await queriesDuring(() => failureOf(resolver.resolve("gone.test"))), 0);
    clockMs = 31_000;
    assert.equal(await queriesDuring(() => failureOf(resolver.resolve("gone.test"))), 1);
  });

  test("the least recently used entry is evicted beyond maxEntries", async () => {
    const resolver = resolverWith(2);
    clockMs = 0;
    for (const domain of ["cached.test", "other.test", "cached.test", "third.test"]) {
      await Effect.runPromise(resolver.resolve(domain));
    }
    assert.equal(resolver.size(), 2);
    assert.equal(await queriesDuring(() => Effect.runPromise(resolver.resolve("cached.test"))), 0);
    assert.equal(await queriesDuring(() => Effect.runPromise(resolver.resolve("other.test"))), 1);
  });
});
