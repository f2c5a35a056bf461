// DATA streams into the spool: a 50 MB message does not grow the node's memory by
// anything like 50 MB. And kill -9 at random moments while clients send: every message
// that got 250 is still queued after the restart (and reaches the sink).
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import nodemailer from "nodemailer";
import { startDnsmasq, findFreePort, type RunningDnsmasq } from "../support/dnsmasq.ts";
import { startSink, type Sink } from "../support/sink.ts";
import { eventually, makeDataDir, removeDataDir, run, sleep, startTernNode, uniqueCluster, readMetric } from "../support/tern-node.ts";

let dns: RunningDnsmasq;
const cleanups: Array<() => Promise<unknown>> = [];

before(async () => {
  dns = await startDnsmasq({
    mx: [{ domain: "sink.test", host: "mx.sink.test", preference: 10 }],
    hosts: [{ name: "mx.sink.test", address: "127.0.0.1" }],
  });
});

after(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
  await dns.stop();
});

const anonymousMiB = (pid: number) => Number(/RssAnon:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))![1]) / 1024;

test("three 50 MB messages stream into the spool: the node's private memory stays bounded, not proportional", async () => {
  const dataDir = await makeDataDir();
  const node = await startTernNode({
    nodeId: "big",
    cluster: uniqueCluster(),
    dataDir,
    localDomains: ["example.test"],
    users: [{ address: "a@example.test", password: "x" }],
    limits: { maxMessageBytes: 60 * 1024 * 1024 },
    dns: { servers: ["127.0.0.1:9"], timeoutMs: 200, tries: 1 }, // no DNS: the message stays queued, unread
  });
  cleanups.push(() => node.kill("SIGKILL"), () => removeDataDir(dataDir));
  await sleep(500);
  // Private (anonymous) memory: LMDB's file pages are page cache, not the node's heap.
  const before = anonymousMiB(node.pid);
  let peak = before;
  const sampler = setInterval(() => (peak = Math.max(peak, anonymousMiB(node.pid))), 10);
  const sent = await run("python3", ["-c", `
import smtplib
line = b"y" * 998 + b"\\r\\n"
body = b"Subject: fifty megabytes\\r\\n\\r\\n" + line * 52429
for n in range(3):
    s = smtplib.SMTP("127.0.0.1", ${node.ports.smtp}, timeout=60)
    s.sendmail("x@y.test", ["r@far.example"], body)
    s.quit()
print("250")`]);
  clearInterval(sampler);
  assert.equal(sent.stdout.trim(), "250", sent.stderr);
  // Garbage chunks wait for the GC and the allocator keeps its high-water mark, so some
  // tens of MiB appear once; what matters is that 150 MiB of mail does not add 150 MiB.
  const growth = peak - before;
  assert.ok(growth < 64, `private memory grew by ${growth.toFixed(1)} MiB for 3 × 50 MiB of mail`);
  assert.ok((await readMetric(node, "tern_messages_accepted_bytes_total")) > 150 * 1024 * 1024);
  assert.equal(await readMetric(node, "tern_queue_depth"), 3);
});

test("kill -9 at random moments while clients send: every 250 survives and is delivered", async () => {
  const sinkPort = await findFreePort();
  const dataDir = await makeDataDir();
  const config = {
    nodeId: "crash",
    cluster: uniqueCluster(),
    dataDir,
    listen: { host: "127.0.0.1", smtp: await findFreePort(), smtps: 0, pop3: 0, http: 0 },
    localDomains: ["example.test"],
    users: [{ address: "a@example.test", password: "x" }],
    dns: { servers: [`${dns.host}:${dns.port}`], timeoutMs: 500, tries: 2, allowedTargetNetworks: ["127.0.0.0/8"] },
    delivery: { remotePort: sinkPort, pollMs: 50, retryBaseMs: 200, retryMaxMs: 500, connectTimeoutMs: 1000 },
  };
  let node = await startTernNode(config);
  cleanups.push(() => node.kill("SIGKILL"), () => removeDataDir(dataDir));

  const acknowledged = new Set<string>();
  let stop = false;
  const client = async (c: number) => {
    for (let n = 0; !stop; n++) {
      const transport = nodemailer.createTransport({ host: "127.0.0.1", port: config.listen.smtp, secure: false, ignoreTLS: true, connectionTimeout: 500 });
      const tag = `c${c}-m${n}`;
      try {
        await transport.sendMail({ envelope: { from: "a@example.test", to: [`${tag}@sink.test`] }, raw: `Subject: ${tag}\r\n\r\n${tag}\r\n` });
        acknowledged.add(tag);
      } catch {
        await sleep(50); // node down or killed mid-transaction: no 250, nothing owed
      }
      transport.close();
    }
  };
  const clients = [0, 1, 2, 3].map(client);
  for (let round = 0; round < 3; round++) {
    await sleep(300 + Math.random() * 700);
    await node.kill("SIGKILL");
    node = await startTernNode(config);
  }
  await sleep(300);
  stop = true;
  await Promise.all(clients);
  assert.ok(acknowledged.size > 20, `only ${acknowledged.size} messages acknowledged`);

  const sink: Sink = await startSink(sinkPort);
  cleanups.push(() => sink.close());
  const arrivedTags = () => new Set(sink.received.flatMap((m) => m.to.map((to) => to.split("@")[0]!)));
  await eventually(() => ([...acknowledged].every((tag) => arrivedTags().has(tag)) ? true : undefined), 30_000, "every acknowledged message");
  await eventually(async () => ((await readMetric(node, "tern_queue_depth")) === 0 ? true : undefined), 10_000, "an empty queue");
});
