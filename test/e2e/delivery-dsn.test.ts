// DSNs end to end: a Tern node relays through dnsmasq to scripted loopback SMTP servers
// (one port, several loopback addresses), and its DSNs come back to the sender's own
// MX, where mailparser reads them. Short retry, delay-notice and expiry settings keep it fast.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import nodemailer from "nodemailer";
import { simpleParser, type ParsedMail } from "mailparser";
import { Schema } from "effect";
import { RecipientEvent } from "../../protocol/events.ts";
import { startDnsmasq, type RunningDnsmasq } from "../support/dnsmasq.ts";
import { startScriptedSmtp, type ScriptedServer } from "../support/scripted-smtp.ts";
import { makeDataDir, removeDataDir, startTernNode, uniqueCluster, eventually, sleep, type TernNode } from "../support/tern-node.ts";

let dns: RunningDnsmasq;
let origin: ScriptedServer; // MX of origin.test (the senders' domain) and of remote.test
let never: ScriptedServer; // always 451
let limited: ScriptedServer; // rate limits every MAIL FROM
let plain: ScriptedServer; // no STARTTLS, for a domain that requires TLS
let node: TernNode;
let dataDir: string;
let nc: NatsConnection;
let cluster: string;
const events: Array<{ subject: string; data: Record<string, unknown> }> = [];

const MAX_AGE_MS = 4_000;

before(async () => {
  origin = await startScriptedSmtp({ rcpt: (to) => (to.startsWith("nobody") ? `550 5.1.1 <${to}>: no such user` : undefined) }, 0, "127.0.0.1");
  const port = origin.port;
  never = await startScriptedSmtp({ rcpt: () => "451 4.3.0 try again later" }, port, "127.0.0.5");
  limited = await startScriptedSmtp({ mail: () => "421 4.7.28 Our system has detected an unusual rate of mail, slow down" }, port, "127.0.0.6");
  plain = await startScriptedSmtp({ extensions: ["PIPELINING", "8BITMIME"] }, port, "127.0.0.7");
  dns = await startDnsmasq({
    mx: [
      { domain: "origin.test", host: "mx.origin.test", preference: 10 },
      { domain: "remote.test", host: "mx.remote.test", preference: 10 },
      { domain: "never.test", host: "mx.never.test", preference: 10 },
      { domain: "ratelimited.test", host: "mx.ratelimited.test", preference: 10 },
      { domain: "secure.test", host: "mx.secure.test", preference: 10 },
    ],
    hosts: [
      { name: "mx.origin.test", address: "127.0.0.1" },
      { name: "mx.remote.test", address: "127.0.0.1" },
      { name: "mx.never.test", address: "127.0.0.5" },
      { name: "mx.ratelimited.test", address: "127.0.0.6" },
      { name: "mx.secure.test", address: "127.0.0.7" },
    ],
  });
  dataDir = await makeDataDir();
  cluster = uniqueCluster();
  nc = await connect({ servers: ["nats://127.0.0.1:4222"] });
  nc.subscribe(`tern.${cluster}.events.>`, { callback: (_e, msg) => void events.push({ subject: msg.subject, data: msg.json() }) });
  node = await startTernNode({
    nodeId: "dsn",
    cluster,
    hostname: "tern.test",
    dataDir,
    localDomains: ["example.test"],
    users: [{ address: "alice@example.test", password: "pw" }],
    dns: { servers: [`${dns.host}:${dns.port}`], timeoutMs: 1000, tries: 2, allowedTargetNetworks: ["127.0.0.0/8"] },
    delivery: {
      remotePort: port,
      retryBaseMs: 300,
      retryMaxMs: 600,
      pollMs: 50,
      connectTimeoutMs: 1000,
      maxAgeMs: MAX_AGE_MS,
      delayNoticeMs: 1_500,
      holdMs: 100,
      requireTls: ["secure.test"],
    },
  });
});

after(async () => {
  await node?.kill("SIGTERM");
  await nc?.close();
  await Promise.all([origin, never, limited, plain].map((s) => s?.close()));
  await Promise.all([dns?.stop(), removeDataDir(dataDir)]);
});

const send = async (envelope: { from: string; to: string[] }, raw: string, dsn?: Record<string, unknown>) => {
  const transport = nodemailer.createTransport({ host: "127.0.0.1", port: node.ports.smtp, secure: false, ignoreTLS: true });
  const info = await transport.sendMail({ envelope, raw, ...(dsn ? { dsn } : {}) });
  transport.close();
  const queueId = /queued as ([0-9A-Z]+)/.exec(info.response)?.[1];
  assert.ok(queueId, `no queue id in ${info.response}`);
  return queueId;
};

