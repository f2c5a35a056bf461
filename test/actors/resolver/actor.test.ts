// The resolver actor over NATS: routes and typed failures cross the wire with the DNS
// server and rcode they rest on. Needs NATS on 127.0.0.1:4222, like the e2e tests.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { Effect, Exit, Scope } from "effect";
import { resolveOverNats, startResolverActor, type ResolverActor } from "../../../actors/resolver/actor.ts";
import { makeDnsClient } from "../../../actors/resolver/dns-client.ts";
import { makeCachedResolver } from "../../../actors/resolver/resolver.ts";
import { makeSupervisor } from "../../../actors/runtime/supervisor.ts";
import { DnsPermanentFailure, DnsTemporaryFailure } from "../../../protocol/route.ts";
import { makeSubjects } from "../../../protocol/subjects.ts";
import { startDnsmasq, type RunningDnsmasq } from "../../support/dnsmasq.ts";
import { replyTo, startScriptedDns, type ScriptedDns } from "../../support/fake-dns.ts";

const subjects = makeSubjects(`t${randomBytes(5).toString("hex")}`);
let nc: NatsConnection;
let dnsmasq: RunningDnsmasq;
let failing: ScriptedDns;
let actor: ResolverActor;
const scope = Scope.makeUnsafe();

before(async () => {
  nc = await connect({ servers: ["nats://127.0.0.1:4222"], name: "tern-test-resolver-actor" });
  dnsmasq = await startDnsmasq({
    mx: [
      { domain: "routed.test", host: "mx.routed.test", preference: 10 },
      { domain: "nomail.test", host: ".", preference: 0 },
    ],
    hosts: [{ name: "mx.routed.test", address: "192.0.2.8" }],
    localZones: ["test"],
  });
  // dnsmasq first; this one answers SERVFAIL for the one zone dnsmasq refuses.
  failing = await startScriptedDns((query) => replyTo(query, { rcode: "SERVFAIL" }));
  const client = makeDnsClient({ servers: [dnsmasq, failing], timeoutMs: 300, tries: 1 });
  const resolver = Effect.runSync(makeCachedResolver(client, { maxEntries: 100, minTtlSec: 1, maxTtlSec: 60 }));
  actor = await Effect.runPromise(startResolverActor(nc, subjects, resolver, makeSupervisor()).pipe(Scope.provide(scope)));
});

after(async () => {
  await Effect.runPromise(Scope.close(scope, Exit.void));
  await nc.close();
  await Promise.all([dnsmasq.stop(), failing.stop()]);
});

test("a route crosses NATS with the server and rcode of its MX answer", async () => {
  const route = await Effect.runPromise(resolveOverNats(nc, subjects, "routed.test"));
  assert.deepEqual(route, {
    domain: "routed.test",
    implicitMx: false,
    hosts: [{ name: "mx.routed.test", preference: 10, addresses: ["192.0.2.8"] }],
    dns: { server: `127.0.0.1:${dnsmasq.port}`, rcode: "NOERROR" },
  });
});

test("a null MX crosses NATS as a permanent failure with its reason", async () => {
  const failure = await Effect.runPromise(Effect.flip(resolveOverNats(nc, subjects, "nomail.test")));
  assert.ok(failure instanceof DnsPermanentFailure, String(failure));
  assert.equal(failure.reason, "null-mx");
  assert.equal(failure.server, `127.0.0.1:${dnsmasq.port}`);
});

test("SERVFAIL crosses NATS as a temporary failure naming the server that said it", async () => {
  // dnsmasq refuses the zone, so the second server is asked and its SERVFAIL is the last word.
  const failure = await Effect.runPromise(Effect.flip(resolveOverNats(nc, subjects, "broken.example")));
  assert.ok(failure instanceof DnsTemporaryFailure, String(failure));
  assert.equal(failure.rcode, "SERVFAIL");
  assert.equal(failure.server, `127.0.0.1:${failing.port}`);
});

test("closing the actor's scope takes it out of the queue group: asks then fail temporary, never permanent", async () => {
  await Effect.runPromise(Scope.close(scope, Exit.void));
  await nc.flush();
  const failure = await Effect.runPromise(Effect.flip(resolveOverNats(nc, subjects, "routed.test")));
  assert.ok(failure instanceof DnsTemporaryFailure, String(failure));
  assert.match(failure.detail, /resolver unreachable/);
  assert.equal(actor.actor.load(), 0);
});
