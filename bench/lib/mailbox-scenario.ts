// The mailbox benchmark: --messages messages for ONE local user (one mailbox, one actor),
// injected over SMTP into every node, then read back with one POP3 client doing RETR 1..N.
// Two figures per node count: local delivery rate (SMTP in → mailbox commit on the owner)
// and POP3 RETR rate. With two or more nodes the mailbox lives on n0 and SMTP load is
// spread over all nodes (so part of it crosses NATS), and RETR is measured twice: from a
// node that is not the owner (every RETR crosses NATS) and from the owner itself.
import { randomBytes } from "node:crypto";
import { readMetric } from "../../nodes/launcher.ts";
import { LOCAL_DOMAIN, localUser, startEnvironment, type Environment } from "./environment.ts";
import { benchIdIn, runLoad, type LoadResult } from "./load.ts";
import { Pop3Connection } from "./pop3-client.ts";
import { sampleUsage } from "./procstats.ts";
import { percentiles, perSecond } from "./stats.ts";
import type { BenchOptions, RunReport } from "./scenarios.ts";

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

const deliveredLocally = async (environment: Environment) =>
  (await Promise.all(environment.nodes.map((node) => readMetric(node, "tern_recipients_delivered_total", 'route="local"')))).reduce((a, b) => a + b, 0);

/** RETRs every message of the one mailbox through `nodeIndex`; returns the rate and the bench ids seen. */
const retrieveAll = async (environment: Environment, nodeIndex: number) => {
  const user = localUser(0);
  const pop = await Pop3Connection.open("127.0.0.1", environment.nodes[nodeIndex]!.ports.pop3, user.address, user.password);
  const count = await pop.count();
  const found = new Map<string, number>();
  const started = Date.now();
  for (let n = 1; n <= count; n++) {
    const id = benchIdIn((await pop.retrieve(n)).toString("latin1"));
    if (id) found.set(id, (found.get(id) ?? 0) + 1);
  }
  const ms = Date.now() - started;
  await pop.quit();
  return { count, ms, perSec: perSecond(count, ms), found };
};

const oneRun = async (options: BenchOptions, nodes: number): Promise<RunReport> => {
  const environment = await startEnvironment({ nodes, sink: { record: false }, localUsers: 1 });
  try {
    const usage = sampleUsage();
    environment.nodes.forEach((node, i) => usage.track(`tern n${i}`, node.pid));
    const origin = Date.now();
    const load: LoadResult = await runLoad({
      targets: environment.nodes.map((node) => ({ host: "127.0.0.1", port: node.ports.smtp })),
      connections: options.connections,
      reuse: options.reuse,
      messages: options.messages,
      durationMs: options.durationSec * 1000,
      rate: options.rate,
      size: options.size,
      recipients: 1,
      recipientDomain: LOCAL_DOMAIN,
      recipientUsers: 1,
      runId: `m${randomBytes(4).toString("hex")}`,
    });
    const accepted = load.records.filter((r) => r.outcome === "accepted");
    const lastAccept = accepted.reduce((latest, r) => Math.max(latest, r.acceptedAt ?? 0), load.startedAt);
    const deadline = Date.now() + options.drainTimeoutSec * 1000;
    while ((await deliveredLocally(environment)) < accepted.length && Date.now() < deadline) await sleep(50);
    const storedAt = Date.now();
    const delivered = await deliveredLocally(environment);

    const remote = nodes > 1 ? await retrieveAll(environment, nodes - 1) : undefined;
    const owner = await retrieveAll(environment, 0);
    const lost = accepted.filter((r) => !owner.found.has(r.id)).length;
    const duplicates = [...owner.found.values()].reduce((sum, n) => sum + n - 1, 0);
    const notes = [
      `one mailbox of ${owner.count} messages; local delivery ${perSecond(delivered, storedAt - load.startedAt).toFixed(0)} msg/s (SMTP start → last mailbox commit)`,
      `POP3 RETR on the owner node n0: ${owner.perSec.toFixed(0)} msg/s (${owner.count} in ${(owner.ms / 1000).toFixed(2)} s, one client, one command at a time)`,
      ...(remote ? [`POP3 RETR on n${nodes - 1} (mailbox on n0, every RETR over NATS): ${remote.perSec.toFixed(0)} msg/s`] : []),
    ];
    return {
      label: `mailbox ×${nodes}`,
      nodes,
      attempted: load.records.length,
      accepted: accepted.length,
      refused: load.records.filter((r) => r.outcome === "refused").length,
      connectionErrors: load.connectionErrors,
      injectSeconds: (lastAccept - load.startedAt) / 1000,
      acceptedPerSec: perSecond(accepted.length, lastAccept - load.startedAt),
      acceptLatencyMs: percentiles(accepted.map((r) => r.acceptLatencyMs ?? 0)),
      delivered,
      deliveredPerSec: perSecond(delivered, storedAt - load.startedAt),
      lost,
      duplicates,
      retrievedPerSec: remote?.perSec ?? owner.perSec,
      processes: usage.stop(),
      queueDepth: [],
      acceptTimes: accepted.map((r) => r.acceptedAt ?? 0),
      arrivalTimes: [],
      startedAt: origin,
      notes,
    };
  } finally {
    await environment.stop();
  }
};

/** One run per node count, 1 … --nodes, each in a fresh environment. */
export const mailbox = async (options: BenchOptions): Promise<RunReport[]> => {
  const reports: RunReport[] = [];
  for (let nodes = 1; nodes <= options.nodes; nodes++) reports.push(await oneRun(options, nodes));
  return reports;
};
