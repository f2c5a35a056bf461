// Mail routing (RFC 5321 §5) against a real dnsmasq, and against a scripted server for the
// cases dnsmasq cannot produce (SERVFAIL, CNAME loops, counted queries).
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import type * as dnsPacket from "dns-packet";
import { Effect } from "effect";
import type { AddressPolicy } from "../../../actors/resolver/addresses.ts";
import { makeDnsClient, type DnsServer } from "../../../actors/resolver/dns-client.ts";
import { resolveMailRoute } from "../../../actors/resolver/mail-route.ts";
import { makeCachedResolver } from "../../../actors/resolver/resolver.ts";
import { DnsPermanentFailure, DnsTemporaryFailure, dnsFailureStatus } from "../../../protocol/route.ts";
import { startDnsmasq, type RunningDnsmasq } from "../../support/dnsmasq.ts";
import { replyTo, startScriptedDns, startZoneDns, type ScriptedDns } from "../../support/fake-dns.ts";

const clientFor = (...servers: DnsServer[]) => makeDnsClient({ servers, timeoutMs: 300, tries: 1 });
const failureOf = <E>(effect: Effect.Effect<unknown, E>) => Effect.runPromise(Effect.flip(effect));
const policy = (overrides: Partial<AddressPolicy> = {}): AddressPolicy => ({ families: "ipv4-first", allowedNetworks: [], ...overrides });
const label = (server: DnsServer) => `${server.host}:${server.port}`;

