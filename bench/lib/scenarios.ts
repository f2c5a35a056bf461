// The benchmark scenarios. Each starts its own environment, drives load, measures,
// and stops everything it started.
import { cpus } from "node:os";
import { findProcess, sampleUsage, type ProcessUsage, type UsageSampler } from "./procstats.ts";
import { percentiles, perSecond, type Percentiles } from "./stats.ts";
import { runLoad, type LoadResult, type SmtpLoadOptions } from "./load.ts";
import { runApiLoad } from "./api-load.ts";
import { connectTern } from "../../cluster/client.ts";
import { startSinkProcess, type SinkProcess } from "./sink.ts";
import { readMetric } from "../../nodes/launcher.ts";
import { BENCH_TENANT, LOCAL_DOMAIN, REMOTE_DOMAIN, localUser, startEnvironment, whileRunning, type Environment } from "./environment.ts";
import { Pop3Connection } from "./pop3-client.ts";
import { benchIdIn } from "./load.ts";
import { findFreePort } from "../../test/support/dnsmasq.ts";
import type { Peer, PeerOptions } from "./peers/peer.ts";
import type { ImapFigures } from "./imap-figures.ts";

export interface BenchOptions {
  readonly messages: number;
  readonly connections: number;
  readonly reuse: boolean;
  readonly size: { readonly min: number; readonly max: number };
  readonly rate: number | undefined;
  readonly durationSec: number;
  readonly drainTimeoutSec: number;
  readonly nodes: number;
  readonly recipients: number;
  readonly localUsers: number;
}

export interface RunReport {
  readonly label: string;
  /** What was measured, with its version where there is one ("Tern", "Postfix 3.7.11"). */
  readonly system?: string;
  readonly nodes: number;
  readonly attempted: number;
  readonly accepted: number;
  readonly refused: number;
  readonly connectionErrors: number;
  readonly injectSeconds: number;
  readonly acceptedPerSec: number;
  readonly acceptLatencyMs: Percentiles;
  readonly delivered?: number;
  readonly deliveredPerSec?: number;
  readonly endToEndMs?: Percentiles;
  readonly lost?: number;
  readonly duplicates?: number;
  readonly retrievedPerSec?: number;
  readonly drainPerSec?: number;
  readonly processes: ReadonlyArray<ProcessUsage>;
  readonly queueDepth: ReadonlyArray<readonly [number, number]>;
  readonly acceptTimes: ReadonlyArray<number>;
  readonly arrivalTimes: ReadonlyArray<number>;
  readonly startedAt: number;
  readonly notes: ReadonlyArray<string>;
  /** The imap scenario's figures (imap-figures.ts). */
  readonly imap?: ImapFigures;
  ratioToBaseline?: number;
}

const runId = () => `r${Date.now().toString(36)}${Math.floor(Math.random() * 1e6).toString(36)}`;

