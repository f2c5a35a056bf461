// Invariant 2 under fire: kill -9 while deliveries are in flight, restart on the same
// data: every message arrives, none is lost; a message whose 250 came back after the
// last commit is sent again (a duplicate), and duplicates are counted.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import nodemailer from "nodemailer";
import { startDnsmasq, type RunningDnsmasq } from "../support/dnsmasq.ts";
import { startScriptedSmtp, type ScriptedServer } from "../support/scripted-smtp.ts";
import { makeDataDir, readMetric, removeDataDir, startTernNode, uniqueCluster, eventually, type TernNode } from "../support/tern-node.ts";

let dns: RunningDnsmasq;
let sink: ScriptedServer;
let node: TernNode | undefined;
let dataDir: string;

before(async () => {
  sink = await startScriptedSmtp({ dataReplyDelayMs: 40 }); // a slow host: transactions are in flight when the node dies
  dns = await startDnsmasq({ mx: [{ domain: "slow.test", host: "mx.slow.test", preference: 10 }], hosts: [{ name: "mx.slow.test", address: "127.0.0.1" }] });
  dataDir = await makeDataDir();
});

after(async () => {
  await node?.kill("SIGKILL");
  await sink?.close();
  await Promise.all([dns?.stop(), removeDataDir(dataDir)]);
});

const idOf = (body: Buffer) => /ESMTP id ([0-9A-Z]+)[;\r]/.exec(body.toString("latin1"))?.[1];

test("kill -9 during delivery, then restart: every message is delivered, duplicates are counted", async (t) => {
  const config = {
    nodeId: "crash",
    cluster: uniqueCluster(),
    dataDir,
    localDomains: ["example.test"],
    users: [{ address: "alice@example.test", password: "pw" }],
    dns: { servers: [`${dns.host}:${dns.port}`], timeoutMs: 1000, tries: 2, allowedTargetNetworks: ["127.0.0.0/8"] },
    delivery: { remotePort: sink.port, connectionsPerSite: 2, retryBaseMs: 200, retryMaxMs: 400, pollMs: 50, connectTimeoutMs: 1000, holdMs: 100 },
  };
  node = await startTernNode(config);
  const transport = nodemailer.createTransport({ host: "127.0.0.1", port: node.ports.smtp, secure: false, ignoreTLS: true, pool: true, maxConnections: 4 });
  const count = 60;
  const ids = await Promise.all(
    Array.from({ length: count }, async (_, n) => {
      const info = await transport.sendMail({ envelope: { from: "a@example.test", to: [`r${n}@slow.test`] }, raw: `Subject: m${n}\r\n\r\nbody ${n}\r\n` });
      return /queued as ([0-9A-Z]+)/.exec(info.response)![1]!;
    }),
  );
  transport.close();

  await eventually(() => (sink.accepted.length >= 15 ? true : undefined), 20_000, "deliveries under way");
  await node.kill("SIGKILL");
  const atKill = sink.accepted.length;
  assert.ok(atKill < count, "killed before the queue drained");

  node = await startTernNode(config);
  await eventually(() => (new Set(sink.accepted.map((m) => idOf(m.body))).size >= count ? true : undefined), 30_000, "every message at the sink");
  const arrivals = new Map<string, number>();
  for (const mail of sink.accepted) arrivals.set(idOf(mail.body)!, (arrivals.get(idOf(mail.body)!) ?? 0) + 1);
  for (const id of ids) assert.ok(arrivals.has(id), `message ${id} was lost`);
  const duplicates = [...arrivals.values()].reduce((sum, n) => sum + n - 1, 0);
  t.diagnostic(`${atKill} delivered before kill -9, ${duplicates} duplicate deliveries after restart`);
  // Only transactions whose 250 raced the kill can come twice: at most the site's connections, plus a little.
  assert.ok(duplicates <= 4, `${duplicates} duplicates`);
  await eventually(async () => ((await readMetric(node!, "tern_queue_depth")) === 0 ? true : undefined), 10_000, "an empty queue");
});
