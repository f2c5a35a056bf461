// The IMAP benchmark: one mailbox of --messages messages, read over IMAP, on Tern and (with
// --peers dovecot) on Dovecot in the same run, one system after the other, each alone on
// the machine. Both get the same messages (same generator, run id and sizes): Tern over
// SMTP into its one node (the real delivery path), Dovecot by IMAP APPEND (its own
// delivery into the Maildir, index updated as it goes). Then, per system:
//   - ROUNDS rounds, each on a fresh connection: SELECT INBOX, FETCH 1:* (UID FLAGS
//     BODY.PEEK[HEADER]), FETCH 1:* BODY.PEEK[]; each timed from the command written to its
//     tagged OK by a raw client (imap-client.ts). The first round is the first read after
//     the fill; the table gives the median round.
//   - IDLE latency: one client SELECTs and IDLEs; IDLE_DELIVERIES messages are delivered one
//     after another (Tern: SMTP to the node on a reused connection; Dovecot: APPEND from a
//     second IMAP connection) and each is timed from the start of its delivery to the
//     untagged EXISTS the idling client hears.
//   - CPU of the server's processes (Tern's node; Dovecot's master and every process under
//     it) over the read rounds and over the IDLE deliveries.
import { randomBytes } from "node:crypto";
import { readMetric } from "../../nodes/launcher.ts";
import { LOCAL_DOMAIN, localUser, startEnvironment, whileRunning } from "./environment.ts";
import { BENCH_SENDER, benchIdIn, driveLoad, runLoad, type LoadOptions, type LoadResult } from "./load.ts";
import { ImapConnection } from "./imap-client.ts";
import { findProcess, sampleUsage, type ProcessUsage } from "./procstats.ts";
import { SmtpConnection } from "./smtp-client.ts";
import { percentiles, perSecond, round, type Percentiles } from "./stats.ts";
import { startDovecot, type ImapPeer, type ImapPeerOptions } from "./peers/dovecot.ts";
import type { BenchOptions, RunReport } from "./scenarios.ts";

const ROUNDS = 3;
const IDLE_DELIVERIES = 20;
const IDLE_TIMEOUT_MS = 10_000;
const FILL_APPEND_CONNECTIONS = 4;

export const imapPeers: Record<string, (options: ImapPeerOptions) => Promise<ImapPeer>> = { dovecot: startDovecot };

export type { ImapFigures, ReadRound } from "./imap-figures.ts";
import type { ImapFigures, ReadRound } from "./imap-figures.ts";

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

const median = (values: ReadonlyArray<number>) => [...values].sort((a, b) => a - b)[Math.floor((values.length - 1) / 2)] ?? 0;

/** The fill must store all --messages (the reads are measured on that mailbox), so --duration does not cut it short. */
const fillOptions = (options: BenchOptions, runId: string, connections = options.connections): LoadOptions => ({
  connections,
  messages: options.messages,
  durationMs: 3_600_000,
  rate: undefined,
  size: options.size,
  recipients: 1,
  recipientDomain: LOCAL_DOMAIN,
  recipientUsers: 1,
  runId,
});

/** Every bench Message-ID in a header FETCH's literals, with how often it was seen. */
const idsIn = (headers: Buffer) => {
  const found = new Map<string, number>();
  for (const block of headers.toString("latin1").split(/\r\n\r\n/)) {
    const id = benchIdIn(`\r\n${block}`);
    if (id) found.set(id, (found.get(id) ?? 0) + 1);
  }
  return found;
};