const parse = (body: Buffer) => simpleParser(body, { keepDeliveryStatus: true });
const part = (mail: ParsedMail, type: string) => mail.attachments.find((a) => a.contentType === type)?.content.toString() ?? "";

/** DSNs the origin MX received for this sender, parsed. */
const dsnsFor = async (address: string) => {
  const mails = origin.accepted.filter((m) => m.from === "" && m.to.some((t) => t.address === address));
  return Promise.all(mails.map((m) => parse(m.body)));
};

const waitForDsn = (address: string, action: string, timeoutMs = 15_000) =>
  eventually(async () => (await dsnsFor(address)).find((m) => new RegExp(`^Action: ${action}$`, "m").test(part(m, "message/delivery-status"))), timeoutMs, `${action} DSN for ${address}`);

test("a recipient refused with 5xx bounces at once: the other is delivered, and the sender gets a DSN with the status and the whole message", async () => {
  const raw = "From: s1@origin.test\r\nTo: nobody@remote.test\r\nSubject: bounce me\r\nMessage-ID: <m1@origin.test>\r\n\r\nfirst body\r\n";
  const queueId = await send({ from: "s1@origin.test", to: ["nobody@remote.test", "fine@remote.test"] }, raw);
  const failed = await node.waitForEvent("recipient.failed", { queueId });
  assert.equal(failed.recipient, "nobody@remote.test");
  assert.equal(failed.category, "bad-mailbox");
  assert.equal(failed.mx, "mx.remote.test");
  assert.equal(failed.ip, "127.0.0.1");
  const dsn = await waitForDsn("s1@origin.test", "failed");
  assert.equal(dsn.subject, "Undelivered Mail Returned to Sender");
  assert.equal(dsn.headers.get("auto-submitted"), "auto-replied");
  const status = part(dsn, "message/delivery-status");
  assert.match(status, /^Reporting-MTA: dns; tern\.test$/m);
  assert.match(status, /Final-Recipient: rfc822; nobody@remote\.test\r\nAction: failed\r\nStatus: 5\.1\.1\r\nRemote-MTA: dns; mx\.remote\.test\r\nDiagnostic-Code: smtp; 550 5\.1\.1/);
  assert.doesNotMatch(status, /fine@remote\.test/);
  const returned = part(dsn, "message/rfc822");
  assert.match(returned, /Subject: bounce me/);
  assert.match(returned, /first body/, "no RET: the whole (small) message comes back");
  assert.ok(origin.accepted.some((m) => m.from === "s1@origin.test" && m.to.some((t) => t.address === "fine@remote.test")));
});

test("mail that stays deferred gets one delay notice, then expires into a DSN with the original headers, ENVID, ORCPT and 4.4.7", async () => {
  const raw = "From: s2@origin.test\r\nTo: a@never.test\r\nSubject: expiring\r\nMessage-ID: <m2@origin.test>\r\n\r\nsecond body\r\n";
  const queueId = await send({ from: "s2@origin.test", to: ["a@never.test", "b@never.test"] }, raw, { id: "ENV-7", return: "headers", notify: ["failure", "delay"], recipient: "first@never.test" });
  const deferred = await node.waitForEvent("recipient.deferred", { queueId });
  assert.match(String(deferred.reply), /^451 4\.3\.0/);
  assert.equal(deferred.requeued, "temporary-reply");

  const delayed = await waitForDsn("s2@origin.test", "delayed");
  assert.equal(delayed.subject, "Delayed Mail (still being retried)");
  assert.match(part(delayed, "message/delivery-status"), /Action: delayed\r\nStatus: 4\.3\.0\r\n(.*\r\n)*Will-Retry-Until: /);

  const expired = await waitForDsn("s2@origin.test", "failed", MAX_AGE_MS + 10_000);
  const status = part(expired, "message/delivery-status");
  assert.match(status, /^Original-Envelope-Id: ENV-7$/m);
  for (const rcpt of ["a@never.test", "b@never.test"]) {
    assert.match(status, new RegExp(`Final-Recipient: rfc822; ${rcpt.replace(".", "\\.")}\r\nOriginal-Recipient: rfc822; first@never\\.test\r\nAction: failed\r\nStatus: 4\\.4\\.7\r\nRemote-MTA: dns; mx\\.never\\.test\r\nDiagnostic-Code: smtp; 451 4\\.3\\.0 try again later`));
  }
  const headers = part(expired, "text/rfc822-headers");
  assert.match(headers, /Subject: expiring/);
  assert.match(headers, /Message-ID: <m2@origin\.test>/);
  assert.doesNotMatch(headers, /second body/, "RET=HDRS: headers only");
  const expiredEvent = await node.waitForEvent("recipient.expired", { queueId });
  assert.equal(expiredEvent.category, "other");
  await sleep(500);
  assert.equal((await dsnsFor("s2@origin.test")).filter((m) => /Action: delayed/.test(part(m, "message/delivery-status"))).length, 1, "one delay notice only");
});

