// Reputation figures and thresholds (issue 17) on a running node: the receiving host (a
// scripted SMTP server) answers `550 5.1.1` to every 4th recipient. Mail of sender domain
// news.example leaves from pool address 127.0.0.2 to remote.test (provider "remote" by its
// MX host). After 20 messages, `tern reputation` and /metrics show a bounce rate of 25 %
// for the source address, the sender domain and the provider. Thresholds at 20 % act on
// the 20th message: the sender domain is paused (its next message is held, not sent, not
// bounced; other senders' mail goes on) and the source address is slowed; each is a log
// line, a metric and an event on the stream. The pause ends and the held message goes.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { connect } from "@nats-io/transport-node";
import nodemailer from "nodemailer";
import { followStreamEvents } from "../../cluster/events-client.ts";
import { renderEvent } from "../../nodes/events-command.ts";
import { reputationCommand, type Summary } from "../../nodes/reputation-command.ts";
import type { ReputationActionEvent } from "../../protocol/events.ts";
import { startDnsmasq, type RunningDnsmasq } from "../support/dnsmasq.ts";
import { startScriptedSmtp, type ScriptedServer } from "../support/scripted-smtp.ts";
import { eventually, makeDataDir, readMetric, removeDataDir, startTernNode, uniqueCluster, type TernNode } from "../support/tern-node.ts";

const PAUSE_MS = 15_000;
const SOURCE = "127.0.0.2";

const cluster = uniqueCluster();
let dns: RunningDnsmasq;
let sink: ScriptedServer;
let node: TernNode;
let dataDir: string;
let rcpts = 0;

before(async () => {
  // Every 4th recipient the host is asked about does not exist.
  sink = await startScriptedSmtp({ rcpt: (to) => (rcpts++ % 4 === 3 ? `550 5.1.1 <${to}>: no such user` : undefined) });
  dns = await startDnsmasq({ mx: [{ domain: "remote.test", host: "mx.remote.test", preference: 10 }], hosts: [{ name: "mx.remote.test", address: "127.0.0.1" }] });
  dataDir = await makeDataDir();
  node = await startTernNode({
    nodeId: "a",
    cluster,
    dataDir,
    localDomains: ["example.test"],
    users: [{ address: "postmaster@example.test", password: "pw" }],
    dns: { servers: [`${dns.host}:${dns.port}`], timeoutMs: 1000, tries: 2, allowedTargetNetworks: ["127.0.0.0/8"] },
    delivery: {
      remotePort: sink.port,
      retryBaseMs: 200,
      retryMaxMs: 1_000,
      pollMs: 50,
      throttleGapMs: 50,
      providers: { remote: [".remote.test"] },
      pools: { news: [{ address: SOURCE, ehlo: "news.tern.test" }] },
      poolRules: [{ senderDomain: "news.example", pool: "news" }],
    },
    reputation: {
      thresholds: [
        { name: "domain-bounces", dimension: "sender_domain", bounceRate: 0.2, minMessages: 20, action: "pause", pauseMs: PAUSE_MS },
        { name: "ip-bounces", dimension: "source", bounceRate: 0.2, minMessages: 20, action: "slow", level: 2 },
      ],
    },
  });
});

after(async () => {
  await node?.kill("SIGTERM");
  await Promise.all([sink?.close(), dns?.stop(), removeDataDir(dataDir)]);
});

const send = async (from: string, to: string) => {
  const transport = nodemailer.createTransport({ host: "127.0.0.1", port: node.ports.smtp, secure: false, ignoreTLS: true });
  // NOTIFY=NEVER: no bounce notices to the (unresolvable) sender domains.
  await transport.sendMail({ envelope: { from, to: [to] }, dsn: { notify: "NEVER" }, raw: `From: ${from}\r\nTo: ${to}\r\nSubject: news\r\n\r\nbody\r\n` });
  transport.close();
};

/** `tern reputation …` in this process, asking every node. */
const reputation = async (...args: string[]) => {
  let out = "";
  const code = await reputationCommand(["--config", join(dataDir, "config-a.json"), ...args], { out: (t) => (out += `${t}\n`), err: (t) => (out += `${t}\n`) });
  return { code, out };
};

const finished = () => node.events("recipient.delivered").length + node.events("recipient.failed").length;

