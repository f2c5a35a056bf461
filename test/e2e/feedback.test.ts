// Bounces and complaints that come back (issue 17) on a running node with per-recipient
// VERP: mail leaves with a return path of its own per recipient (the receiving host, a
// scripted SMTP server, records it) and an X-Tern-Id header; a bounce sent later over
// SMTP to one of those return paths (Python's smtplib, null sender) becomes a "bounced"
// event on the stream, classified; a feedback report (ARF) at the feedback-loop address
// becomes a "complained" event; a made-up return path is refused at RCPT and counted.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { connect } from "@nats-io/transport-node";
import { followStreamEvents } from "../../cluster/events-client.ts";
import type { ComplainedEvent, EventType, RecipientEvent, TernEvent } from "../../protocol/events.ts";
import { arfReport, postfixBounce } from "../actors/feedback/samples.ts";
import { startDnsmasq, type RunningDnsmasq } from "../support/dnsmasq.ts";
import { startScriptedSmtp, type ScriptedServer, type Transaction } from "../support/scripted-smtp.ts";
import { eventually, makeDataDir, readMetric, removeDataDir, run, startTernNode, uniqueCluster, type TernNode } from "../support/tern-node.ts";

const BOUNCE_DOMAIN = "bounces.example.test";
const VERP = /^b-([0-9a-z]{17})-[a-z2-7]{8}-[a-z2-7]{8}@bounces\.example\.test$/;

const cluster = uniqueCluster();
let dns: RunningDnsmasq;
let mx: ScriptedServer;
let node: TernNode;
let dataDir: string;

before(async () => {
  mx = await startScriptedSmtp();
  dns = await startDnsmasq({ mx: [{ domain: "relay.test", host: "mx.relay.test", preference: 10 }], hosts: [{ name: "mx.relay.test", address: "127.0.0.1" }] });
  dataDir = await makeDataDir();
  const keyFile = join(dataDir, "feedback.key");
  await writeFile(keyFile, "a-feedback-key-for-the-e2e-test\n", { mode: 0o600 });
  node = await startTernNode({
    nodeId: "a",
    cluster,
    dataDir,
    localDomains: ["example.test"],
    users: [{ address: "postmaster@example.test", password: "pw" }],
    api: { tenants: [{ name: "acme", senderDomains: ["acme.test"] }] },
    dns: { servers: [`${dns.host}:${dns.port}`], timeoutMs: 1000, tries: 2, allowedTargetNetworks: ["127.0.0.0/8"] },
    delivery: { remotePort: mx.port, retryBaseMs: 200, retryMaxMs: 1_000, pollMs: 50 },
    feedback: { verp: "recipient", bounceDomain: BOUNCE_DOMAIN, fblAddresses: ["fbl@example.test"], keyFile },
  });
});

after(async () => {
  await node?.kill("SIGTERM");
  await Promise.all([mx?.close(), dns?.stop(), removeDataDir(dataDir)]);
});

interface SmtpResult {
  readonly mail: [number, string];
  readonly rcpts: ReadonlyArray<[number, string]>;
  readonly data?: [number, string];
}

/** One SMTP transaction from Python's smtplib, as a reporting host would send it; each reply code and text. */
const smtp = async (from: string, to: ReadonlyArray<string>, message: string): Promise<SmtpResult> => {
  const script = `
import json, smtplib, sys
port, sender, rcpts = int(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])
s = smtplib.SMTP("127.0.0.1", port)
s.ehlo("reporter.test")
out = {"mail": list(s.mail(sender))}
out["rcpts"] = [list(s.rcpt(r)) for r in rcpts]
if any(code == 250 for code, _ in out["rcpts"]):
    out["data"] = list(s.data(sys.stdin.buffer.read()))
s.quit()
print(json.dumps({k: ([[c, t.decode()] for c, t in v] if k == "rcpts" else [v[0], v[1].decode()]) for k, v in out.items()}))
`;
  const result = await run("python3", ["-c", script, String(node.ports.smtp), from, JSON.stringify(to)], message);
  assert.equal(result.code, 0, result.stderr);
  return JSON.parse(result.stdout) as SmtpResult;
};

/** The stream's events of one type and tenant so far. */
const eventsOf = async <T extends TernEvent>(tenant: string, type: EventType): Promise<T[]> => {
  const nc = await connect({ servers: ["nats://127.0.0.1:4222"] });
  try {
    const seen: T[] = [];
    for await (const { event } of followStreamEvents(nc, { cluster, tenant, type, start: "first", timeoutMs: 2_000 })) seen.push(event as T);
    return seen;
  } finally {
    await nc.close();
  }
};

let messageId = "";
let sent: ReadonlyArray<Transaction> = [];

