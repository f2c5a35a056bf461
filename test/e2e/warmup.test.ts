// IP warm-up (issue 16): one node with cold loopback source addresses on day 1 of a curve
// of [3, 6] messages a day per destination provider. The receiving host (a scripted SMTP
// server on 127.0.0.1) records the address each message came from:
// - pool "warming" (overflow warm): the cold address sends exactly 3 to the provider, the
//   rest leaves from the pool's warm address;
// - pool "held" (overflow wait): 3 per provider ("remote" by its MX hosts, and "other"
//   for a domain of no provider), the rest waits in the queue for the next UTC day;
// - `tern pools` and /metrics show caps and usage; both survive a restart, and a retry
//   after the restart still sends nothing beyond the caps.
// (A run that crosses midnight UTC would see the caps start again: the day is the node's.)
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import nodemailer from "nodemailer";
import { poolsCommand } from "../../nodes/pools-command.ts";
import { queueCommand } from "../../nodes/queue-command.ts";
import type { PoolsReply } from "../../protocol/pools.ts";
import { startDnsmasq, type RunningDnsmasq } from "../support/dnsmasq.ts";
import { startScriptedSmtp, type ScriptedServer } from "../support/scripted-smtp.ts";
import { eventually, makeDataDir, readMetric, removeDataDir, startTernNode, uniqueCluster, type TernNode } from "../support/tern-node.ts";

const cluster = uniqueCluster();
let dns: RunningDnsmasq;
let sink: ScriptedServer;
let node: TernNode;
let dataDir: string;
let config: Record<string, unknown> & { dataDir: string };

const today = new Date().toISOString().slice(0, 10);
const COLD = "127.0.0.2";
const WARM = "127.0.0.3";
const HELD = "127.0.0.4";

before(async () => {
  sink = await startScriptedSmtp({});
  dns = await startDnsmasq({
    mx: [
      { domain: "remote.test", host: "mx.remote.test", preference: 10 },
      { domain: "other.test", host: "mx.other.test", preference: 10 },
    ],
    hosts: [
      { name: "mx.remote.test", address: "127.0.0.1" },
      { name: "mx.other.test", address: "127.0.0.1" },
    ],
  });
  dataDir = await makeDataDir();
  config = {
    nodeId: "a",
    cluster,
    dataDir,
    localDomains: ["example.test"],
    users: [{ address: "postmaster@example.test", password: "unused" }],
    trustedNetworks: ["127.0.0.0/8"],
    dns: { servers: [`${dns.host}:${dns.port}`], timeoutMs: 1000, tries: 2, allowedTargetNetworks: ["127.0.0.0/8"] },
    delivery: {
      remotePort: sink.port,
      // A retry an hour away: anything sent again in these tests was asked for.
      retryBaseMs: 3_600_000,
      retryMaxMs: 3_600_000,
      pollMs: 50,
      providers: { remote: [".remote.test"] },
      warmupSchedules: { test: { daily: [3, 6] } },
      pools: {
        // The cold address takes nearly every pick by weight, so it reaches its cap.
        warming: {
          addresses: [
            { address: COLD, ehlo: "cold.tern.test", weight: 1000, warmup: { schedule: "test", since: today } },
            { address: WARM, ehlo: "warm.tern.test" },
          ],
          overflow: "warm",
        },
        held: { addresses: [{ address: HELD, ehlo: "held.tern.test", warmup: { schedule: "test", since: today } }], overflow: "wait" },
      },
      poolRules: [
        { senderDomain: "warming.example", pool: "warming" },
        { senderDomain: "held.example", pool: "held" },
      ],
    },
  };
  node = await startTernNode(config);
});

after(async () => {
  await node?.kill("SIGTERM");
  await Promise.all([sink?.close(), dns?.stop(), removeDataDir(dataDir)]);
});

const send = async (from: string, to: string) => {
  const transport = nodemailer.createTransport({ host: "127.0.0.1", port: node.ports.smtp, secure: false, ignoreTLS: true });
  await transport.sendMail({ envelope: { from, to: [to] }, raw: `From: ${from}\r\nTo: ${to}\r\nSubject: warm-up\r\n\r\nbody\r\n` });
  transport.close();
};

/** Runs a CLI command in this process against node a. */
const cli = async (command: typeof poolsCommand, ...args: string[]) => {
  let stdout = "";
  let stderr = "";
  const code = await command(["--config", join(dataDir, "config-a.json"), "--node", "a", ...args], { out: (t) => (stdout += `${t}\n`), err: (t) => (stderr += `${t}\n`) });
  return { code, stdout, stderr };
};

const pools = async (): Promise<PoolsReply> => {
  const { code, stdout, stderr } = await cli(poolsCommand, "--json");
  assert.equal(code, 0, stderr);
  return JSON.parse(stdout) as PoolsReply;
};

const usageOf = (reply: PoolsReply, address: string) =>
  Object.fromEntries(reply.pools.flatMap((p) => p.addresses).find((a) => a.address === address)!.providers.map((p) => [p.provider, [p.day.used, p.day.cap]]));

const from = (address: string, domain?: string) => sink.accepted.filter((mail) => mail.client.address === address && (domain === undefined || mail.to[0]!.address.endsWith(`@${domain}`))).length;

