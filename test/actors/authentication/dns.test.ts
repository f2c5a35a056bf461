// mailauth's DNS questions answered by the node's resolver: records in node:dns's shapes,
// "no such name" and "no data" as ENOTFOUND and ENODATA (mailauth's "none"), server trouble
// as temporary codes, and no lookup outliving the message's deadline. Real DNS servers:
// dnsmasq, and a scripted one for SERVFAIL and silence.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import * as dnsPacket from "dns-packet";
import { Effect } from "effect";
import { makeMailauthResolver } from "../../../actors/authentication/dns.ts";
import { makeDnsClient } from "../../../actors/resolver/dns-client.ts";
import { recordsFrom } from "../../../actors/resolver/records.ts";
import { startDnsmasq, type RunningDnsmasq } from "../../support/dnsmasq.ts";
import { startScriptedDns, type ScriptedDns } from "../../support/fake-dns.ts";

const resolverAt = (server: { host: string; port: number }, timeoutMs: number, deadline: () => number | undefined = () => undefined) =>
  makeMailauthResolver({ records: recordsFrom(makeDnsClient({ servers: [server], timeoutMs, tries: 2 })), run: Effect.runPromise }, deadline);

const codeOf = (promise: Promise<unknown>) => promise.then(() => "resolved", (error: { code?: string }) => error.code);

describe("against dnsmasq", () => {
  let dnsmasq: RunningDnsmasq;
  before(async () => {
    dnsmasq = await startDnsmasq({
      txt: [{ name: "a.test", strings: ["v=spf1 ip4:192.0.2.0/24 ", "-all"] }],
      hosts: [{ name: "mx.a.test", address: "192.0.2.25" }],
      mx: [{ domain: "a.test", host: "mx.a.test", preference: 10 }],
      ptr: [{ name: "25.2.0.192.in-addr.arpa", target: "mx.a.test" }],
    });
  });
  after(() => dnsmasq.stop());

  test("records come back as node:dns gives them", async () => {
    const resolve = resolverAt(dnsmasq, 500);
    assert.deepEqual(await resolve("a.test", "TXT"), [["v=spf1 ip4:192.0.2.0/24 ", "-all"]]);
    assert.deepEqual(await resolve("mx.a.test", "A"), ["192.0.2.25"]);
    assert.deepEqual(await resolve("a.test", "MX"), [{ exchange: "mx.a.test", priority: 10 }]);
    assert.deepEqual(await resolve("25.2.0.192.in-addr.arpa", "PTR"), ["mx.a.test"]);
  });

  test("no such name is ENOTFOUND, a name without such records ENODATA", async () => {
    const resolve = resolverAt(dnsmasq, 500);
    assert.equal(await codeOf(resolve("nowhere.test", "TXT")), "ENOTFOUND");
    assert.equal(await codeOf(resolve("mx.a.test", "TXT")), "ENODATA");
  });

  test("a name that cannot exist is EBADNAME and a type Tern does not ask is ENOTIMP, without a query", async () => {
    const resolve = resolverAt(dnsmasq, 500);
    assert.equal(await codeOf(resolve(`${"x".repeat(64)}.a.test`, "TXT")), "EBADNAME");
    assert.equal(await codeOf(resolve("a..test", "TXT")), "EBADNAME");
    assert.equal(await codeOf(resolve("a.test", "SRV")), "ENOTIMP");
  });
});

describe("against a server in trouble", () => {
  let dns: ScriptedDns;
  before(async () => {
    dns = await startScriptedDns((query) =>
      query.questions![0]!.name === "broken.test"
        ? { type: "response", id: query.id, flags: dnsPacket.RECURSION_DESIRED | dnsPacket.RECURSION_AVAILABLE | 2, questions: query.questions } // SERVFAIL
        : "drop",
    );
  });
  after(() => dns.stop());

  test("SERVFAIL is ESERVFAIL, a temporary failure to mailauth", async () => {
    assert.equal(await codeOf(resolverAt(dns, 500)("broken.test", "TXT")), "ESERVFAIL");
  });

  test("a silent server is ETIMEOUT once the client's tries are spent", async () => {
    assert.equal(await codeOf(resolverAt(dns, 100)("silent.test", "TXT")), "ETIMEOUT");
  });

  test("with a deadline set, a lookup ends at the deadline, long before the client would give up", async () => {
    const started = Date.now();
    const resolve = resolverAt(dns, 5_000, () => started + 200);
    assert.equal(await codeOf(resolve("silent.test", "TXT")), "ETIMEOUT");
    const took = Date.now() - started;
    assert.ok(took >= 150 && took < 2_000, `${took} ms`);
    assert.equal(await codeOf(resolve("silent.test", "A")), "ETIMEOUT", "past the deadline, no query at all");
  });
});
