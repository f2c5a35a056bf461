// Automatic back-off (issue 16) on a running node: the receiving host (a scripted SMTP
// server) answers `421 4.7.28 … unusual rate`, Gmail's reply for an IP that sends too
// fast. The node pauses that site for its source address: later mail is held (not sent,
// not bounced), the change is a log line, an event on the stream and a metric, and
// `tern queue sites` says why. After the pause delivery resumes, slowly, and a quiet
// period later the site is back to normal. Small config values keep it to seconds.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { connect } from "@nats-io/transport-node";
import nodemailer from "nodemailer";
import { followStreamEvents } from "../../cluster/events-client.ts";
import { renderEvent } from "../../nodes/events-command.ts";
import { queueCommand } from "../../nodes/queue-command.ts";
import type { SiteBackoffEvent } from "../../protocol/events.ts";
import { startDnsmasq, type RunningDnsmasq } from "../support/dnsmasq.ts";
import { startScriptedSmtp, type ScriptedServer } from "../support/scripted-smtp.ts";
import { eventually, makeDataDir, projectRoot, readMetric, removeDataDir, startTernNode, uniqueCluster, type TernNode, ternCli } from "../support/tern-node.ts";

const UNUSUAL_RATE = "421 4.7.28 [127.0.0.1] Our system has detected an unusual rate of unsolicited mail originating from your IP address.";
const PAUSE_MS = 4_000;
const RECOVERY_MS = 2_000;

const cluster = uniqueCluster();
let dns: RunningDnsmasq;
let mx: ScriptedServer;
let node: TernNode;
let dataDir: string;
let throttling = true;

before(async () => {
  mx = await startScriptedSmtp({ mail: () => (throttling ? UNUSUAL_RATE : undefined) });
  dns = await startDnsmasq({ mx: [{ domain: "remote.test", host: "mx.remote.test", preference: 10 }], hosts: [{ name: "mx.remote.test", address: "127.0.0.1" }] });
  dataDir = await makeDataDir();
  // The starter rule pauses for 15 minutes on 4.7.28; the rules file shortens it for the test.
  const rules = join(dataDir, "throttle-rules.json");
  await writeFile(rules, JSON.stringify([{ name: "gmail-unusual-rate", pauseMs: PAUSE_MS }]));
  node = await startTernNode({
    nodeId: "a",
    cluster,
    dataDir,
    localDomains: ["example.test"],
    users: [{ address: "postmaster@example.test", password: "pw" }],
    dns: { servers: [`${dns.host}:${dns.port}`], timeoutMs: 1000, tries: 2, allowedTargetNetworks: ["127.0.0.0/8"] },
    delivery: { remotePort: mx.port, retryBaseMs: 200, retryMaxMs: 1_000, pollMs: 50, holdMs: 100, throttleRulesFile: rules, throttleRecoveryMs: RECOVERY_MS, throttleGapMs: 100 },
  });
});

after(async () => {
  await node?.kill("SIGTERM");
  await Promise.all([mx?.close(), dns?.stop(), removeDataDir(dataDir)]);
});

const send = async (to: string, subject: string) => {
  const transport = nodemailer.createTransport({ host: "127.0.0.1", port: node.ports.smtp, secure: false, ignoreTLS: true });
  await transport.sendMail({ envelope: { from: "news@example.test", to: [to] }, raw: `From: news@example.test\r\nSubject: ${subject}\r\n\r\nbody\r\n` });
  transport.close();
};

/** `tern queue …` in this process, asking node a. */
const queue = async (...args: string[]) => {
  let stdout = "";
  const code = await queueCommand(["--config", join(dataDir, "config-a.json"), "--node", "a", ...args], { out: (t) => (stdout += `${t}\n`), err: (t) => (stdout += `${t}\n`) });
  return { code, stdout };
};

const level = () => readMetric(node, "tern_site_backoff_level", 'site="mx.remote.test"');
const mails = () => mx.commands.filter((c) => c.startsWith("MAIL")).length;