test("NOTIFY=NEVER, the null sender and Auto-Submitted mail are never answered with a DSN", async () => {
  // Each to an address of its own: the first test's bounce put nobody@ on origin.test's suppression list.
  const never1 = await send({ from: "s3@origin.test", to: ["nobody-quiet@remote.test"] }, "Subject: quiet\r\n\r\nx\r\n", { notify: "never" });
  const nullSender = await send({ from: "", to: ["nobody@remote.test"] }, "Subject: a bounce itself\r\n\r\nx\r\n");
  const auto = await send({ from: "s4@origin.test", to: ["nobody-auto@remote.test"] }, "Subject: vacation\r\nAuto-Submitted: auto-replied\r\n\r\nx\r\n");
  for (const msg of [never1, nullSender, auto]) await node.waitForEvent("recipient.failed", { queueId: msg });
  await node.waitForEvent("dsn.suppressed", { queueId: nullSender });
  await node.waitForEvent("dsn.suppressed", { queueId: auto });
  const control = await send({ from: "s9@origin.test", to: ["nobody-control@remote.test"] }, "Subject: control\r\n\r\nx\r\n");
  await node.waitForEvent("dsn.queued", { queueId: control });
  await waitForDsn("s9@origin.test", "failed");
  assert.equal((await dsnsFor("s3@origin.test")).length, 0);
  assert.equal((await dsnsFor("s4@origin.test")).length, 0);
  assert.ok(!node.events("dsn.queued").some((e) => [never1, nullSender, auto].includes(String(e.queueId))));
});

test("a domain that requires TLS is not sent to a host without STARTTLS: deferred as TLS trouble, then bounced as such", async () => {
  const queueId = await send({ from: "s5@origin.test", to: ["x@secure.test"] }, "Subject: secret\r\n\r\nx\r\n");
  const deferred = await node.waitForEvent("recipient.deferred", { queueId });
  assert.equal(deferred.category, "tls");
  assert.equal(deferred.requeued, "tls-unavailable");
  assert.ok(!plain.commands.some((c) => c.startsWith("MAIL")), "nothing sent in plaintext");
  const dsn = await waitForDsn("s5@origin.test", "failed", MAX_AGE_MS + 10_000);
  assert.match(part(dsn, "message/delivery-status"), /Status: 4\.4\.7\r\nRemote-MTA: dns; mx\.secure\.test\r\nDiagnostic-Code: x-tern; /);
  const expired = await node.waitForEvent("recipient.expired", { queueId });
  assert.equal(expired.category, "tls");
});

test("a rate-limit reply defers with the rate-limited category on events and metrics", async () => {
  const queueId = await send({ from: "s6@origin.test", to: ["r@ratelimited.test"] }, "Subject: many\r\n\r\nx\r\n");
  const logged = await node.waitForEvent("recipient.deferred", { queueId });
  assert.equal(logged.category, "rate-limited");
  assert.equal(logged.requeued, "rate-limited");
  const event = await eventually(
    () => events.find((e) => e.subject === `tern.${cluster}.events.default.deferred.ratelimited_test` && e.data.msg === queueId),
    5_000,
    "deferred event on NATS",
  );
  assert.equal(event.data.category, "rate-limited");
  assert.equal(event.data.rcpt, "r@ratelimited.test");
  // Consumers decode events with the protocol's Schema; the result is the reply as a value.
  const decoded = Schema.decodeUnknownSync(RecipientEvent)(event.data);
  assert.equal(decoded.type, "deferred");
  assert.deepEqual(decoded.result, { _tag: "Reply", code: 421, enhanced: "4.7.28", text: "Our system has detected an unusual rate of mail, slow down" });
  assert.equal(decoded.dsn, "4.7.28");
  assert.equal(decoded.requeued, "rate-limited");
  const metrics = await (await fetch(`http://127.0.0.1:${node.ports.http}/metrics`)).text();
  assert.match(metrics, /tern_recipients_deferred_total\{route="remote",category="rate-limited"\} [1-9]/);
  assert.match(metrics, /tern_recipients_failed_total\{route="remote",category="bad-mailbox"\} [1-9]/);
});
