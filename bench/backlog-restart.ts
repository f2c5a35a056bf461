// The large-backlog figures: a node (re)started on a spool filled by bench/backlog-fill.ts.
// Measures start-up time, time to the first delivery, and the node's memory (RSS, and
// its private part: file-backed pages of LMDB's memory map count in RSS but are page
// cache) while it works through the queue, first as filled (due over the coming hour),
// then with every entry made due at once (`tern queue retry`).
//
//   npx tsx bench/backlog-fill.ts --data /tmp/backlog --messages 1000000
//   npx tsx bench/backlog-restart.ts --data /tmp/backlog [--drain 30]
//
// The data dir is used as is (and drained a little): fill it again for another run.
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { startDnsmasq, findFreePort } from "../test/support/dnsmasq.ts";
import { queueCommand } from "../nodes/queue-command.ts";
import { readMetric, startTernNode, uniqueCluster } from "../nodes/launcher.ts";
import { startSinkProcess } from "./lib/sink.ts";

const { values } = parseArgs({ options: { data: { type: "string" }, drain: { type: "string", default: "30" }, domain: { type: "string", default: "remote.bench" } } });
if (!values.data) throw new Error("--data DIR is required");
const drainMs = Number(values.drain) * 1000;

const memory = (pid: number) => {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const kib = (field: string) => Number(new RegExp(`${field}:\\s+(\\d+) kB`).exec(status)?.[1] ?? 0);
  return { rss: kib("VmRSS") / 1024, anon: kib("RssAnon") / 1024, file: kib("RssFile") / 1024 };
};

const sink = await startSinkProcess({ port: await findFreePort(), record: false });
const dns = await startDnsmasq({ mx: [{ domain: values.domain!, host: `mx.${values.domain}`, preference: 10 }], hosts: [{ name: `mx.${values.domain}`, address: "127.0.0.1" }] });
const spawnedAt = Date.now();
const node = await startTernNode({
  nodeId: "n0",
  cluster: uniqueCluster(),
  dataDir: values.data,
  dns: { servers: [`${dns.host}:${dns.port}`], timeoutMs: 1000, tries: 2, allowedTargetNetworks: ["127.0.0.0/8"] },
  delivery: { remotePort: sink.port, pollMs: 50, retryBaseMs: 1000, retryMaxMs: 2000, connectTimeoutMs: 2000 },
});
const startedMs = Date.now() - spawnedAt;
const queued = Number(node.events("node.started")[0]?.queued);
const peak = { rss: 0, anon: 0, file: 0 };
const sampler = setInterval(() => {
  const m = memory(node.pid);
  peak.rss = Math.max(peak.rss, m.rss);
  peak.anon = Math.max(peak.anon, m.anon);
  peak.file = Math.max(peak.file, m.file);
}, 200);

const delivered = () => readMetric(node, "tern_recipients_delivered_total");
await node.waitForEvent("recipient.delivered", {}, 60_000);
const firstDeliveryMs = Date.now() - spawnedAt;
await new Promise((resolve) => setTimeout(resolve, drainMs));
const asFilled = { delivered: await delivered(), memory: memory(node.pid) };

const shapeStarted = Date.now();
let shapeOut = "";
await queueCommand(["--config", `${values.data}/config-n0.json`, "--node", "n0", "--timeout", "600000", "shape", "--limit", "3"], { out: (t) => (shapeOut += t), err: (t) => (shapeOut += t) });
const shapeMs = Date.now() - shapeStarted;
console.error(shapeOut);

const retryStarted = Date.now();
let retryOut = "";
await queueCommand(["--config", `${values.data}/config-n0.json`, "--node", "n0", "--timeout", "600000", "retry", "--domain", values.domain!], { out: (t) => (retryOut += t), err: (t) => (retryOut += t) });
const retryMs = Date.now() - retryStarted;
const before = await delivered();
const drainStarted = Date.now();
await new Promise((resolve) => setTimeout(resolve, drainMs));
const allDue = { delivered: (await delivered()) - before, perSec: ((await delivered()) - before) / ((Date.now() - drainStarted) / 1000), memory: memory(node.pid) };

clearInterval(sampler);
const stopAt = Date.now();
await node.kill("SIGTERM");
const stopMs = Date.now() - stopAt;
await Promise.all([sink.stop(), dns.stop()]);

const mib = (n: number) => Math.round(n);
console.log(
  JSON.stringify(
    {
      queuedAtStart: queued,
      startMs: startedMs,
      firstDeliveryMs,
      asFilled: { delivered: asFilled.delivered, rssMiB: mib(asFilled.memory.rss), anonMiB: mib(asFilled.memory.anon) },
      shapeMs,
      retryAll: { ms: retryMs, reply: retryOut.trim() },
      allDue: { delivered: allDue.delivered, perSec: Math.round(allDue.perSec), rssMiB: mib(allDue.memory.rss), anonMiB: mib(allDue.memory.anon) },
      peak: { rssMiB: mib(peak.rss), anonMiB: mib(peak.anon), fileMiB: mib(peak.file) },
      gracefulStopMs: stopMs,
    },
    null,
    2,
  ),
);
