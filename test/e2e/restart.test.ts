// Invariants 1–3: mail that got 250 survives kill -9 of its node, and the restarted
// node resumes every queued entry once the next hop is back.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { findFreePort } from "../support/dnsmasq.ts";
import nodemailer from "nodemailer";
import { startDnsmasq, type RunningDnsmasq } from "../support/dnsmasq.ts";
import { startSink, type Sink } from "../support/sink.ts";
import { makeDataDir, readMetric, removeDataDir, startTernNode, uniqueCluster, eventually, type TernNode } from "../support/tern-node.ts";

let dns: RunningDnsmasq;
let dataDir: string;
let sink: Sink | undefined;
let node: TernNode | undefined;


before(async () => {
  dns = await startDnsmasq({
    mx: [{ domain: "later.test", host: "mx.later.test", preference: 10 }],
    hosts: [{ name: "mx.later.test", address: "127.0.0.1" }],
  });
  dataDir = await makeDataDir();
});

after(async () => {
  await node?.kill("SIGKILL");
  await sink?.close();
  await Promise.all([dns.stop(), removeDataDir(dataDir)]);
});

test("queued mail survives kill -9 and is delivered after restart when the sink comes up", async () => {
  const sinkPort = await findFreePort(); // nothing listens here yet: every attempt is refused
  const config = {
    nodeId: "crashy",
    cluster: uniqueCluster(),
    dataDir,
    localDomains: ["example.test"],
    users: [{ address: "alice@example.test", password: "pw" }],
    dns: { servers: [`${dns.host}:${dns.port}`], timeoutMs: 1000, tries: 2, allowedTargetNetworks: ["127.0.0.0/8"] },
    delivery: { remotePort: sinkPort, retryBaseMs: 300, retryMaxMs: 600, pollMs: 50, connectTimeoutMs: 1000 },
  };
  node = await startTernNode(config);

  const transport = nodemailer.createTransport({ host: "127.0.0.1", port: node.ports.smtp, secure: false, ignoreTLS: true, pool: true, maxConnections: 4 });
  const count = 40;
  const ids = await Promise.all(
    Array.from({ length: count }, async (_, n) => {
      const info = await transport.sendMail({
        envelope: { from: "a@example.test", to: [`r${n}@later.test`] },
        raw: `Subject: survivor ${n}\r\n\r\nbody ${n}\r\n`,
      });
      return /queued as ([0-9A-Z]+)/.exec(info.response)![1]!;
    }),
  );
  transport.close();
  assert.equal(new Set(ids).size, count);
  await node.waitForEvent("recipient.deferred"); // the sink is down: attempts are being refused

  await node.kill("SIGKILL");
  node = await startTernNode(config);
  const started = node.events("node.started")[0]!;
  assert.equal(started.queued, count, "every accepted message is still queued after kill -9");

  sink = await startSink(sinkPort);
  await eventually(() => (new Set(sink!.received.map((m) => m.to[0])).size === count ? true : undefined), 30_000, "all messages at the sink");
  const arrivedIds = new Set(sink.received.map((m) => /ESMTP id ([0-9A-Z]+)[;\r]/.exec(m.body.toString())?.[1]));
  for (const id of ids) assert.ok(arrivedIds.has(id), `message ${id} was lost`);
  await eventually(async () => ((await readMetric(node!, "tern_queue_depth")) === 0 ? true : undefined), 10_000, "an empty queue");
});