describe("mail routing against dnsmasq", () => {
  let dnsmasq: RunningDnsmasq;
  const resolve = (domain: string, routePolicy = policy()) => resolveMailRoute(clientFor(dnsmasq), domain, routePolicy);
  before(async () => {
    dnsmasq = await startDnsmasq({
      mx: [
        { domain: "example.test", host: "mx3.example.test", preference: 30 },
        { domain: "example.test", host: "mx1.example.test", preference: 10 },
        { domain: "example.test", host: "mx2.example.test", preference: 20 },
        { domain: "equal.test", host: "a.equal.test", preference: 10 },
        { domain: "equal.test", host: "b.equal.test", preference: 10 },
        { domain: "equal.test", host: "c.equal.test", preference: 10 },
        { domain: "equal.test", host: "backup.equal.test", preference: 20 },
        { domain: "partly.test", host: "ghost.partly.test", preference: 5 },
        { domain: "partly.test", host: "real.partly.test", preference: 10 },
        { domain: "hollow.test", host: "ghost.hollow.test", preference: 10 },
        { domain: "nomail.test", host: ".", preference: 0 },
        { domain: "dual.test", host: "mx.dual.test", preference: 10 },
        { domain: "v6only.test", host: "mx.v6only.test", preference: 10 },
        { domain: "aliased.test", host: "alias.aliased.test", preference: 10 },
        { domain: "inside.test", host: "mx.inside.test", preference: 10 },
        { domain: "mixed.test", host: "mx.mixed.test", preference: 10 },
        { domain: "linklocal.test", host: "mx.linklocal.test", preference: 10 },
      ],
      hosts: [
        { name: "mx1.example.test", address: "192.0.2.1" },
        { name: "mx2.example.test", address: "192.0.2.2" },
        { name: "mx3.example.test", address: "192.0.2.3" },
        { name: "a.equal.test", address: "192.0.2.11" },
        { name: "b.equal.test", address: "192.0.2.12" },
        { name: "c.equal.test", address: "192.0.2.13" },
        { name: "backup.equal.test", address: "192.0.2.19" },
        { name: "real.partly.test", address: "192.0.2.20" },
        { name: "plain.test", address: "192.0.2.9" },
        { name: "mx.dual.test", address: "192.0.2.30,2001:db8::30" },
        { name: "mx.v6only.test", address: "2001:db8::31" },
        { name: "final.aliased.test", address: "192.0.2.40" },
        { name: "mx.inside.test", address: "127.0.0.1" },
        { name: "mx.mixed.test", address: "10.1.2.3,192.0.2.50" },
        { name: "mx.linklocal.test", address: "169.254.1.1,fe80::1" },
      ],
      txt: [{ name: "textonly.test", strings: ["no mail here"] }],
      cnames: [
        { alias: "alias.aliased.test", target: "middle.aliased.test" },
        { alias: "middle.aliased.test", target: "final.aliased.test" },
      ],
    });
  });
  after(() => dnsmasq.stop());

  test("several MX come back lowest preference first, with addresses, and the answering server", async () => {
    const route = await Effect.runPromise(resolve("Example.TEST."));
    assert.deepEqual(route, {
      domain: "example.test",
      implicitMx: false,
      hosts: [
        { name: "mx1.example.test", preference: 10, addresses: ["192.0.2.1"] },
        { name: "mx2.example.test", preference: 20, addresses: ["192.0.2.2"] },
        { name: "mx3.example.test", preference: 30, addresses: ["192.0.2.3"] },
      ],
      dns: { server: label(dnsmasq), rcode: "NOERROR" },
    });
  });

  test("equal preferences are shuffled, so every host of the lowest preference gets to be first", async () => {
    // The cache makes the 60 resolutions cheap; the order is drawn afresh on each.
    const resolver = Effect.runSync(makeCachedResolver(clientFor(dnsmasq), { maxEntries: 100, minTtlSec: 1, maxTtlSec: 60 }));
    const firsts = new Map<string, number>();
    for (let i = 0; i < 60; i++) {
      const route = await Effect.runPromise(resolver.resolve("equal.test"));
      assert.deepEqual(route.hosts.slice(0, 3).map((host) => host.name).sort(), ["a.equal.test", "b.equal.test", "c.equal.test"]);
      assert.equal(route.hosts[3]?.name, "backup.equal.test", "a higher preference never moves ahead");
      firsts.set(route.hosts[0]!.name, (firsts.get(route.hosts[0]!.name) ?? 0) + 1);
    }
    // Each of three hosts misses first place 60 times with probability (2/3)^60 ≈ 3e-11.
    assert.deepEqual([...firsts.keys()].sort(), ["a.equal.test", "b.equal.test", "c.equal.test"]);
  });

  test("no MX but an A record: the domain itself is the implicit MX", async () => {
    const route = await Effect.runPromise(resolve("plain.test"));
    assert.deepEqual(route.hosts, [{ name: "plain.test", preference: 0, addresses: ["192.0.2.9"] }]);
    assert.equal(route.implicitMx, true);
  });

  test("no MX and no address at all is permanent", async () => {
    const failure = await failureOf(resolve("textonly.test"));
    assert.ok(failure instanceof DnsPermanentFailure, String(failure));
    assert.equal(failure.reason, "no-address");
    assert.match(failure.detail, /no MX, and textonly\.test has no A\/AAAA record/);
    assert.equal(dnsFailureStatus(failure.reason!), "5.4.4");
  });

  test("a null MX is permanent, with the RFC 7505 status 5.1.10", async () => {
    const failure = await failureOf(resolve("nomail.test"));
    assert.ok(failure instanceof DnsPermanentFailure, String(failure));
    assert.equal(failure.reason, "null-mx");
    assert.equal(dnsFailureStatus(failure.reason!), "5.1.10");
    assert.match(failure.detail, /null MX/);
  });

  test("NXDOMAIN is permanent and names its rcode and server", async () => {
    const failure = await failureOf(resolve("nowhere.test"));
    assert.ok(failure instanceof DnsPermanentFailure, String(failure));
    assert.equal(failure.reason, "nxdomain");
    assert.equal(failure.rcode, "NXDOMAIN");
    assert.equal(failure.server, label(dnsmasq));
    assert.match(failure.detail, new RegExp(`NXDOMAIN from ${label(dnsmasq)}`));
  });

  test("REFUSED (a zone the server will not answer for) is temporary, never a bounce", async () => {
    const failure = await failureOf(resolve("elsewhere.example"));
    assert.ok(failure instanceof DnsTemporaryFailure, String(failure));
    assert.equal(failure.rcode, "REFUSED");
  });

  test("an MX host without an address is skipped", async () => {
    const route = await Effect.runPromise(resolve("partly.test"));
    assert.deepEqual(route.hosts, [{ name: "real.partly.test", preference: 10, addresses: ["192.0.2.20"] }]);
  });

  test("when no MX host has an address and none failed temporarily, the failure is permanent", async () => {
    const failure = await failureOf(resolve("hollow.test"));
    assert.ok(failure instanceof DnsPermanentFailure, String(failure));
    assert.equal(failure.reason, "no-address");
  });

  test("a CNAME chain is followed to the address", async () => {
    const route = await Effect.runPromise(resolve("aliased.test"));
    assert.deepEqual(route.hosts, [{ name: "alias.aliased.test", preference: 10, addresses: ["192.0.2.40"] }]);
  });

  describe("address families", () => {
    const addressesOf = async (domain: string, families: AddressPolicy["families"]) =>
      (await Effect.runPromise(resolve(domain, policy({ families })))).hosts.map((host) => host.addresses);

    test("ipv4-first and ipv6-first look up both and order them", async () => {
      assert.deepEqual(await addressesOf("dual.test", "ipv4-first"), [["192.0.2.30", "2001:db8::30"]]);
      assert.deepEqual(await addressesOf("dual.test", "ipv6-first"), [["2001:db8::30", "192.0.2.30"]]);
    });

    test("ipv4 and ipv6 use only their own family", async () => {
      assert.deepEqual(await addressesOf("dual.test", "ipv4"), [["192.0.2.30"]]);
      assert.deepEqual(await addressesOf("dual.test", "ipv6"), [["2001:db8::30"]]);
    });

    test("a host with only AAAA is reachable unless IPv4 only is asked", async () => {
      assert.deepEqual(await addressesOf("v6only.test", "ipv4-first"), [["2001:db8::31"]]);
      const failure = await failureOf(resolve("v6only.test", policy({ families: "ipv4" })));
      assert.ok(failure instanceof DnsPermanentFailure, String(failure));
      assert.match(failure.detail, /mx\.v6only\.test has no A record/);
    });
  });

  describe("non-public targets", () => {
    test("an MX resolving to loopback is refused permanently", async () => {
      const failure = await failureOf(resolve("inside.test"));
      assert.ok(failure instanceof DnsPermanentFailure, String(failure));
      assert.equal(failure.reason, "non-public-address");
      assert.match(failure.detail, /127\.0\.0\.1/);
    });

    test("loopback is used once its network is allowed", async () => {
      const route = await Effect.runPromise(resolve("inside.test", policy({ allowedNetworks: ["127.0.0.0/8"] })));
      assert.deepEqual(route.hosts, [{ name: "mx.inside.test", preference: 10, addresses: ["127.0.0.1"] }]);
    });

    test("private addresses are dropped from a host that also has public ones", async () => {
      const route = await Effect.runPromise(resolve("mixed.test"));
      assert.deepEqual(route.hosts[0]?.addresses, ["192.0.2.50"]);
    });

    test("link-local addresses of both families are refused", async () => {
      const failure = await failureOf(resolve("linklocal.test"));
      assert.ok(failure instanceof DnsPermanentFailure, String(failure));
      assert.match(failure.detail, /169\.254\.1\.1, fe80::1/);
    });

    test("an address literal is held to the same rule", async () => {
      const failure = await failureOf(resolve("[127.0.0.1]"));
      assert.ok(failure instanceof DnsPermanentFailure, String(failure));
      assert.equal(failure.reason, "non-public-address");
      const route = await Effect.runPromise(resolve("[IPv6:2001:db8::7]"));
      assert.deepEqual(route.hosts, [{ name: "2001:db8::7", preference: 0, addresses: ["2001:db8::7"] }]);
    });
  });
});