/** ROUNDS × (SELECT, header FETCH, full FETCH) on fresh connections; the first round's Message-IDs. */
const readRounds = async (port: number) => {
  const user = localUser(0);
  const rounds: ReadRound[] = [];
  let messages = 0;
  let found = new Map<string, number>();
  for (let r = 0; r < ROUNDS; r++) {
    const imap = await ImapConnection.open("127.0.0.1", port, user.address, user.password);
    const select = await imap.command("SELECT INBOX");
    if (r === 0) messages = imap.exists;
    const headers = await imap.collect("FETCH 1:* (UID FLAGS BODY.PEEK[HEADER])");
    if (r === 0) found = idsIn(headers.literals);
    const full = await imap.command("FETCH 1:* BODY.PEEK[]");
    if (headers.reply.fetches !== imap.exists || full.fetches !== imap.exists) {
      throw new Error(`round ${r + 1}: ${imap.exists} messages but ${headers.reply.fetches} header and ${full.fetches} full FETCH responses`);
    }
    rounds.push({ selectMs: select.ms, headerMs: headers.reply.ms, headerBytes: headers.reply.literalBytes, fullMs: full.ms, fullBytes: full.literalBytes });
    await imap.logout();
  }
  return { rounds, messages, found };
};

const idleMessage = (runId: string, n: number, size: number) => {
  const headers = `From: ${BENCH_SENDER}\r\nTo: ${localUser(0).address}\r\nSubject: idle ${n}\r\nMessage-ID: <${runId}.idle${n}@bench.tern>\r\nDate: ${new Date().toUTCString()}\r\n\r\n`;
  const line = "IDLE latency probe for the Tern IMAP benchmark, one line of filler text.\r\n";
  return Buffer.from(headers + line.repeat(Math.max(1, Math.floor((size - headers.length) / line.length))), "latin1");
};

/** IDLE on one connection; `deliver(n)` delivers message n some other way; times each to its EXISTS. */
const idleLatency = async (port: number, deliver: (n: number) => Promise<void>) => {
  const user = localUser(0);
  const imap = await ImapConnection.open("127.0.0.1", port, user.address, user.password);
  await imap.command("SELECT INBOX");
  const idle = await imap.idle();
  const samples: number[] = [];
  let missed = 0;
  for (let n = 0; n < IDLE_DELIVERIES; n++) {
    const heard = imap.existsAbove(imap.exists, IDLE_TIMEOUT_MS);
    const startedAt = performance.now();
    const delivered = deliver(n);
    const at = await heard;
    await delivered;
    if (at === undefined) missed++;
    else samples.push(at - startedAt);
    await sleep(100);
  }
  await idle.done();
  await imap.logout();
  return { idleMs: percentiles(samples), idleMissed: missed };
};

interface System {
  readonly label: string;
  readonly system: string;
  readonly port: number;
  readonly track: (usage: ReturnType<typeof sampleUsage>) => void;
  readonly fillHow: string;
  readonly idleHow: string;
  readonly deliver: (n: number) => Promise<void>;
}