const waitingEntries = async () => {
  const { code, stdout, stderr } = await cli(queueCommand, "--json", "list");
  assert.equal(code, 0, stderr);
  return (JSON.parse(stdout) as { entries: Array<{ recipients: string[]; reason: string; nextAttemptAt: number; attempts: number }> }).entries;
};

test("overflow warm: the cold address sends exactly its cap to the provider, the rest leaves from the warm address", async () => {
  await Promise.all(Array.from({ length: 8 }, (_, n) => send("news@warming.example", `w${n}@remote.test`)));
  await eventually(() => from(COLD) + from(WARM) === 8 || undefined, 20_000, "8 messages at the receiving host");
  assert.equal(from(COLD), 3, "the cold address's cap for provider remote");
  assert.equal(from(WARM), 5);
  assert.ok(sink.accepted.filter((m) => m.client.address === COLD).every((m) => m.client.ehlo === "cold.tern.test"));
});

test("overflow wait: 3 per provider leave from the cold address, the rest waits in the queue for the next UTC day", async () => {
  await Promise.all([
    ...Array.from({ length: 5 }, (_, n) => send("news@held.example", `h${n}@remote.test`)),
    ...Array.from({ length: 4 }, (_, n) => send("news@held.example", `o${n}@other.test`)),
  ]);
  const waiting = await eventually(async () => {
    const entries = (await waitingEntries()).filter((e) => e.reason === "warmup-cap");
    return entries.length === 3 && from(HELD) === 6 ? entries : undefined;
  }, 20_000, "6 sent and 3 waiting for the warm-up cap");
  assert.equal(from(HELD, "remote.test"), 3);
  assert.equal(from(HELD, "other.test"), 3, "domains of no provider share the cap of provider other");
  const midnight = Date.parse(`${today}T00:00:00Z`) + 86_400_000;
  for (const entry of waiting) {
    assert.ok(entry.nextAttemptAt >= midnight && entry.nextAttemptAt <= midnight + 2 * 3_600_000, `due early tomorrow: ${new Date(entry.nextAttemptAt).toISOString()}`);
    assert.equal(entry.attempts, 0, "waiting for the cap is no delivery attempt");
  }
  assert.deepEqual(waiting.map((e) => e.recipients[0]!.split("@")[1]).sort(), ["other.test", "remote.test", "remote.test"]);
});

test("tern pools and /metrics show each cold address's caps and usage per provider", async () => {
  const reply = await pools();
  assert.deepEqual(reply.pools.map((p) => [p.pool, p.overflow]), [["warming", "warm"], ["held", "wait"]]);
  const cold = reply.pools[0]!.addresses[0]!;
  assert.deepEqual(cold.warmup, { schedule: "test", since: today, day: 1, days: 2, warm: false, dailyCap: 3 });
  assert.deepEqual(usageOf(reply, COLD), { remote: [3, 3] });
  assert.deepEqual(usageOf(reply, HELD), { remote: [3, 3], other: [3, 3] });
  assert.equal(reply.pools[0]!.addresses[1]!.warmup, undefined, "the warm address has no warm-up");

  const text = (await cli(poolsCommand)).stdout;
  assert.match(text, /pool held \(at a warm-up cap: wait\)/);
  assert.match(text, /127\.0\.0\.4 held\.tern\.test weight 1: warming up, day 1 of 2 \(schedule test since \d{4}-\d{2}-\d{2}\), caps per provider 3 a day/);
  assert.match(text, /other: today 3 of 3, this hour 3\n/);
  assert.match(text, /127\.0\.0\.3 warm\.tern\.test weight 1: warm\n/);

  assert.equal(await readMetric(node, "tern_warmup_used", `source="${HELD}",provider="remote",window="day"`), 3);
  assert.equal(await readMetric(node, "tern_warmup_cap", `source="${HELD}",provider="gmail",window="day"`), 3);
  assert.equal(await readMetric(node, "tern_warmup_used", `source="${HELD}",provider="gmail",window="day"`), 0);
});

test("usage survives a restart: a retry of the waiting mail sends nothing more, and new mail of the warming pool leaves from the warm address", async () => {
  await node.kill("SIGTERM");
  node = await startTernNode(config);
  assert.deepEqual(usageOf(await pools(), HELD), { remote: [3, 3], other: [3, 3] });

  const retried = await cli(queueCommand, "retry");
  assert.equal(retried.code, 0, retried.stderr);
  await eventually(() => node.events("recipient.deferred").length >= 3 || undefined, 20_000, "the three retried entries deferred again");
  assert.equal(from(HELD), 6, "nothing beyond the caps after the restart");
  assert.deepEqual((await waitingEntries()).map((e) => e.reason), ["warmup-cap", "warmup-cap", "warmup-cap"]);

  await send("news@warming.example", "after@remote.test");
  await eventually(() => sink.accepted.find((m) => m.to[0]!.address === "after@remote.test"), 20_000, "the message after the restart");
  assert.equal(sink.accepted.find((m) => m.to[0]!.address === "after@remote.test")!.client.address, WARM);
  assert.equal(from(COLD), 3);
});