describe("mail routing against a scripted server", () => {
  const running: ScriptedDns[] = [];
  const start = async (server: Promise<ScriptedDns>) => {
    const started = await server;
    running.push(started);
    return started;
  };
  after(() => Promise.all(running.map((server) => server.stop())));
  const mx = (name: string, exchange: string, preference = 10): dnsPacket.Answer => ({ type: "MX", name, ttl: 60, data: { preference, exchange } });
  const cname = (name: string, target: string): dnsPacket.Answer => ({ type: "CNAME", name, ttl: 60, data: target });

  test("SERVFAIL is temporary, and carries its rcode and server", async () => {
    const server = await start(startScriptedDns((query) => replyTo(query, { rcode: "SERVFAIL" })));
    const failure = await failureOf(resolveMailRoute(clientFor(server), "broken.test"));
    assert.ok(failure instanceof DnsTemporaryFailure, String(failure));
    assert.equal(failure.rcode, "SERVFAIL");
    assert.equal(failure.server, label(server));
    assert.match(failure.detail, new RegExp(`SERVFAIL from ${label(server)}`));
  });

  test("MX hosts are looked up with their own A and AAAA queries", async () => {
    const server = await start(
      startZoneDns({
        "glueless.test": [mx("glueless.test", "mx.glueless.test")],
        "mx.glueless.test": [{ type: "A", name: "mx.glueless.test", ttl: 60, data: "192.0.2.44" }],
      }),
    );
    const route = await Effect.runPromise(resolveMailRoute(clientFor(server), "glueless.test"));
    assert.deepEqual(route.hosts, [{ name: "mx.glueless.test", preference: 10, addresses: ["192.0.2.44"] }]);
    assert.deepEqual(server.queries.map((query) => query.questions?.[0]?.type).sort(), ["A", "AAAA", "MX"]);
  });

  test("a null MX among real ones is ignored rather than bouncing the domain", async () => {
    const server = await start(startZoneDns({ "half.test": [mx("half.test", ".", 0), mx("half.test", "192.0.2.60", 10)] }));
    const route = await Effect.runPromise(resolveMailRoute(clientFor(server), "half.test"));
    assert.deepEqual(route.hosts.map((host) => host.name), ["192.0.2.60"]);
  });

  test("a temporary failure on the only MX host's lookup is temporary", async () => {
    const server = await start(
      startScriptedDns((query) =>
        query.questions?.[0]?.type === "MX" ? replyTo(query, { answers: [mx("flaky.test", "mx.flaky.test")] }) : replyTo(query, { rcode: "SERVFAIL" })),
    );
    const failure = await failureOf(resolveMailRoute(clientFor(server), "flaky.test"));
    assert.ok(failure instanceof DnsTemporaryFailure, String(failure));
  });

  test("A failing but AAAA answering still gives a usable host", async () => {
    const server = await start(
      startScriptedDns((query) => {
        const type = query.questions?.[0]?.type;
        if (type === "MX") return replyTo(query, { answers: [mx("half-v6.test", "mx.half-v6.test")] });
        if (type === "AAAA") return replyTo(query, { answers: [{ type: "AAAA", name: "mx.half-v6.test", ttl: 60, data: "2001:db8::5" }] });
        return replyTo(query, { rcode: "SERVFAIL" });
      }),
    );
    const route = await Effect.runPromise(resolveMailRoute(clientFor(server), "half-v6.test"));
    assert.deepEqual(route.hosts[0]?.addresses, ["2001:db8::5"]);
  });

  test("a CNAME the server did not chase is asked for again", async () => {
    const server = await start(
      startZoneDns({
        "alias.test": [cname("alias.test", "real.test")],
        "real.test": [mx("real.test", "192.0.2.70")],
      }),
    );
    const route = await Effect.runPromise(resolveMailRoute(clientFor(server), "alias.test"));
    assert.deepEqual(route.hosts.map((host) => host.name), ["192.0.2.70"]);
    assert.deepEqual(server.queries.map((query) => query.questions?.[0]?.name), ["alias.test", "real.test"]);
  });

  test("a CNAME loop is a temporary failure, found without querying forever", async () => {
    const server = await start(startZoneDns({ "loop1.test": [cname("loop1.test", "loop2.test")], "loop2.test": [cname("loop2.test", "loop1.test")] }));
    const failure = await failureOf(resolveMailRoute(clientFor(server), "loop1.test"));
    assert.ok(failure instanceof DnsTemporaryFailure, String(failure));
    assert.match(failure.detail, /cname-loop/);
    assert.equal(server.queries.length, 2);
  });

  test("a loop inside one answer is caught too", async () => {
    const server = await start(
      startScriptedDns((query) => replyTo(query, { answers: [cname("x.test", "y.test"), cname("y.test", "z.test"), cname("z.test", "y.test")] })),
    );
    const failure = await failureOf(resolveMailRoute(clientFor(server), "x.test"));
    assert.ok(failure instanceof DnsTemporaryFailure, String(failure));
    assert.match(failure.detail, /CNAME loop at y\.test/);
  });

  test("a CNAME chain longer than the bound is a temporary failure", async () => {
    const zone = Object.fromEntries(Array.from({ length: 12 }, (_, i) => [`c${i}.test`, [cname(`c${i}.test`, `c${i + 1}.test`)]]));
    const server = await start(startZoneDns({ ...zone, "c12.test": [mx("c12.test", "192.0.2.80")] }));
    const failure = await failureOf(resolveMailRoute(clientFor(server), "c0.test"));
    assert.ok(failure instanceof DnsTemporaryFailure, String(failure));
    assert.match(failure.detail, /cname-chain-too-long/);
    assert.ok(server.queries.length <= 9, `${server.queries.length} queries`);
  });

  test("records for names off the CNAME chain are ignored", async () => {
    const server = await start(
      startScriptedDns((query) =>
        query.questions?.[0]?.type === "MX"
          ? replyTo(query, { answers: [mx("other.test", "192.0.2.66"), mx("target.test", "192.0.2.90")] })
          : replyTo(query, {})),
    );
    const route = await Effect.runPromise(resolveMailRoute(clientFor(server), "target.test"));
    assert.deepEqual(route.hosts.map((host) => host.name), ["192.0.2.90"]);
  });
});