/** Reads and IDLE on a filled system; the report row. */
const measure = async (system: System, load: LoadResult, fillEndedAt: number): Promise<RunReport> => {
  const accepted = load.records.filter((r) => r.outcome === "accepted");
  const readUsage = sampleUsage();
  system.track(readUsage);
  const reads = await readRounds(system.port);
  const readProcesses = readUsage.stop();
  const idleUsage = sampleUsage();
  system.track(idleUsage);
  const idle = await idleLatency(system.port, system.deliver);
  const idleProcesses = idleUsage.stop();

  const cpu = (processes: ReadonlyArray<ProcessUsage>) => processes.filter((p) => p.role === "system").reduce((sum, p) => sum + p.cpuSeconds, 0);
  const middle = (pick: (r: ReadRound) => number) => median(reads.rounds.map(pick));
  const headerMs = middle((r) => r.headerMs);
  const fullMs = middle((r) => r.fullMs);
  const fullBytes = middle((r) => r.fullBytes);
  const first = reads.rounds[0]!;
  const imap: ImapFigures = {
    messages: reads.messages,
    fill: { how: system.fillHow, seconds: (fillEndedAt - load.startedAt) / 1000, perSec: perSecond(accepted.length, fillEndedAt - load.startedAt) },
    rounds: reads.rounds,
    selectMs: middle((r) => r.selectMs),
    headerMs,
    headerPerSec: perSecond(reads.messages, headerMs),
    fullMs,
    fullMBPerSec: fullMs > 0 ? fullBytes / 1024 / 1024 / (fullMs / 1000) : 0,
    ...idle,
    idleHow: system.idleHow,
    readCpuSeconds: cpu(readProcesses),
    readCpuSecondsPerRound: cpu(readProcesses) / ROUNDS,
    idleCpuSeconds: cpu(idleProcesses),
  };
  const lost = accepted.filter((r) => !reads.found.has(r.id)).length;
  const duplicates = [...reads.found.values()].reduce((sum, n) => sum + n - 1, 0);
  return {
    label: system.label,
    system: system.system,
    nodes: 1,
    attempted: load.records.length,
    accepted: accepted.length,
    refused: load.records.filter((r) => r.outcome === "refused").length,
    connectionErrors: load.connectionErrors,
    injectSeconds: imap.fill.seconds,
    acceptedPerSec: imap.fill.perSec,
    acceptLatencyMs: percentiles(accepted.map((r) => r.acceptLatencyMs ?? 0)),
    delivered: reads.messages,
    lost,
    duplicates,
    processes: readProcesses,
    queueDepth: [],
    acceptTimes: [],
    arrivalTimes: [],
    startedAt: load.startedAt,
    imap,
    notes: [
      `filled by ${system.fillHow}: ${accepted.length} in ${imap.fill.seconds.toFixed(1)} s (${imap.fill.perSec.toFixed(0)} msg/s)`,
      `first read after the fill: SELECT ${round(first.selectMs, 1)} ms, headers ${round(first.headerMs)} ms, full ${round(first.fullMs)} ms`,
      `IDLE: ${idle.idleMs.count} deliveries by ${system.idleHow}, start of delivery → EXISTS p50 ${round(idle.idleMs.p50, 1)} ms, p99 ${round(idle.idleMs.p99, 1)} ms, max ${round(idle.idleMs.max, 1)} ms${idle.idleMissed ? `, ${idle.idleMissed} never heard within ${IDLE_TIMEOUT_MS / 1000} s` : ""}`,
    ],
  };
};

const ternRun = async (options: BenchOptions, runId: string): Promise<RunReport> => {
  const environment = await startEnvironment({ nodes: 1, sink: { record: false }, localUsers: 1 });
  try {
    const node = environment.nodes[0]!;
    const load = await runLoad({ ...fillOptions(options, runId), targets: [{ host: "127.0.0.1", port: node.ports.smtp }], reuse: options.reuse });
    const accepted = load.records.filter((r) => r.outcome === "accepted").length;
    const deadline = Date.now() + options.drainTimeoutSec * 1000;
    while ((await readMetric(node, "tern_recipients_delivered_total", 'route="local"')) < accepted && Date.now() < deadline) await sleep(50);
    const filledAt = Date.now();
    const smtp = await SmtpConnection.open("127.0.0.1", node.ports.smtp, "idle.tern");
    try {
      const nats = findProcess("nats-server");
      return await measure(
        {
          label: "tern",
          system: "Tern",
          port: node.ports.imap,
          track: (usage) => {
            usage.track("tern n0", node.pid);
            if (nats !== undefined) usage.track("nats-server", nats, { role: "shared" });
          },
          fillHow: "SMTP into the node (local delivery into the mailbox)",
          idleHow: "SMTP to the node",
          deliver: async (n) => {
            const { reply } = await smtp.send(BENCH_SENDER, [localUser(0).address], idleMessage(runId, n, options.size.min));
            if (reply.code !== 250) throw new Error(`IDLE delivery refused: ${reply.code} ${reply.text}`);
          },
        },
        load,
        filledAt,
      );
    } finally {
      await smtp.quit();
    }
  } finally {
    await environment.stop();
  }
};

