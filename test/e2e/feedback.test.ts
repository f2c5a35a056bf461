// Bounces and complaints that come back (issue 17) on two nodes of a cluster with
// per-recipient VERP: mail sent through node a leaves from its pool address with a return
// path of its own per recipient (the receiving host, a scripted SMTP server, records it)
// and an X-Tern-Id header; a bounce sent later over SMTP to node a at one of those return
// paths (Python's smtplib, null sender) becomes a "bounced" event on the stream,
// classified, puts the recipient on the suppression list and counts as a bounce in node
// a's reputation figures; a feedback report (ARF) at the feedback-loop address, sent to
// node b, becomes a "complained" event, puts its recipient on the suppression list and
// counts as a complaint in the figures of node a, which sent the message (`tern suppress
// list`, `tern reputation`, /metrics); a made-up return path is refused at RCPT and counted.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { connect } from "@nats-io/transport-node";
import { followStreamEvents } from "../../cluster/events-client.ts";
import { reputationCommand, type Summary } from "../../nodes/reputation-command.ts";
import { suppressCommand } from "../../nodes/suppress-command.ts";
import type { ComplainedEvent, EventType, RecipientEvent, TernEvent } from "../../protocol/events.ts";
import { arfReport, postfixBounce } from "../actors/feedback/samples.ts";
import { startDnsmasq, type RunningDnsmasq } from "../support/dnsmasq.ts";
import { startScriptedSmtp, type ScriptedServer, type Transaction } from "../support/scripted-smtp.ts";
import { eventually, makeDataDir, readMetric, removeDataDir, run, startTernNode, uniqueCluster, type TernNode } from "../support/tern-node.ts";

const BOUNCE_DOMAIN = "bounces.example.test";
const VERP = /^b-([0-9a-z]{17})-[a-z2-7]{8}-[a-z2-7]{8}@bounces\.example\.test$/;
/** The pool address acme.test's mail leaves from. */
const SOURCE = "127.0.0.2";

const cluster = uniqueCluster();
let dns: RunningDnsmasq;
let mx: ScriptedServer;
/** Node a sends the mail; node b takes the feedback report. */
let node: TernNode;
let other: TernNode;
const dirs: string[] = [];

before(async () => {
  mx = await startScriptedSmtp();
  dns = await startDnsmasq({ mx: [{ domain: "relay.test", host: "mx.relay.test", preference: 10 }], hosts: [{ name: "mx.relay.test", address: "127.0.0.1" }] });
  dirs.push(await makeDataDir(), await makeDataDir());
  const keyFile = join(dirs[0]!, "feedback.key");
  await writeFile(keyFile, "a-feedback-key-for-the-e2e-test\n", { mode: 0o600 });
  const nodeConfig = (nodeId: string, dataDir: string) => ({
    nodeId,
    cluster,
    dataDir,
    localDomains: ["example.test"],
    users: [{ address: "postmaster@example.test", password: "pw" }],
    api: { tenants: [{ name: "acme", senderDomains: ["acme.test"] }] },
    dns: { servers: [`${dns.host}:${dns.port}`], timeoutMs: 1000, tries: 2, allowedTargetNetworks: ["127.0.0.0/8"] },
    delivery: {
      remotePort: mx.port,
      retryBaseMs: 200,
      retryMaxMs: 1_000,
      pollMs: 50,
      providers: { relay: [".relay.test"] },
      pools: { news: [{ address: SOURCE, ehlo: "news.tern.test" }] },
      poolRules: [{ senderDomain: "acme.test", pool: "news" }],
    },
    feedback: { verp: "recipient", bounceDomain: BOUNCE_DOMAIN, fblAddresses: ["fbl@example.test"], keyFile },
  });
  node = await startTernNode(nodeConfig("a", dirs[0]!));
  other = await startTernNode(nodeConfig("b", dirs[1]!));
});

after(async () => {
  await Promise.all([node?.kill("SIGTERM"), other?.kill("SIGTERM")]);
  await Promise.all([mx?.close(), dns?.stop(), ...dirs.map(removeDataDir)]);
});

interface SmtpResult {
  readonly mail: [number, string];
  readonly rcpts: ReadonlyArray<[number, string]>;
  readonly data?: [number, string];
}