test("each recipient's copy leaves with a VERP return path of its own and the X-Tern-Id header; events keep the original sender", async () => {
  const message = ["From: News <news@acme.test>", "To: carol@relay.test, dave@relay.test", "Subject: December news", "", "Hello", ""].join("\r\n");
  const result = await smtp("news@acme.test", ["carol@relay.test", "dave@relay.test"], message);
  assert.equal(result.data?.[0], 250, JSON.stringify(result));
  messageId = /queued as ([0-9A-Z]+)/.exec(result.data![1])![1]!;
  sent = await eventually(() => (mx.accepted.length >= 2 ? [...mx.accepted] : undefined), 15_000, "both copies at the receiving host");
  assert.equal(sent.length, 2, "one transaction per recipient");
  assert.deepEqual(sent.map((t) => t.to.map((r) => r.address)).sort(), [["carol@relay.test"], ["dave@relay.test"]]);
  for (const transaction of sent) {
    assert.match(transaction.from, VERP);
    assert.equal(VERP.exec(transaction.from)![1], messageId.toLowerCase(), "the return path names the message");
    assert.match(transaction.body.toString(), new RegExp(`^X-Tern-Id: ${messageId.toLowerCase()}-[a-z2-7]{8}\\r$`, "m"));
  }
  assert.notEqual(sent[0]!.from, sent[1]!.from);
  const accepted = await eventually(async () => {
    const events = (await eventsOf<TernEvent>("acme", "accepted")).filter((e) => e.msg === messageId);
    return events.length === 2 ? events : undefined;
  }, 10_000, "the accepted events");
  assert.ok(accepted.every((e) => e.type === "accepted" && e.sender === "news@acme.test"));
});

const copyFor = (rcpt: string) => sent.find((t) => t.to[0]!.address === rcpt)!;

test("a bounce that arrives later at carol's return path is a bounced event (bad-mailbox) once it is answered 250", async () => {
  const verp = copyFor("carol@relay.test").from;
  const result = await smtp("", [verp], postfixBounce(verp, "carol@relay.test"));
  assert.deepEqual(result.mail[0], 250);
  assert.deepEqual(result.rcpts.map(([code]) => code), [250]);
  assert.equal(result.data?.[0], 250);
  assert.match(result.data![1], new RegExp(`bounce of message ${messageId} recorded`));
  // Answered only after the event was written: it is in the outbox or already on the stream.
  const [bounced] = await eventually(async () => {
    const events = (await eventsOf<RecipientEvent>("acme", "bounced")).filter((e) => e.msg === messageId);
    return events.length > 0 ? events : undefined;
  }, 10_000, "the bounced event");
  assert.deepEqual(
    { rcpt: bounced!.rcpt, route: bounced!.route, category: bounced!.category, dsn: bounced!.dsn, domain: bounced!.domain, server: bounced!.server, tag: bounced!.result._tag },
    { rcpt: "carol@relay.test", route: "remote", category: "bad-mailbox", dsn: "5.1.1", domain: "relay.test", server: "dsn", tag: "AsyncBounce" },
  );
  assert.match(bounced!.reply, /^5\.1\.1 bounced after delivery \(reported by mail\.example\.net\): 550 5\.1\.1/);
  await node.waitForEvent("feedback.bounce.recorded", { queueId: messageId, recipient: "carol@relay.test" });
  assert.equal(await readMetric(node, "tern_feedback_reports_total", 'kind="bounce",result="matched"'), 1);
});

test("a feedback report at the feedback-loop address, about dave's copy, is a complained event", async () => {
  const returned = copyFor("dave@relay.test").body.toString();
  const headers = returned.slice(0, returned.indexOf("\r\n\r\n")).split("\r\n");
  const report = arfReport("fbl@example.test", { headers: [`Return-Path: <${copyFor("dave@relay.test").from}>`, ...headers], rcptTo: "dave@relay.test" });
  const result = await smtp("feedback@arf.example.com", ["fbl@example.test"], report);
  assert.equal(result.data?.[0], 250, JSON.stringify(result));
  assert.match(result.data![1], /complaint of message .* recorded/);
  const [complaint] = await eventually(async () => {
    const events = (await eventsOf<ComplainedEvent>("acme", "complained")).filter((e) => e.msg === messageId);
    return events.length > 0 ? events : undefined;
  }, 10_000, "the complained event");
  assert.deepEqual(
    { rcpt: complaint!.rcpt, feedbackType: complaint!.feedbackType, sender: complaint!.sender, domain: complaint!.domain, userAgent: complaint!.userAgent, sourceIp: complaint!.sourceIp },
    { rcpt: "dave@relay.test", feedbackType: "abuse", sender: "news@acme.test", domain: "relay.test", userAgent: "SomeGenerator/1.0", sourceIp: "192.0.2.1" },
  );
  assert.equal(await readMetric(node, "tern_feedback_reports_total", 'kind="complaint",result="matched"'), 1);
});

test("a made-up return path is refused at RCPT and counted; a report travels alone in its transaction", async () => {
  const real = copyFor("carol@relay.test").from;
  const forged = real.replace(/([a-z2-7])@/, (_, c: string) => `${c === "a" ? "b" : "a"}@`);
  const refused = await smtp("", [forged, `someone@${BOUNCE_DOMAIN}`], postfixBounce(forged, "carol@relay.test"));
  assert.deepEqual(refused.rcpts.map(([code, text]) => [code, text]), [
    [550, "5.1.1 No such user here"],
    [550, "5.1.1 No such user here"],
  ]);
  assert.equal(refused.data, undefined);
  assert.equal(await readMetric(node, "tern_feedback_reports_total", 'kind="bounce",result="forged"'), 2);
  await node.waitForEvent("feedback.refused", { recipient: forged.toLowerCase(), reason: "forged" });

  const mixed = await smtp("", [real, "postmaster@example.test"], postfixBounce(real, "carol@relay.test"));
  assert.deepEqual(mixed.rcpts.map(([code]) => code), [250, 452]);
  const bounces = (await eventsOf<RecipientEvent>("acme", "bounced")).filter((e) => e.msg === messageId);
  assert.equal(bounces.length, 2, "the second bounce for carol is recorded too (reports are not deduplicated)");
});