const appendChannel = async (port: number) => {
  const user = localUser(0);
  const imap = await ImapConnection.open("127.0.0.1", port, user.address, user.password);
  return {
    send: async (_from: string, _to: ReadonlyArray<string>, message: Buffer) => {
      const reply = await imap.append("INBOX", message);
      return { accepted: reply.status === "OK", latencyMs: reply.ms, reply: reply.text, queueId: undefined };
    },
    close: () => imap.logout(),
    destroy: () => imap.destroy(),
  };
};

const peerRun = async (options: BenchOptions, runId: string, start: (options: ImapPeerOptions) => Promise<ImapPeer>): Promise<RunReport> => {
  const peer = whileRunning(await start({ user: localUser(0) }));
  try {
    // APPENDs to one Maildir from many connections wait on each other's uidlist lock (20
    // took a minute for 10,000): a few connections fill it faster.
    const connections = Math.min(options.connections, FILL_APPEND_CONNECTIONS);
    const load = await driveLoad(fillOptions(options, runId, connections), () => appendChannel(peer.port), true);
    const filledAt = Date.now();
    const deliverer = await appendChannel(peer.port);
    try {
      const report = await measure(
        {
          label: peer.name,
          system: peer.version,
          port: peer.port,
          track: (usage) => usage.track(peer.name, peer.pid, { tree: true }),
          fillHow: `IMAP APPEND (${connections} connections)`,
          idleHow: "IMAP APPEND from a second connection",
          deliver: async (n) => {
            const outcome = await deliverer.send(BENCH_SENDER, [], idleMessage(runId, n, options.size.min));
            if (!outcome.accepted) throw new Error(`IDLE delivery refused: ${outcome.reply}`);
          },
        },
        load,
        filledAt,
      );
      return { ...report, notes: [...report.notes, peer.setup] };
    } finally {
      await deliverer.close();
    }
  } catch (error) {
    throw new Error(`${error instanceof Error ? error.message : error}\n${await peer.logTail()}`);
  } finally {
    await peer.stop();
  }
};

/** Tern's row, then each peer's; a peer that cannot run is reported in `peerErrors`. */
export const imapScenario = async (options: BenchOptions, peers: ReadonlyArray<string>) => {
  const runId = `i${randomBytes(4).toString("hex")}`;
  const reports = [await ternRun(options, runId)];
  const peerErrors: Record<string, string> = {};
  for (const name of peers) {
    try {
      reports.push(await peerRun(options, runId, imapPeers[name]!));
    } catch (error) {
      peerErrors[name] = error instanceof Error ? error.message : String(error);
    }
  }
  return { reports, peerErrors };
};

const cell = (value: number | undefined, digits = 0) => (value === undefined ? "-" : String(round(value, digits)));

/** The IMAP table: one row per system, then its notes. */
export const printImapTable = (reports: ReadonlyArray<RunReport>) => {
  const header = ["system", "version", "msgs", "SELECT ms", "hdr FETCH ms", "hdr msg/s", "full FETCH ms", "full MB/s", "IDLE p50", "p99 ms", "missed", "CPU s/round", "IDLE CPU s", "lost"];
  const rows = reports.flatMap((r) => {
    const i = r.imap;
    if (!i) return [];
    return [[
      r.label, r.system ?? "", String(i.messages), cell(i.selectMs, 1), cell(i.headerMs), cell(i.headerPerSec), cell(i.fullMs), cell(i.fullMBPerSec, 1),
      cell(i.idleMs.p50, 1), cell(i.idleMs.p99, 1), String(i.idleMissed), cell(i.readCpuSecondsPerRound, 2), cell(i.idleCpuSeconds, 2), String(r.lost ?? 0),
    ]];
  });
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i]!.length)));
  const line = (cells: string[]) => cells.map((c, i) => (i < 2 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join("  ");
  console.log(line(header));
  rows.forEach((row) => console.log(line(row)));
  console.log(`(median of ${ROUNDS} read rounds, each on a fresh connection; IDLE over ${IDLE_DELIVERIES} deliveries; CPU = the server's processes, user + sys)`);
  for (const r of reports) for (const note of r.notes) console.log(`  ${r.label}: ${note}`);
};