/** One SMTP transaction from Python's smtplib to node a (or `to`), as a reporting host would send it; each reply code and text. */
const smtp = async (from: string, to: ReadonlyArray<string>, message: string, at: TernNode = node): Promise<SmtpResult> => {
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
  const result = await run("python3", ["-c", script, String(at.ports.smtp), from, JSON.stringify(to)], message);
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

/** `tern reputation --json …`, summed over every node that answers unless `--node` says one. */
const reputation = async (...args: string[]): Promise<Summary> => {
  let out = "";
  const code = await reputationCommand(["--config", join(dirs[0]!, "config-a.json"), "--json", ...args], { out: (t) => (out += `${t}\n`), err: (t) => (out += `${t}\n`) });
  assert.equal(code, 0, out);
  return JSON.parse(out) as Summary;
};

/** Figures of acme.test's mail under each of its keys: the source address, the sender domain, the provider. */
const acmeFigures = (summary: Summary) =>
  (
    [
      ["source", SOURCE],
      ["sender_domain", "acme.test"],
      ["provider", "relay"],
    ] as const
  ).map(([dimension, key]) => {
    const f = summary.figures.find((f) => f.dimension === dimension && f.key === key);
    return f && { key: f.key, delivered: f.delivered, bounced: f.bounced, complained: f.complained, bounces: f.bounces };
  });

/** `tern suppress list --scope acme.test --json`: one record per line. */
const suppressedAtAcme = async (): Promise<Array<Record<string, unknown>>> => {
  let out = "";
  const code = await suppressCommand(["--config", join(dirs[0]!, "config-a.json"), "list", "--scope", "acme.test", "--json"], { out: (t) => (out += `${t}\n`), err: (t) => (out += `${t}\n`) });
  assert.equal(code, 0, out);
  return out.trim() === "" ? [] : out.trim().split("\n").map((line) => JSON.parse(line) as Record<string, unknown>);
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
  assert.ok(sent.every((t) => t.client.address === SOURCE), "both left from the pool address");
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

  // A bad mailbox: carol is suppressed for acme.test's mail once the event is published.
  const [listed] = await eventually(async () => {
    const records = (await suppressedAtAcme()).filter((r) => r.address === "carol@relay.test");
    return records.length > 0 ? records : undefined;
  }, 10_000, "carol on the suppression list");
  assert.deepEqual([listed!.scope, listed!.reason, listed!.msg, listed!.node], ["acme.test", "bad-mailbox", messageId, "a"]);
  // And a bounce in the reputation figures: both copies were delivered (the host said 250), one bounced since.
  const bounce = { delivered: 2, bounced: 1, complained: 0, bounces: { "bad-mailbox": 1 } };
  assert.deepEqual(acmeFigures(await reputation("--node", "a")), [{ key: SOURCE, ...bounce }, { key: "acme.test", ...bounce }, { key: "relay", ...bounce }]);
});

test("a feedback report at node b's feedback-loop address, about dave's copy, is a complained event, suppresses dave and counts as a complaint on node a", async () => {
  const returned = copyFor("dave@relay.test").body.toString();
  const headers = returned.slice(0, returned.indexOf("\r\n\r\n")).split("\r\n");
  const report = arfReport("fbl@example.test", { headers: [`Return-Path: <${copyFor("dave@relay.test").from}>`, ...headers], rcptTo: "dave@relay.test" });
  const result = await smtp("feedback@arf.example.com", ["fbl@example.test"], report, other);
  assert.equal(result.data?.[0], 250, JSON.stringify(result));
  assert.match(result.data![1], /complaint of message .* recorded/);
  const [complaint] = await eventually(async () => {
    const events = (await eventsOf<ComplainedEvent>("acme", "complained")).filter((e) => e.msg === messageId);
    return events.length > 0 ? events : undefined;
  }, 10_000, "the complained event");
  assert.deepEqual(
    { node: complaint!.node, rcpt: complaint!.rcpt, feedbackType: complaint!.feedbackType, sender: complaint!.sender, domain: complaint!.domain, userAgent: complaint!.userAgent, sourceIp: complaint!.sourceIp },
    { node: "b", rcpt: "dave@relay.test", feedbackType: "abuse", sender: "news@acme.test", domain: "relay.test", userAgent: "SomeGenerator/1.0", sourceIp: "192.0.2.1" },
  );
  assert.equal(await readMetric(other, "tern_feedback_reports_total", 'kind="complaint",result="matched"'), 1);

  const [listed] = await eventually(async () => {
    const records = (await suppressedAtAcme()).filter((r) => r.address === "dave@relay.test");
    return records.length > 0 ? records : undefined;
  }, 10_000, "dave on the suppression list");
  assert.deepEqual([listed!.scope, listed!.reason, listed!.msg, listed!.node, listed!.detail], ["acme.test", "complaint", messageId, "b", "feedback abuse"]);

  // Counted by node a, which sent the message, under its delivery's keys (the report's
  // Source-IP, 192.0.2.1, is no pool address); node b, which took the report, counts nothing.
  const counted = { delivered: 2, bounced: 1, complained: 1, bounces: { "bad-mailbox": 1 } };
  const onA = await eventually(async () => {
    const figures = acmeFigures(await reputation("--node", "a"));
    return figures[1]?.complained === 1 ? figures : undefined;
  }, 10_000, "the complaint in node a's figures");
  assert.deepEqual(onA, [{ key: SOURCE, ...counted }, { key: "acme.test", ...counted }, { key: "relay", ...counted }]);
  assert.deepEqual((await reputation("--node", "b")).figures, []);
  const summed = await reputation();
  assert.deepEqual(summed.nodes, ["a", "b"]);
  const acme = summed.figures.find((f) => f.dimension === "sender_domain" && f.key === "acme.test")!;
  assert.deepEqual([acme.complained, acme.complaintRate, acme.bounceRate], [1, 0.5, 1 / 3]);
  assert.equal(await readMetric(node, "tern_reputation_messages", 'dimension="sender_domain",key="acme.test",outcome="complained",window="1h"'), 1);
  assert.equal(await readMetric(node, "tern_reputation_rate", 'dimension="source",key="127.0.0.2",kind="complaint",window="24h"'), 0.5);
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