test("a host that bounces every 4th recipient: 25 % for the source address, sender domain and provider; thresholds at 20 % pause the sender domain and slow the address, with events", async () => {
  for (let n = 0; n < 20; n++) await send("letters@news.example", `r${n}@remote.test`);
  await eventually(() => (finished() === 20 ? true : undefined), 20_000, "20 outcomes recorded");
  assert.equal(node.events("recipient.failed").length, 5);
  assert.ok(sink.finished.every((mail) => mail.client.address === SOURCE), "the pool address sent them");

  // Both thresholds acted on the 20th outcome.
  const paused = await node.waitForEvent("reputation.paused", {}, 5_000);
  assert.deepEqual([paused.dimension, paused.key, paused.rule, paused.kind, paused.rate, paused.limit, paused.messages, paused.level], ["sender_domain", "news.example", "domain-bounces", "bounce", 0.25, 0.2, 20, "warn"]);
  const slowed = await node.waitForEvent("reputation.slowed", {}, 5_000);
  assert.deepEqual([slowed.dimension, slowed.key, slowed.rule, slowed.backoffLevel], ["source", SOURCE, "ip-bounces", 2]);

  const json = await reputation("--json");
  assert.equal(json.code, 0, json.out);
  const summary = JSON.parse(json.out) as Summary;
  assert.deepEqual(summary.nodes, ["a"]);
  const figures = (dimension: string, key: string) => summary.figures.find((f) => f.dimension === dimension && f.key === key);
  for (const [dimension, key] of [["source", SOURCE], ["sender_domain", "news.example"], ["provider", "remote"]] as const) {
    const f = figures(dimension, key);
    assert.deepEqual(f && [f.messages, f.delivered, f.bounced, f.deferred, f.complained, f.bounceRate, f.bounces], [20, 15, 5, 0, 0, 0.25, { "bad-mailbox": 5 }], `${dimension} ${key}`);
  }
  assert.deepEqual(summary.actions.map((a) => [a.node, a.dimension, a.key, a.action, a.rule, a.rate]).sort(), [
    ["a", "sender_domain", "news.example", "pause", "domain-bounces", 0.25],
    ["a", "source", SOURCE, "slow", "ip-bounces", 0.25],
  ]);
  const text = await reputation("--by", "sender-domain", "--window", "24h");
  assert.match(text.out, /^last 24h, summed over 1 node \(a\)\n {2}sender domain +messages +delivered +bounced +deferred +complaints +bounce +complaint +deferral\n {2}news\.example +20 +15 +5 +0 +0 +25\.0% +0\.00% +0\.0%\n {6}bounced: bad-mailbox 5\nheld now:\n/);
  assert.match(text.out, /node a: sender domain news\.example paused until \S+ since \S+ by domain-bounces \(bounce rate 25\.0% ≥ 20\.0% over 20 messages in 1h\)/);
  assert.match(text.out, /node a: source address 127\.0\.0\.2 slowed to level 2 since \S+ by ip-bounces/);

  const labels = (dimension: string, key: string, more: string) => `dimension="${dimension}",key="${key}",${more}`;
  assert.equal(await readMetric(node, "tern_reputation_rate", labels("sender_domain", "news.example", 'kind="bounce",window="1h"')), 0.25);
  assert.equal(await readMetric(node, "tern_reputation_rate", labels("provider", "remote", 'kind="bounce",window="24h"')), 0.25);
  assert.equal(await readMetric(node, "tern_reputation_messages", labels("source", SOURCE, 'outcome="delivered",window="1h"')), 15);
  assert.equal(await readMetric(node, "tern_reputation_bounces", labels("source", SOURCE, 'category="bad-mailbox",window="1h"')), 5);
  assert.equal(await readMetric(node, "tern_reputation_held", labels("sender_domain", "news.example", 'action="pause"')), 1);
  assert.equal(await readMetric(node, "tern_reputation_held", labels("source", SOURCE, 'action="slow"')), 1);
  assert.equal(await readMetric(node, "tern_reputation_actions_total", 'change="paused"'), 1);

  // The paused sender's next message is held: not sent, not bounced. Another sender's goes.
  rcpts = 0; // the next recipient the host sees is not a 4th
  const tried = sink.finished.length;
  await send("letters@news.example", "held@remote.test");
  const held = await node.waitForEvent("recipient.deferred", { recipient: "held@remote.test" }, 10_000);
  assert.equal(held.requeued, "reputation-hold");
  assert.match(String(held.reply), /^4\.4\.5 not attempted: sender domain news\.example is paused until \S+ \(reputation threshold domain-bounces\)$/);
  await send("orders@shop.example", "other@remote.test");
  await node.waitForEvent("recipient.delivered", { recipient: "other@remote.test" }, 10_000);
  assert.deepEqual(sink.finished.slice(tried).map((mail) => mail.to[0]?.address), ["other@remote.test"], "only the other sender's message reached the host");

  // The pause ends: the held message goes, from the (still slowed) pool address.
  const resumed = await node.waitForEvent("reputation.resumed", { key: "news.example" }, PAUSE_MS + 5_000);
  assert.equal(resumed.rule, "domain-bounces");
  // Due once the pause ends, spread over at most what was left of it when it was held.
  await node.waitForEvent("recipient.delivered", { recipient: "held@remote.test" }, PAUSE_MS + 5_000);
  assert.equal(sink.finished.at(-1)!.client.address, SOURCE);
  assert.equal(node.events("recipient.failed").length, 5, "nothing held was bounced");
  assert.equal(await readMetric(node, "tern_reputation_held", 'dimension="sender_domain"'), 0);

  // Every change is an event on the stream, under the reserved tenant `cluster`.
  const nc = await connect({ servers: ["nats://127.0.0.1:4222"] });
  try {
    const events = await eventually(async () => {
      const seen: ReputationActionEvent[] = [];
      for await (const { event } of followStreamEvents(nc, { cluster, tenant: "cluster", type: "reputation-action", start: "first", timeoutMs: 3_000 })) {
        if (event.type === "reputation-action") seen.push(event);
      }
      return seen.length >= 3 ? seen : undefined;
    }, 10_000, "three reputation-action events");
    assert.deepEqual(events.map((e) => [e.change, e.dimension, e.key, e.rule]).sort(), [
      ["paused", "sender_domain", "news.example", "domain-bounces"],
      ["resumed", "sender_domain", "news.example", "domain-bounces"],
      ["slowed", "source", SOURCE, "ip-bounces"],
    ]);
    const pause = events.find((e) => e.change === "paused")!;
    assert.equal(pause.pausedUntil! - pause.time, PAUSE_MS);
    assert.equal(pause.node, "a");
    assert.match(renderEvent(1, pause), /reputation-action tenant=cluster paused sender-domain=news\.example rule=domain-bounces bounce-rate=25% limit=20% messages=20 window=1h paused-until=\S+$/);
    assert.match(renderEvent(2, events.find((e) => e.change === "slowed")!), /slowed source=127\.0\.0\.2 rule=ip-bounces bounce-rate=25% limit=20% messages=20 window=1h level=2$/);
  } finally {
    await nc.close();
  }
});