test("421 4.7.28 pauses the site: later mail is held unsent and unbounced, tern queue says why; then delivery resumes and the site recovers", async () => {
  await send("first@remote.test", "first");
  const paused = await node.waitForEvent("site.backoff.paused", {}, 15_000);
  assert.equal(paused.site, "mx.remote.test");
  assert.equal(paused.rule, "gmail-unusual-rate");
  assert.equal(paused.backoffLevel, 1);
  assert.match(String(paused.reply), /^421 4\.7\.28 /);
  assert.equal(paused.level, "warn");
  assert.equal(await level(), 1);
  assert.equal(await readMetric(node, "tern_site_backoff_paused", 'site="mx.remote.test"'), 1);
  assert.equal(await readMetric(node, "tern_throttle_replies_total", 'rule="gmail-unusual-rate"'), 1);

  // The host would take mail now, but the site is paused: the next message is not even tried.
  throttling = false;
  const tried = mails();
  await send("second@remote.test", "second");
  const held = await node.waitForEvent("recipient.deferred", { recipient: "second@remote.test" }, 10_000);
  assert.equal(held.requeued, "backed-off");
  assert.equal(held.category, "rate-limited");
  assert.match(String(held.reply), /not attempted: the site is paused for this source address until .*gmail-unusual-rate.*421 4\.7\.28/);
  assert.equal(mails(), tried, "nothing reached the host");
  assert.equal(mx.accepted.length, 0);

  const sites = await queue("sites");
  assert.equal(sites.code, 0);
  assert.match(sites.stdout, /node a: 1 site backed off\n {2}mx\.remote\.test@default paused until \S+, level 1 \(2 connections, 100 ms apart\) since \S+, next step \S+; rule gmail-unusual-rate: 421 4\.7\.28 /);
  const list = await queue("list", "--domain", "remote.test");
  assert.match(list.stdout, /to second@remote\.test .*reason=backed-off last=".*not attempted: the site is paused/);
  assert.match((await queue("shape")).stdout, /backed off: mx\.remote\.test@default paused until/);

  // The pause ends: both messages go, neither was bounced.
  await node.waitForEvent("site.backoff.resumed", {}, PAUSE_MS + 5_000);
  await eventually(() => (mx.accepted.length === 2 ? true : undefined), 10_000, "both messages delivered after the pause");
  assert.deepEqual(mx.accepted.map((mail) => mail.to[0]!.address).sort(), ["first@remote.test", "second@remote.test"]);
  assert.equal(node.events("recipient.bounced").length, 0);

  // A quiet period later the site is back to normal.
  const recovered = await node.waitForEvent("site.backoff.recovered", {}, RECOVERY_MS + 5_000);
  assert.equal(recovered.backoffLevel, 0);
  assert.equal(await level(), 0);
  assert.match((await queue("sites")).stdout, /node a: no site backed off/);

  // Every change is an event on the stream, under the reserved tenant `cluster`.
  const nc = await connect({ servers: ["nats://127.0.0.1:4222"] });
  try {
    const events = await eventually(async () => {
      const seen: SiteBackoffEvent[] = [];
      for await (const { event } of followStreamEvents(nc, { cluster, tenant: "cluster", type: "site-backoff", start: "first", timeoutMs: 3_000 })) {
        if (event.type === "site-backoff") seen.push(event);
      }
      return seen.length >= 3 ? seen : undefined;
    }, 10_000, "three site-backoff events");
    assert.deepEqual(events.map((e) => [e.change, e.level, e.site, e.source]), [
      ["paused", 1, "mx.remote.test", undefined],
      ["resumed", 1, "mx.remote.test", undefined],
      ["recovered", 0, "mx.remote.test", undefined],
    ]);
    assert.equal(events[0]!.rule, "gmail-unusual-rate");
    assert.equal(events[0]!.pausedUntil! - events[0]!.time, PAUSE_MS);
    assert.equal(events[0]!.node, "a");
    // As `tern events --type site-backoff` prints it.
    assert.match(renderEvent(1, events[0]!), /site-backoff tenant=cluster paused site=mx\.remote\.test level=1 \(was 0\) connections=2 gap=100ms paused-until=\S+ rule=gmail-unusual-rate reply="421 4\.7\.28 /);
  } finally {
    await nc.close();
  }
});

test("a bad throttle rules file stops the node at start, naming the rule and field (exit 78)", async () => {
  const dir = await makeDataDir();
  try {
    const rules = join(dir, "rules.json");
    await writeFile(rules, JSON.stringify([{ name: "acme", match: "slow", action: "pause", pauseMs: -1 }]));
    const config = join(dir, "config.json");
    await writeFile(config, JSON.stringify({ dataDir: dir, cluster: uniqueCluster(), nats: { servers: ["nats://127.0.0.1:4222"], embedded: false }, listen: { host: "127.0.0.1", smtp: 0, smtps: 0, pop3: 0, imap: 0, imaps: 0, http: 0 }, delivery: { throttleRulesFile: rules } }));
    const result = await new Promise<{ code: number | null; stderr: string }>((resolve) => {
      const child = spawn(process.execPath, [...ternCli, "node", "--config", config], { cwd: projectRoot, stdio: ["ignore", "ignore", "pipe"] });
      let stderr = "";
      child.stderr.on("data", (c: Buffer) => (stderr += c.toString()));
      child.once("exit", (code) => resolve({ code, stderr }));
    });
    assert.equal(result.code, 78, result.stderr);
    assert.match(result.stderr, /delivery\.throttleRulesFile .*rules\.json: \[0\]\.pauseMs = -1: Expected a value greater than or equal to 1/);
  } finally {
    await removeDataDir(dir);
  }
});
