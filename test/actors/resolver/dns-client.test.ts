// The DNS client's transport: server order and timeouts, spoof resistance (id, question,
// source), EDNS, and TCP when the UDP answer is truncated — against dnsmasq and a
// scripted server.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import * as dgram from "node:dgram";
import * as dnsPacket from "dns-packet";
import { Effect, Fiber } from "effect";
import { TestClock } from "effect/testing";
import { makeDnsClient, type DnsServer } from "../../../actors/resolver/dns-client.ts";
import { resolveMailRoute } from "../../../actors/resolver/mail-route.ts";
import { DnsTemporaryFailure } from "../../../protocol/route.ts";
import { startDnsmasq, type RunningDnsmasq } from "../../support/dnsmasq.ts";
import { replyTo, startScriptedDns, startZoneDns, type ScriptedDns } from "../../support/fake-dns.ts";

const clientFor = (...servers: DnsServer[]) => makeDnsClient({ servers, timeoutMs: 300, tries: 1 });
const failureOf = <E>(effect: Effect.Effect<unknown, E>) => Effect.runPromise(Effect.flip(effect));
const mx = (name: string, exchange: string, preference = 10): dnsPacket.Answer => ({ type: "MX", name, ttl: 60, data: { preference, exchange } });

// 40 MX with long names: about 2 KB, over both 512 bytes and the 1232-byte EDNS buffer.
const BIG_MX_COUNT = 40;
const bigHost = (i: number) => `mx${i}.a-rather-long-mail-exchanger-name.big.test`;

describe("transport against dnsmasq", () => {
  let dnsmasq: RunningDnsmasq;
  before(async () => {
    dnsmasq = await startDnsmasq({
      mx: Array.from({ length: BIG_MX_COUNT }, (_, i) => ({ domain: "big.test", host: bigHost(i), preference: i })),
      hosts: [{ name: "small.test", address: "192.0.2.1" }],
    });
  });
  after(() => dnsmasq.stop());

  test("a small answer comes over UDP", async () => {
    const answer = await Effect.runPromise(clientFor(dnsmasq).query("small.test", "A"));
    assert.equal(answer.transport, "udp");
    assert.deepEqual(answer.answers.map((record) => record.type === "A" && record.address), ["192.0.2.1"]);
  });

  test("an answer too big for UDP is truncated by dnsmasq and fetched whole over TCP", async () => {
    const answer = await Effect.runPromise(clientFor(dnsmasq).query("big.test", "MX"));
    assert.equal(answer.transport, "tcp");
    assert.equal(answer.truncated, false);
    assert.equal(answer.answers.length, BIG_MX_COUNT);
  });
});

