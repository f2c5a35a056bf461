// A rogue on the cluster's NATS answers `resolver.resolve` before the real resolver does:
// a plain subscriber gets every request the queue group gets, and this one answers at
// once while the node's own DNS (dnsmasq behind a slow relay) takes most of a second.
// The node must neither send mail where the rogue says (a loopback address outside
// dns.allowedTargetNetworks, where the rogue's own sinks listen on the node's remote port)
// nor hold it back or bounce it: it resolves such domains itself and delivers.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import nodemailer from "nodemailer";
import { makeSubjects } from "../../protocol/subjects.ts";
import { decodeFrame, encodeFrame } from "../../protocol/wire.ts";
import { startDnsmasq, type RunningDnsmasq } from "../support/dnsmasq.ts";
import { startSink, type Sink } from "../support/sink.ts";
import { startSlowDns, type SlowDns } from "../support/slow-dns.ts";
import { eventually, makeDataDir, removeDataDir, startTernNode, uniqueCluster, type TernNode } from "../support/tern-node.ts";

// The node's DNS answers this late (per query; a route takes two), the rogue at once.
const DNS_DELAY_MS = 300;

let dns: RunningDnsmasq;
let slowDns: SlowDns;
let realMx: Sink;
let rogueSinks: Sink[];
let rogue: NatsConnection;
let node: TernNode;
let dataDir: string;
const rogueAnswered: string[] = [];

/** What the rogue claims for each domain it hijacks: the wire reply a resolver would send. */
const forged: Record<string, unknown> = {
  "stolen4.test": { ok: true, value: { domain: "stolen4.test", implicitMx: false, hosts: [{ name: "mx.stolen4.test", preference: 10, addresses: ["127.0.0.1"] }] } },
  "stolen6.test": { ok: true, value: { domain: "stolen6.test", implicitMx: false, hosts: [{ name: "mx.stolen6.test", preference: 10, addresses: ["::1"] }] } },
  "real.test": {
    ok: false,
    error: { _tag: "DnsPermanentFailure", domain: "real.test", reason: "null-mx", detail: "null MX: real.test accepts no mail (RFC 7505)", server: "203.0.113.53:53", rcode: "NOERROR" },
  },
};

before(async () => {
  // The real MX of every domain here is 127.0.0.2, the only target the node allows; the
  // rogue's sinks listen on the same port at 127.0.0.1 and [::1].
  realMx = await startSink(0, {}, "127.0.0.2");
  rogueSinks = [await startSink(realMx.port, {}, "127.0.0.1"), await startSink(realMx.port, {}, "::1")];
  dns = await startDnsmasq({
    mx: ["stolen4.test", "stolen6.test", "real.test"].map((domain) => ({ domain, host: `mx.${domain}`, preference: 10 })),
    hosts: ["stolen4.test", "stolen6.test", "real.test"].map((domain) => ({ name: `mx.${domain}`, address: "127.0.0.2" })),
  });
  slowDns = await startSlowDns(dns, DNS_DELAY_MS);
  const cluster = uniqueCluster();
  rogue = await connect({ servers: ["nats://127.0.0.1:4222"], name: "tern-test-rogue-resolver" });
  rogue.subscribe(makeSubjects(cluster).resolve, {
    callback: (error, msg) => {
      if (error) return;
      const frame = decodeFrame(msg.data);
      const domain = typeof frame === "string" ? undefined : (frame.json as { domain?: string }).domain;
      const reply = domain === undefined ? undefined : forged[domain];
      if (reply === undefined || !msg.reply) return;
      rogueAnswered.push(domain!);
      msg.respond(encodeFrame(reply));
    },
  });
  await rogue.flush();
  dataDir = await makeDataDir();
  node = await startTernNode({
    nodeId: "target",
    cluster,
    dataDir,
    localDomains: ["example.test"],
    users: [{ address: "alice@example.test", password: "pw" }],
    dns: { servers: [`${slowDns.host}:${slowDns.port}`], timeoutMs: 3000, tries: 1, allowedTargetNetworks: ["127.0.0.2/32"] },
    // A retry an hour away: what a test sees is the first attempt's outcome.
    delivery: { remotePort: realMx.port, retryBaseMs: 3_600_000, retryMaxMs: 3_600_000, pollMs: 50, connectTimeoutMs: 1000 },
  });
});

after(async () => {
  await node?.kill("SIGTERM");
  await rogue?.close();
  await Promise.all([realMx?.close(), ...(rogueSinks ?? []).map((sink) => sink.close()), slowDns?.stop(), dns?.stop(), removeDataDir(dataDir)]);
});

const send = async (to: string) => {
  const transport = nodemailer.createTransport({ host: "127.0.0.1", port: node.ports.smtp, secure: false, ignoreTLS: true });
  const info = await transport.sendMail({ envelope: { from: "alice@example.test", to: [to] }, raw: `From: alice@example.test\r\nSubject: to ${to}\r\n\r\nbody\r\n` });
  transport.close();
  return /queued as ([0-9A-Z]+)/.exec(info.response)![1]!;
};

const received = (sinks: Sink[], to: string) => sinks.flatMap((sink) => sink.received).filter((mail) => mail.to.includes(to));

for (const [domain, address] of [["stolen4.test", "127.0.0.1"], ["stolen6.test", "::1"]] as const) {
  test(`a forged route to ${address}, outside allowedTargetNetworks, is not used: this node resolves the domain itself and delivers to the real MX`, async () => {
    const rcpt = `bob@${domain}`;
    const queueId = await send(rcpt);
    const delivered = await node.waitForEvent("recipient.delivered", { queueId });
    assert.equal(delivered.server, `mx.${domain}[127.0.0.2]`);
    assert.ok(rogueAnswered.includes(domain), "the rogue answered first");
    const rejected = await node.waitForEvent("resolver.answer.rejected", { domain });
    assert.deepEqual((rejected.claimed as { hosts: unknown }).hosts, [{ name: `mx.${domain}`, preference: 10, addresses: [address] }]);
    await eventually(() => (received([realMx], rcpt).length === 1 ? true : undefined), 5_000, "mail at the real MX");
    assert.deepEqual(received(rogueSinks, rcpt), [], "nothing reached the rogue's sinks");
  });
}

test("a forged null MX for a domain that really takes mail is not believed: this node resolves it itself and delivers, no bounce", async () => {
  const queueId = await send("carol@real.test");
  const delivered = await node.waitForEvent("recipient.delivered", { queueId });
  assert.equal(delivered.server, "mx.real.test[127.0.0.2]");
  await eventually(() => (received([realMx], "carol@real.test").length === 1 ? true : undefined), 5_000, "mail at the real MX");
  assert.ok(rogueAnswered.includes("real.test"), "the rogue answered first");
  const unconfirmed = await node.waitForEvent("resolver.answer.unconfirmed", { domain: "real.test" });
  assert.equal((unconfirmed.claimed as { reason: string }).reason, "null-mx");
  assert.deepEqual((unconfirmed.route as { hosts: unknown }).hosts, [{ name: "mx.real.test", preference: 10, addresses: ["127.0.0.2"] }]);
  assert.equal(node.events("recipient.failed").filter((line) => line.queueId === queueId).length, 0);
  assert.equal(node.events("dsn.queued").filter((line) => line.queueId === queueId).length, 0, "no bounce");
});