const loadOptions = (options: BenchOptions, targets: SmtpLoadOptions["targets"], domain: string, users: number): SmtpLoadOptions => ({
  targets,
  connections: options.connections,
  reuse: options.reuse,
  messages: options.messages,
  durationMs: options.durationSec * 1000,
  rate: options.rate,
  size: options.size,
  recipients: options.recipients,
  recipientDomain: domain,
  recipientUsers: users,
  runId: runId(),
});

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Samples the summed queue depth of all nodes until stopped, once a second: each sample is
 * a /metrics scrape (about 3 ms of the node's CPU, all gauges computed), counted in Tern's
 * CPU per message; four a second cost 1 % of it, where Prometheus scrapes every 15 s or more.
 */
const watchQueueDepth = (environment: Environment, origin: number) => {
  const points: Array<[number, number]> = [];
  let running = true;
  const loop = (async () => {
    while (running) {
      const depths = await Promise.all(environment.nodes.map((node) => readMetric(node, "tern_queue_depth").catch(() => 0)));
      points.push([(Date.now() - origin) / 1000, depths.reduce((a, b) => a + b, 0)]);
      await sleep(1000);
    }
  })();
  return async () => {
    running = false;
    await loop;
    return points;
  };
};

type AcceptedRecords = LoadResult["records"];

/** The accept-side figures, and the records that were accepted (what the run owes the sink). */
const acceptSide = (load: LoadResult) => {
  const accepted = load.records.filter((r) => r.outcome === "accepted");
  const lastAccept = accepted.reduce((latest, r) => Math.max(latest, r.acceptedAt ?? 0), load.startedAt);
  return [accepted, {
    accepted: accepted.length,
    attempted: load.records.length,
    refused: load.records.filter((r) => r.outcome === "refused").length,
    connectionErrors: load.connectionErrors,
    injectSeconds: (lastAccept - load.startedAt) / 1000,
    acceptedPerSec: perSecond(accepted.length, lastAccept - load.startedAt),
    acceptLatencyMs: percentiles(accepted.map((r) => r.acceptLatencyMs ?? 0)),
    acceptTimes: accepted.map((r) => r.acceptedAt ?? 0),
  }] as const;
};

/** Waits until every accepted id arrived (or the drain timeout), then accounts loss and duplicates. */
const arrivalSide = async (sink: SinkProcess, load: LoadResult, accepted: AcceptedRecords, timeoutSec: number) => {
  const deadline = Date.now() + timeoutSec * 1000;
  const missing = () => accepted.filter((r) => !sink.arrivals.has(r.id)).length;
  while (missing() > 0 && Date.now() < deadline) await sleep(100);
  await sink.flush();
  const arrivals = accepted.flatMap((r) => sink.arrivals.get(r.id)?.slice(0, 1) ?? []);
  const endToEnd = accepted.flatMap((r) => {
    const first = sink.arrivals.get(r.id)?.[0];
    return first !== undefined && r.acceptedAt !== undefined ? [first - r.acceptedAt] : [];
  });
  const lastArrival = arrivals.reduce((latest, t) => Math.max(latest, t), load.startedAt);
  return {
    delivered: arrivals.length,
    deliveredPerSec: perSecond(arrivals.length, lastArrival - load.startedAt),
    endToEndMs: percentiles(endToEnd),
    lost: missing(),
    // Over this load's messages only: a scenario may run several loads against one sink.
    duplicates: load.records.reduce((sum, r) => sum + Math.max(0, (sink.arrivals.get(r.id)?.length ?? 0) - 1), 0),
    arrivalTimes: arrivals,
  };
};

const smtpTargets = (environment: Environment) => environment.nodes.map((n) => ({ host: "127.0.0.1", port: n.ports.smtp }));

/** CPU/RSS sampling and the queue-depth series, from now on. */
const startMeasuring = (environment: Environment) => {
  const usage = trackAll(environment);
  const origin = Date.now();
  return { usage, origin, stopDepth: watchQueueDepth(environment, origin) };
};

const trackAll = (environment: Environment) => {
  const usage = sampleUsage();
  environment.nodes.forEach((node, i) => usage.track(`tern n${i}`, node.pid));
  usage.track("sink", environment.sink.pid, { role: "sink" });
  trackNats(usage);
  return usage;
};

/**
 * The machine's NATS server carries Tern's queue hand-offs and events, so its CPU is part of
 * what Tern costs; it is shared with anything else on the machine, so it is reported beside
 * the nodes' figure, not in it.
 */
const trackNats = (usage: UsageSampler) => {
  const nats = findProcess("nats-server");
  if (nats !== undefined) usage.track("nats-server", nats, { role: "shared" });
};

/** Relay end to end: SMTP in → spool → resolver → delivery → sink. Optionally kill -9 a node midway. */
export const relay = async (options: BenchOptions, label = "relay", crashMidway = false): Promise<RunReport> => {
  const environment = await startEnvironment({ nodes: options.nodes, sink: { record: true }, localUsers: 1 });
  const notes: string[] = [];
  try {
    const { usage, origin, stopDepth } = startMeasuring(environment);
    const loading = runLoad(loadOptions(options, smtpTargets(environment), REMOTE_DOMAIN, 1_000));
    if (crashMidway) {
      await sleep((options.durationSec * 1000) / 3);
      const restarted = await environment.crashAndRestart(0);
      usage.track("tern n0", restarted.pid);
      notes.push(`node n0 killed with SIGKILL and restarted at ${((Date.now() - origin) / 1000).toFixed(1)} s; it resumed ${restarted.events("node.started")[0]?.queued} queued entries`);
    }
    const load = await loading;
    const [acceptedRecords, accept] = acceptSide(load);
    const arrival = await arrivalSide(environment.sink, load, acceptedRecords, options.drainTimeoutSec);
    return { label, nodes: options.nodes, ...accept, ...arrival, processes: usage.stop(), queueDepth: await stopDepth(), startedAt: origin, notes: [...notes, ...environment.unexpectedExits()] };
  } finally {
    await environment.stop();
  }
};

/**
 * SMTP injection, then NATS API submits, into the same single node in one run, each its own
 * row: the same number of messages of the same size, relayed to the sink; every accepted
 * message must arrive. The SMTP phase drains before the API phase starts, so each phase's
 * CPU and latency are its own (the API phase runs on a node the SMTP phase warmed up).
 */
export const submit = async (options: BenchOptions): Promise<RunReport[]> => {
  const environment = await startEnvironment({ nodes: 1, sink: { record: true }, localUsers: 1 });
  const client = await connectTern({ cluster: environment.cluster, tenant: BENCH_TENANT });
  try {
    const phase = async (label: string, load: () => Promise<LoadResult>, note: string): Promise<RunReport> => {
      const { usage, origin, stopDepth } = startMeasuring(environment);
      const loaded = await load();
      const [acceptedRecords, accept] = acceptSide(loaded);
      const arrival = await arrivalSide(environment.sink, loaded, acceptedRecords, options.drainTimeoutSec);
      return { label, nodes: 1, ...accept, ...arrival, processes: usage.stop(), queueDepth: await stopDepth(), startedAt: origin, notes: [note, ...environment.unexpectedExits()] };
    };
    const smtp = await phase(
      "submit smtp",
      () => runLoad(loadOptions(options, smtpTargets(environment), REMOTE_DOMAIN, 1_000)),
      `${options.connections} SMTP connections (${options.reuse ? "reused" : "one per message"}); latency from the final "." to the 250`,
    );
    const nats = await phase(
      "submit nats",
      () => runApiLoad(loadOptions(options, [], REMOTE_DOMAIN, 1_000), client),
      `${options.connections} concurrent submitRaw requests on one NATS connection; latency from the request (body included) to the reply`,
    );
    return [smtp, nats];
  } finally {
    await client.close();
    await environment.stop();
  }
};

/** Accept only: the next hop is down, so the node only receives, commits and queues. */
export const acceptOnly = async (options: BenchOptions): Promise<RunReport> => {
  const environment = await startEnvironment({
    nodes: options.nodes,
    sink: { record: true, startClosed: true },
    localUsers: 1,
    delivery: { retryBaseMs: 3_600_000, retryMaxMs: 3_600_000 },
  });
  try {
    const { usage, origin, stopDepth } = startMeasuring(environment);
    const load = await runLoad(loadOptions(options, smtpTargets(environment), REMOTE_DOMAIN, 1_000));
    const [, accept] = acceptSide(load);
    const queued = (await Promise.all(environment.nodes.map((node) => readMetric(node, "tern_queue_depth")))).reduce((a, b) => a + b, 0);
    return {
      label: "accept",
      nodes: options.nodes,
      ...accept,
      lost: Math.max(0, accept.accepted - queued),
      processes: usage.stop(),
      queueDepth: await stopDepth(),
      arrivalTimes: [],
      startedAt: origin,
      notes: [`${queued} entries queued after the run for ${accept.accepted} accepted messages`, ...environment.unexpectedExits()],
    };
  } finally {
    await environment.stop();
  }
};

/** A backlog builds while the next hop is down, then drains when it comes up. */
export const backlog = async (options: BenchOptions): Promise<RunReport> => {
  const environment = await startEnvironment({
    nodes: options.nodes,
    sink: { record: true, startClosed: true, port: await findFreePort() },
    localUsers: 1,
    delivery: { retryBaseMs: 500, retryMaxMs: 1000 },
  });
  try {
    const { usage, origin, stopDepth } = startMeasuring(environment);
    const load = await runLoad(loadOptions(options, smtpTargets(environment), REMOTE_DOMAIN, 1_000));
    const [acceptedRecords, accept] = acceptSide(load);
    const opened = Date.now();
    environment.sink.open();
    const arrival = await arrivalSide(environment.sink, load, acceptedRecords, options.drainTimeoutSec);
    const lastArrival = arrival.arrivalTimes.reduce((latest, t) => Math.max(latest, t), opened);
    return {
      label: "backlog",
      nodes: options.nodes,
      ...accept,
      ...arrival,
      drainPerSec: perSecond(arrival.delivered, lastArrival - opened),
      processes: usage.stop(),
      queueDepth: await stopDepth(),
      startedAt: origin,
      notes: [`sink opened at ${((opened - origin) / 1000).toFixed(1)} s with ${accept.accepted} messages queued`, ...environment.unexpectedExits()],
    };
  } finally {
    await environment.stop();
  }
};

/** Local delivery into mailboxes, then every mailbox read back over POP3 (from node 0). */
export const local = async (options: BenchOptions): Promise<RunReport> => {
  const environment = await startEnvironment({ nodes: options.nodes, sink: { record: false }, localUsers: options.localUsers });
  try {
    const { usage, origin, stopDepth } = startMeasuring(environment);
    const load = await runLoad(loadOptions(options, smtpTargets(environment), LOCAL_DOMAIN, options.localUsers));
    const [acceptedRecords, accept] = acceptSide(load);
    const expected = accept.accepted * options.recipients;
    const deadline = Date.now() + options.drainTimeoutSec * 1000;
    const delivered = async () =>
      (await Promise.all(environment.nodes.map((node) => readMetric(node, "tern_recipients_delivered_total", 'route="local"')))).reduce((a, b) => a + b, 0);
    while ((await delivered()) < expected && Date.now() < deadline) await sleep(100);
    const storedAt = Date.now();

    const found = new Map<string, number>();
    const retrievalStart = Date.now();
    let retrieved = 0;
    for (let u = 0; u < options.localUsers; u++) {
      const user = localUser(u);
      const pop = await Pop3Connection.open("127.0.0.1", environment.nodes[0]!.ports.pop3, user.address, user.password);
      const count = await pop.count();
      for (let n = 1; n <= count; n++) {
        const id = benchIdIn((await pop.retrieve(n)).toString("latin1"));
        retrieved++;
        if (id) found.set(id, (found.get(id) ?? 0) + 1);
      }
      await pop.quit();
    }
    const retrievalMs = Date.now() - retrievalStart;
    const lost = acceptedRecords.filter((r) => !found.has(r.id)).length;
    return {
      label: "local",
      nodes: options.nodes,
      ...accept,
      delivered: await delivered(),
      deliveredPerSec: perSecond(await delivered(), storedAt - load.startedAt),
      lost,
      duplicates: [...found.values()].reduce((sum, n) => sum + Math.max(0, n - options.recipients), 0),
      retrievedPerSec: perSecond(retrieved, retrievalMs),
      processes: usage.stop(),
      queueDepth: await stopDepth(),
      arrivalTimes: [],
      startedAt: origin,
      notes: [`${retrieved} messages retrieved over POP3 from node n0 in ${(retrievalMs / 1000).toFixed(2)} s`, ...environment.unexpectedExits()],
    };
  } finally {
    await environment.stop();
  }
};

/** The ceiling: a bare smtp-server that drains and answers 250, storing nothing. */
export const baseline = async (options: BenchOptions): Promise<RunReport> => {
  const sink = whileRunning(await startSinkProcess({ port: 0, record: false }));
  try {
    const usage = sampleUsage();
    usage.track("bare smtp-server", sink.pid);
    const origin = Date.now();
    const load = await runLoad(loadOptions(options, [{ host: "127.0.0.1", port: sink.port }], REMOTE_DOMAIN, 1_000));
    const [, accept] = acceptSide(load);
    return { label: "baseline", system: "bare smtp-server", nodes: 0, ...accept, processes: usage.stop(), queueDepth: [], arrivalTimes: [], startedAt: origin, notes: [] };
  } finally {
    await sink.stop();
  }
};

/** 1 → N nodes, the same load spread over their SMTP ports. */
export const scale = async (options: BenchOptions): Promise<RunReport[]> => {
  const reports: RunReport[] = [];
  for (let nodes = 1; nodes <= options.nodes; nodes++) {
    const report = await relay({ ...options, nodes }, `relay ×${nodes}`);
    const notes = [...report.notes, scalingNote(reports[0], report, nodes)];
    if (nodes > cpus().length) notes.push(`${nodes} nodes on ${cpus().length} cores: this shows overhead, not capacity`);
    reports.push({ ...report, notes });
  }
  return reports;
};

/** Delivered/s against N times the one-node rate, and node CPU per delivered message per node. */
const scalingNote = (single: RunReport | undefined, report: RunReport, nodes: number): string => {
  const rate = (r: RunReport) => r.deliveredPerSec ?? 0;
  const delivered = Math.max(1, report.delivered ?? 0);
  const perNode = report.processes
    .filter((p) => p.name.startsWith("tern "))
    .map((p) => `${p.name.slice(5)} ${((p.cpuSeconds * 1000) / delivered).toFixed(2)} ms`)
    .join(", ");
  const efficiency = single && rate(single) > 0 ? ` scaling efficiency ${((100 * rate(report)) / (nodes * rate(single))).toFixed(0)} % of ${nodes}× one node;` : "";
  return `${nodes} node(s):${efficiency} node CPU per delivered message: ${perNode}`;
};

/**
 * Another MTA relaying the same load to a sink of its own, measured like Tern's relay row:
 * every message answered 250 must arrive, and the CPU of the peer's whole process tree is
 * its cost.
 */
export const peerRelay = async (options: BenchOptions, start: (options: PeerOptions) => Promise<Peer>): Promise<RunReport> => {
  const sink = whileRunning(await startSinkProcess({ port: await findFreePort(), record: true }));
  let peer: Peer | undefined;
  try {
    peer = whileRunning(await start({ sinkPort: sink.port }));
    const usage = sampleUsage();
    usage.track(peer.name, peer.pid, { tree: true });
    usage.track("sink", sink.pid, { role: "sink" });
    const origin = Date.now();
    const load = await runLoad(loadOptions(options, [{ host: "127.0.0.1", port: peer.port }], REMOTE_DOMAIN, 1_000));
    const [acceptedRecords, accept] = acceptSide(load);
    const arrival = await arrivalSide(sink, load, acceptedRecords, options.drainTimeoutSec);
    const notes = [peer.setup];
    if (arrival.lost > 0) notes.push(`${arrival.lost} accepted messages did not arrive; the end of ${peer.name}'s log:\n${await peer.logTail()}`);
    return { label: peer.name, system: peer.version, nodes: 1, ...accept, ...arrival, processes: usage.stop(), queueDepth: [], startedAt: origin, notes };
  } finally {
    await peer?.stop();
    await sink.stop();
  }
};

/**
 * The sink alone under the same load generator, recording arrivals as it does behind a
 * relay: the most any relay row could deliver here. It stores nothing, so disk is not it.
 */
export const sinkCeiling = async (options: BenchOptions): Promise<RunReport> => {
  const sink = whileRunning(await startSinkProcess({ port: 0, record: true }));
  try {
    const usage = sampleUsage();
    usage.track("sink", sink.pid);
    const origin = Date.now();
    const load = await runLoad(loadOptions(options, [{ host: "127.0.0.1", port: sink.port }], REMOTE_DOMAIN, 1_000));
    const [acceptedRecords, accept] = acceptSide(load);
    const arrival = await arrivalSide(sink, load, acceptedRecords, 10);
    return { label: "sink", system: "bench sink", nodes: 0, ...accept, ...arrival, processes: usage.stop(), queueDepth: [], startedAt: origin, notes: [] };
  } finally {
    await sink.stop();
  }
};
