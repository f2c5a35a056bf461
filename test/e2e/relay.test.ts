// nodemailer → session → spool → resolver (real DNS: dnsmasq) → delivery → loopback sink.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import nodemailer from "nodemailer";
import { startDnsmasq, type RunningDnsmasq } from "../support/dnsmasq.ts";
import { startSink, type Sink } from "../support/sink.ts";
import { makeDataDir, removeDataDir, startTernNode, uniqueCluster, eventually, type TernNode } from "../support/tern-node.ts";

let dns: RunningDnsmasq;
let sink: Sink;
let node: TernNode;
let dataDir: string;
let dataCalls = 0;

before(async () => {
  sink = await startSink(0, {
    rcpt: (address) => (address.startsWith("refused@") ? { code: 550, text: "5.1.1 no such mailbox" } : undefined),
    // The first transaction for flaky@ is deferred by the remote, the next accepted.
    data: (mail) => (mail.to.includes("flaky@remote.test") && dataCalls++ === 0 ? { code: 451, text: "4.3.0 try later" } : undefined),
  });
  dns = await startDnsmasq({
    mx: [
      // Preference order matters: mx1 (10) is tried first and refuses connections
      // (nothing listens on 127.0.0.2), so delivery must fall back to mx2 (20).
      { domain: "remote.test", host: "mx1.remote.test", preference: 10 },
      { domain: "remote.test", host: "mx2.remote.test", preference: 20 },
    ],
    hosts: [
      { name: "mx1.remote.test", address: "127.0.0.2" },
      { name: "mx2.remote.test", address: "127.0.0.1" },
      { name: "bare.test", address: "127.0.0.1" }, // no MX: the A record is the implicit MX
    ],
  });
  dataDir = await makeDataDir();
  node = await startTernNode({
    nodeId: "relay",
    cluster: uniqueCluster(),
    dataDir,
    localDomains: ["example.test"],
    users: [{ address: "alice@example.test", password: "pw" }],
    dns: { servers: [`${dns.host}:${dns.port}`], timeoutMs: 1000, tries: 2, allowedTargetNetworks: ["127.0.0.0/8"] },
    delivery: { remotePort: sink.port, retryBaseMs: 200, retryMaxMs: 1000, pollMs: 50, connectTimeoutMs: 2000 },
  });
});

after(async () => {
  await node.kill("SIGTERM");
  await Promise.all([sink.close(), dns.stop(), removeDataDir(dataDir)]);
});

const send = async (envelope: { from: string; to: string[] }, raw: string) => {
  const transport = nodemailer.createTransport({ host: "127.0.0.1", port: node.ports.smtp, secure: false, ignoreTLS: true });
  const info = await transport.sendMail({ envelope, raw });
  transport.close();
  const queueId = /queued as ([0-9A-Z]+)/.exec(info.response)?.[1];
  assert.ok(queueId, `no queue id in ${info.response}`);
  return queueId;
};

/** The sink got the message Tern queued under this id (our Received header names it). */
const carries = (body: Buffer, queueId: string) => new RegExp(`\\(Tern\\) with ESMTP id ${queueId}[;\\r]`).test(body.toString("latin1"));

const withoutOurReceived = (body: Buffer) => {
  const text = body.toString("latin1");
  assert.match(text, /^Received: from [^\r\n]+\r\n\tby [^\r\n]+ \(Tern\) with ESMTP id [0-9A-Z]+[;\r]/);
  return text.replace(/^Received: [^\r\n]+\r\n(\t[^\r\n]+\r\n)+/, "");
};

test("a relayed message reaches the remote MX with its envelope and body byte for byte, in MX preference order", async () => {
  const raw = "From: a@example.test\r\nTo: b@remote.test\r\nSubject: relay\r\n\r\nHello remote.\r\n.dot line\r\n\r\nBye\r\n";
  const queueId = await send({ from: "a@example.test", to: ["b@remote.test", "c@remote.test"] }, raw);
  const arrived = await eventually(() => sink.received.find((m) => carries(m.body, queueId)), 15_000, "relayed mail");
  assert.equal(arrived.from, "a@example.test");
  assert.deepEqual([...arrived.to].sort(), ["b@remote.test", "c@remote.test"]);
  assert.equal(withoutOurReceived(arrived.body), raw);
  const delivered = await node.waitForEvent("recipient.delivered", { queueId });
  assert.match(String(delivered.server), /^mx2\.remote\.test\[127\.0\.0\.1\]$/);
});

test("a domain without MX is delivered to its A record", async () => {
  const queueId = await send({ from: "a@example.test", to: ["x@bare.test"] }, "Subject: bare\r\n\r\nimplicit mx\r\n");
  await eventually(() => sink.received.find((m) => carries(m.body, queueId)), 15_000, "implicit-MX mail");
});

test("a 5xx for one recipient fails only that one; the other is delivered", async () => {
  const queueId = await send({ from: "a@example.test", to: ["refused@remote.test", "fine@remote.test"] }, "Subject: mixed\r\n\r\nx\r\n");
  const failed = await node.waitForEvent("recipient.failed", { queueId });
  assert.equal(failed.recipient, "refused@remote.test");
  assert.match(String(failed.reply), /^550 5\.1\.1/);
  const arrived = await eventually(() => sink.received.find((m) => carries(m.body, queueId)), 15_000, "mixed mail");
  assert.deepEqual(arrived.to, ["fine@remote.test"]);
});

test("a 4xx defers the message and a later attempt delivers it", async () => {
  const queueId = await send({ from: "a@example.test", to: ["flaky@remote.test"] }, "Subject: flaky\r\n\r\nretry me\r\n");
  const deferred = await node.waitForEvent("recipient.deferred", { queueId });
  assert.match(String(deferred.reply), /^451 4\.3\.0/);
  await eventually(() => sink.received.find((m) => carries(m.body, queueId)), 15_000, "retried mail");
  await node.waitForEvent("recipient.delivered", { queueId });
});

test("a domain that does not exist fails permanently instead of waiting", async () => {
  const queueId = await send({ from: "a@example.test", to: ["x@nowhere.test"] }, "Subject: nx\r\n\r\nx\r\n");
  const failed = await node.waitForEvent("recipient.failed", { queueId });
  assert.equal(failed.dsn, "5.1.2");
  assert.match(String(failed.reply), /^5\.1\.2 DNS: /);
});

test("the null sender is relayed as MAIL FROM:<>", async () => {
  const queueId = await send({ from: "", to: ["bounce@remote.test"] }, "Subject: dsn\r\n\r\nnull sender\r\n");
  const arrived = await eventually(() => sink.received.find((m) => carries(m.body, queueId)), 15_000, "null-sender mail");
  assert.equal(arrived.from, "");
});