describe("transport against a scripted server", () => {
  const running: ScriptedDns[] = [];
  const start = async (server: Promise<ScriptedDns>) => {
    const started = await server;
    running.push(started);
    return started;
  };
  const spoofer = dgram.createSocket("udp4");
  before(() => new Promise<void>((resolve) => spoofer.bind(0, "127.0.0.1", () => resolve())));
  after(async () => {
    await Promise.all(running.map((server) => server.stop()));
    await new Promise<void>((resolve) => spoofer.close(() => resolve()));
  });

  test("no reply from any server is a temporary failure, after every try", async () => {
    const server = await start(startScriptedDns(() => "drop"));
    const client = makeDnsClient({ servers: [server], timeoutMs: 100, tries: 2 });
    const failure = await failureOf(resolveMailRoute(client, "silent.test"));
    assert.ok(failure instanceof DnsTemporaryFailure, String(failure));
    assert.match(failure.detail, /timeout/);
    assert.equal(server.queries.length, 2);
  });

  test("the per-exchange timeout runs on the Clock: a silent server is given up on after exactly timeoutMs per try (TestClock)", async () => {
    const server = await start(startScriptedDns(() => "drop"));
    const client = makeDnsClient({ servers: [server], timeoutMs: 30_000, tries: 2 });
    await Effect.runPromise(Effect.provide(Effect.gen(function* () {
      const query = yield* Effect.forkChild(Effect.flip(client.query("silent.test", "MX")));
      yield* TestClock.adjust(59_999);
      assert.equal(query.pollUnsafe(), undefined, "the second try is still waiting");
      yield* TestClock.adjust(1);
      // Bounded in real time: a timer outside the Clock would only fire after a real minute.
      const failure = yield* TestClock.withLive(Effect.timeout(Fiber.join(query), "5 seconds"));
      assert.deepEqual([failure.reason, failure.server], ["timeout", `127.0.0.1:${server.port}`]);
    }), TestClock.layer()));
  });

  test("a silent first server times out, then the second answers; each query starts at the first", async () => {
    const silent = await start(startScriptedDns(() => "drop"));
    const working = await start(startZoneDns({ "plain.test": [{ type: "A", name: "plain.test", ttl: 60, data: "192.0.2.9" }] }));
    const started = Date.now();
    const answer = await Effect.runPromise(clientFor(silent, working).query("plain.test", "A"));
    assert.equal(answer.server, `127.0.0.1:${working.port}`);
    assert.ok(Date.now() - started >= 290, "the first server was waited for, one timeout long");
    await Effect.runPromise(clientFor(silent, working).query("plain.test", "MX"));
    assert.deepEqual(silent.queries.map((query) => query.questions?.[0]?.type), ["A", "MX"]);
  });

  test("SERVFAIL from the first server moves on to the second", async () => {
    const broken = await start(startScriptedDns((query) => replyTo(query, { rcode: "SERVFAIL" })));
    const working = await start(startZoneDns({ "ok.test": [mx("ok.test", "192.0.2.3")] }));
    const answer = await Effect.runPromise(clientFor(broken, working).query("ok.test", "MX"));
    assert.equal(answer.rcode, "NOERROR");
    assert.equal(broken.queries.length, 1);
  });

  test("replies with a wrong id or a wrong question are ignored; the real one is accepted", async () => {
    const evil = mx("victim.test", "198.51.100.66", 0);
    const server = await start(
      startScriptedDns((query) => [
        replyTo(query, { id: ((query.id ?? 0) + 1) & 0xffff, answers: [evil] }),
        { ...replyTo(query, { answers: [evil] }), questions: [{ type: "MX", name: "other.test" }] },
        { ...replyTo(query, { answers: [evil] }), questions: [{ type: "A", name: "victim.test" }] },
        replyTo(query, { answers: [mx("victim.test", "192.0.2.10")] }),
      ]),
    );
    const answer = await Effect.runPromise(clientFor(server).query("victim.test", "MX"));
    assert.deepEqual(answer.answers.map((record) => record.type === "MX" && record.exchange), ["192.0.2.10"]);
  });

  test("a reply with the right id and question from the wrong source port is ignored", async () => {
    const server = await start(
      startScriptedDns((query, _transport, from) => {
        // The spoofer wins the race: right id, right question, but not from the server's port.
        spoofer.send(dnsPacket.encode(replyTo(query, { answers: [mx("race.test", "198.51.100.66", 0)] })), from.port, from.address);
        return replyTo(query, { answers: [mx("race.test", "192.0.2.11")] });
      }),
    );
    const answer = await Effect.runPromise(clientFor(server).query("race.test", "MX"));
    assert.deepEqual(answer.answers.map((record) => record.type === "MX" && record.exchange), ["192.0.2.11"]);
  });

  test("a spoofed answer alone is never accepted: the query times out instead", async () => {
    const server = await start(
      startScriptedDns((query) => replyTo(query, { id: ((query.id ?? 0) + 1) & 0xffff, answers: [mx("lonely.test", "198.51.100.66")] })),
    );
    const failure = await failureOf(clientFor(server).query("lonely.test", "MX"));
    assert.equal(failure.reason, "timeout");
  });

  test("each query uses a fresh source port and id, and advertises a 1232-byte EDNS buffer", async () => {
    const server = await start(startZoneDns({}));
    const client = clientFor(server);
    for (let i = 0; i < 8; i++) await Effect.runPromise(client.query("nx.test", "MX"));
    const ports = new Set(server.received.map((entry) => entry.port));
    const ids = new Set(server.queries.map((query) => query.id));
    assert.ok(ports.size >= 7, `source ports: ${[...ports].join(", ")}`);
    assert.ok(ids.size >= 7, `ids: ${[...ids].join(", ")}`);
    const opt = server.queries[0]?.additionals?.find((record) => record.type === "OPT");
    assert.equal(opt?.type === "OPT" && opt.udpPayloadSize, 1232);
  });

  test("a truncated UDP answer is asked again over TCP, and the TCP answer is used", async () => {
    const full = Array.from({ length: BIG_MX_COUNT }, (_, i) => mx("trunc.test", `192.0.2.${100 + i}`, i));
    const server = await start(
      startScriptedDns((query, transport) =>
        transport === "udp" ? replyTo(query, { truncated: true, answers: full.slice(0, 1) }) : replyTo(query, { answers: full })),
    );
    const answer = await Effect.runPromise(clientFor(server).query("trunc.test", "MX"));
    assert.deepEqual(server.received.map((entry) => entry.transport), ["udp", "tcp"]);
    assert.equal(answer.transport, "tcp");
    assert.equal(answer.answers.length, BIG_MX_COUNT);
    assert.notEqual(server.queries[0]?.id, server.queries[1]?.id, "TCP gets its own id");
  });

  test("a TCP answer with the wrong id is ignored like a UDP one", async () => {
    const server = await start(
      startScriptedDns((query, transport) =>
        transport === "udp"
          ? replyTo(query, { truncated: true })
          : [replyTo(query, { id: ((query.id ?? 0) + 1) & 0xffff, answers: [mx("tcpspoof.test", "198.51.100.66")] }), replyTo(query, { answers: [mx("tcpspoof.test", "192.0.2.12")] })]),
    );
    const answer = await Effect.runPromise(clientFor(server).query("tcpspoof.test", "MX"));
    assert.deepEqual(answer.answers.map((record) => record.type === "MX" && record.exchange), ["192.0.2.12"]);
  });

  test("when TCP gives nothing, the next server is tried; when none answers, the failure is temporary", async () => {
    const truncatesOnly = await start(startScriptedDns((query, transport) => (transport === "udp" ? replyTo(query, { truncated: true }) : "drop")));
    const working = await start(startZoneDns({ "tcpfail.test": [mx("tcpfail.test", "192.0.2.13")] }));
    const answer = await Effect.runPromise(clientFor(truncatesOnly, working).query("tcpfail.test", "MX"));
    assert.equal(answer.server, `127.0.0.1:${working.port}`);
    const failure = await failureOf(resolveMailRoute(clientFor(truncatesOnly), "tcpfail.test"));
    assert.ok(failure instanceof DnsTemporaryFailure, String(failure));
    assert.match(failure.detail, /no TCP reply/);
  });
});
