// `npm run bench -- [options]`: runs a benchmark scenario against real Tern nodes,
// prints a table, and writes result.json and chart.svg under the results folder.
// Exits 1 when a run lost a message that had been accepted (a 250, or a submit reply);
// 2 when it could not run, or a peer asked for with --peers could not be measured.
import { mkdir, writeFile } from "node:fs/promises";
import { loadavg } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { renderChart, ratePoints } from "./lib/chart.ts";
import { stopEverything } from "./lib/environment.ts";
import { describeMachine } from "./lib/machine.ts";
import { acceptOnly, backlog, baseline, local, peerRelay, relay, scale, sinkCeiling, submit, type BenchOptions, type RunReport } from "./lib/scenarios.ts";
import type { Peer, PeerOptions } from "./lib/peers/peer.ts";
import { startPostfix } from "./lib/peers/postfix.ts";
import { startHaraka } from "./lib/peers/haraka.ts";
import { startFloor } from "./lib/peers/floor.ts";
import { mailbox } from "./lib/mailbox-scenario.ts";
import { imapPeers, imapScenario, printImapTable } from "./lib/imap-scenario.ts";
import { round } from "./lib/stats.ts";
import { projectRoot } from "../nodes/launcher.ts";

const scenarios = {
  relay: "SMTP in → spool → DNS → delivery → sink, end to end (default)",
  accept: "accept only: the next hop is down, the node receives, commits and queues",
  local: "local delivery into mailboxes, then every message read back over POP3",
  mailbox: "one mailbox of --messages: delivery rate, then POP3 RETR rate (owner and other node), for 1 … --nodes nodes",
  scale: "relay with 1, 2 … --nodes nodes, the load spread over them",
  imap: "one mailbox of --messages: SELECT, header and full FETCH, IDLE latency over IMAP (--peers dovecot beside it)",
  backlog: "queue --messages while the sink is down, then open it and measure the drain",
  submit: "one node: SMTP injection, then the same messages over the NATS API (submitRaw), a row each",
  kill: "relay, with kill -9 of node n0 a third of the way in and a restart (nothing may be lost)",
  baseline: "only the bare smtp-server ceiling (drain and answer 250)",
} as const;
type Scenario = keyof typeof scenarios;

/** Other MTAs the relay scenario can run beside Tern, in the same run, to the same kind of sink. */
const peers: Record<string, (options: PeerOptions) => Promise<Peer>> = { postfix: startPostfix, haraka: startHaraka, floor: startFloor };

const help = `usage: npm run bench -- [options]

scenarios (--scenario NAME):
${Object.entries(scenarios).map(([name, text]) => `  ${name.padEnd(9)} ${text}`).join("\n")}

options:
  --messages N       messages to send at most (default 5000)
  --duration S       seconds of injection at most (default 60)
  --connections N    concurrent SMTP connections (default 20)
  --no-reuse         a new connection for every message (default: reuse)
  --size B | A-B     message size in bytes, fixed or uniform in [A, B] (default 5120)
  --rate R           open loop at R messages/s (default: closed loop, as fast as answered)
  --recipients N     recipients per message (default 1)
  --nodes N          Tern nodes (default 1; for scale: the largest count)
  --users N          local mailboxes for the local scenario (default 10)
  --drain S          seconds to wait for deliveries after injection (default 120)
  --no-baseline      skip the bare smtp-server baseline run (default: run it first)
  --peers LIST       relay: also run the same load through other MTAs, comma-separated:
                     postfix (Debian's package, needs root), haraka (the npm devDependency),
                     floor (smtp-server + nodemailer relaying in memory: not an MTA, the
                     least a relay on Tern's libraries costs); adds the sink's own ceiling
                     and a table of rates and ratios.
                     imap: dovecot (Debian's dovecot-imapd, needs root), fed the same messages
  --rounds N         measure everything N times over, one round after another (each round
                     the baseline, the scenario and every peer), then print each row's median
                     and range, and the median of each round's ratios (default 1). On a
                     shared or virtual machine one run's CPU figure moves by 10 % or more.
  --results DIR      where result.json and chart.svg go (default bench/results)

Everything runs on loopback on this machine: dnsmasq, a sink, N node processes on the
NATS at 127.0.0.1:4222. Ctrl-C stops all of it.

CPU ms/msg: user + system CPU of every process of the system measured (all Tern nodes;
Postfix's or Haraka's whole process tree) over the run, per delivered message (per
accepted message where nothing is delivered: accept, baseline). The sink and the shared
nats-server are not in it; NATS's share is noted below the table.`;

const parseSize = (text: string) => {
  const [min, max] = text.split("-").map(Number);
  if (!Number.isInteger(min) || (max !== undefined && !Number.isInteger(max))) throw new Error(`--size: expected B or A-B, got ${text}`);
  return { min: min!, max: max ?? min! };
};

const parse = () => {
  const { values } = parseArgs({
    options: {
      scenario: { type: "string", default: "relay" },
      messages: { type: "string", default: "5000" },
      duration: { type: "string", default: "60" },
      connections: { type: "string", default: "20" },
      "no-reuse": { type: "boolean", default: false },
      size: { type: "string", default: "5120" },
      rate: { type: "string" },
      recipients: { type: "string", default: "1" },
      nodes: { type: "string", default: "1" },
      users: { type: "string", default: "10" },
      drain: { type: "string", default: "120" },
      "no-baseline": { type: "boolean", default: false },
      peers: { type: "string", default: "" },
      rounds: { type: "string", default: "1" },
      results: { type: "string", default: join(projectRoot, "bench/results") },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  if (values.help) return undefined;
  if (!(values.scenario in scenarios)) throw new Error(`unknown scenario ${values.scenario}; see --help`);
  const peerNames = values.peers.split(",").map((name) => name.trim()).filter(Boolean);
  const known = values.scenario === "imap" ? imapPeers : peers;
  for (const name of peerNames) if (!(name in known)) throw new Error(`unknown peer ${name} for ${values.scenario}; known: ${Object.keys(known).join(", ")}`);
  if (peerNames.length > 0 && values.scenario !== "relay" && values.scenario !== "imap") throw new Error("--peers goes with the relay and imap scenarios only");
  const rounds = Number(values.rounds);
  if (!Number.isInteger(rounds) || rounds < 1) throw new Error(`--rounds: expected a whole number of at least 1, got ${values.rounds}`);
  if (rounds > 1 && values.scenario === "imap") throw new Error("--rounds goes with every scenario but imap (its table has its own rounds)");
  const options: BenchOptions = {
    messages: Number(values.messages),
    durationSec: Number(values.duration),
    connections: Number(values.connections),
    reuse: !values["no-reuse"],
    size: parseSize(values.size),
    rate: values.rate === undefined ? undefined : Number(values.rate),
    recipients: Number(values.recipients),
    nodes: Number(values.nodes),
    localUsers: Number(values.users),
    drainTimeoutSec: Number(values.drain),
  };
  return { scenario: values.scenario as Scenario, options, peers: peerNames, rounds, baseline: !values["no-baseline"] && values.scenario !== "baseline" && values.scenario !== "imap", results: values.results };
};

const runScenario = async (scenario: Scenario, options: BenchOptions): Promise<RunReport[]> => {
  switch (scenario) {
    case "relay": return [await relay(options)];
    case "accept": return [await acceptOnly(options)];
    case "local": return [await local(options)];
    case "mailbox": return mailbox(options);
    case "scale": return scale(options);
    case "backlog": return [await backlog(options)];
    case "imap": throw new Error("the imap scenario runs through imapScenario");
    case "submit": return submit(options);
    case "kill": return [await relay(options, "kill -9", true)];
    case "baseline": return [await baseline(options)];
  }
};

/** The processes of the system measured: Tern's nodes, a peer's process tree, the bare server. */
const systemProcesses = (r: Pick<RunReport, "processes">) => r.processes.filter((p) => p.role === "system");

const cpuMs = (r: Pick<RunReport, "processes">, role: "system" | "shared" = "system") =>
  r.processes.filter((p) => p.role === role).reduce((sum, p) => sum + p.cpuSeconds, 0) * 1000;

/** System CPU (over the run's window: intake and delivery) per accepted message, ms. */
const cpuMsPerAccepted = (r: Pick<RunReport, "accepted" | "processes">) => (r.accepted > 0 ? cpuMs(r) / r.accepted : undefined);

/** What CPU per message counts per: delivered messages when the run delivers, else accepted ones. */
const cpuBasis = (r: Pick<RunReport, "delivered">) => (r.delivered === undefined ? "accepted" : "delivered");

/** The headline: system CPU per delivered message (per accepted one when the run delivers none). */
const cpuMsPerMessage = (r: Pick<RunReport, "accepted" | "delivered" | "processes">, role: "system" | "shared" = "system") => {
  const count = r.delivered ?? r.accepted;
  return count > 0 ? cpuMs(r, role) / count : undefined;
};

const cell = (value: number | undefined, digits = 0) => (value === undefined ? "-" : String(round(value, digits)));

const printTable = (reports: ReadonlyArray<RunReport>) => {
  const header = ["run", "nodes", "accepted", "acc/s", "acc p50", "p90", "p99", "max ms", "delivered", "del/s", "e2e p50", "p99 ms", "lost", "dup", "×ceiling", "cores", "CPU ms/msg", "RSS MiB"];
  const rows = reports.map((r) => {
    const nodes = systemProcesses(r);
    return [
      r.label, String(r.nodes), String(r.accepted), cell(r.acceptedPerSec),
      cell(r.acceptLatencyMs.p50, 1), cell(r.acceptLatencyMs.p90, 1), cell(r.acceptLatencyMs.p99, 1), cell(r.acceptLatencyMs.max, 1),
      cell(r.delivered), cell(r.drainPerSec ?? r.deliveredPerSec), cell(r.endToEndMs?.p50, 1), cell(r.endToEndMs?.p99, 1),
      cell(r.lost), cell(r.duplicates), r.ratioToBaseline === undefined ? "-" : round(r.ratioToBaseline, 2).toFixed(2),
      nodes.map((p) => p.cores.toFixed(2)).join("+"), cell(cpuMsPerMessage(r), 2), nodes.map((p) => Math.round(p.peakRssMiB)).join("+"),
    ];
  });
  printRows(header, rows);
  for (const r of reports) {
    const cpu = cpuMsPerMessage(r);
    const nats = cpuMsPerMessage(r, "shared");
    if (cpu !== undefined) {
      const natsNote = r.processes.some((p) => p.role === "shared") && nats !== undefined ? `; nats-server (shared with the machine) ${nats.toFixed(2)} ms more` : "";
      console.log(`  ${r.label}: CPU ${cpu.toFixed(2)} ms per ${cpuBasis(r)} message (${systemProcesses(r).map((p) => p.name).join(", ")}, user + sys)${natsNote}`);
    }
    for (const note of r.notes) console.log(`  ${r.label}: ${note}`);
  }
};

const printRows = (header: string[], rows: string[][]) => {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i]!.length)));
  const line = (cells: string[]) => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join("  ");
  console.log(line(header));
  rows.forEach((row) => console.log(line(row)));
};

/** Tern's relay row against each peer's, and the sink's ceiling above them. */
const comparePeers = (reports: ReadonlyArray<RunReport>) => {
  const tern = reports.find((r) => r.label === "relay");
  const others = reports.filter((r) => r.label === "sink" || r.label in peers);
  if (!tern || others.length === 0) return [];
  const rate = (r: RunReport) => r.deliveredPerSec ?? 0;
  const rows = [tern, ...others].map((r) => {
    const cpu = cpuMsPerMessage(r);
    const ternCpu = cpuMsPerMessage(tern);
    return {
      label: r.label,
      system: r.system ?? "Tern",
      delivered: r.delivered ?? 0,
      deliveredPerSec: rate(r),
      cpuMsPerMessage: cpu,
      cores: systemProcesses(r).reduce((sum, p) => sum + p.cores, 0),
      lost: r.lost ?? 0,
      ternRateRatio: rate(r) > 0 ? rate(tern) / rate(r) : undefined,
      // How many times the CPU Tern spends per message this system spends.
      cpuRatioToTern: cpu !== undefined && ternCpu ? cpu / ternCpu : undefined,
    };
  });
  console.log("\nsame load, same run (delivered to a sink; CPU = the system's processes, user + sys):");
  printRows(
    ["system", "version", "delivered", "msg/s", "cores", "CPU ms/msg", "lost", "Tern ÷ it (msg/s)", "its CPU ÷ Tern's"],
    rows.map((r) => [
      r.label, r.system, String(r.delivered), cell(r.deliveredPerSec), r.cores.toFixed(2), cell(r.cpuMsPerMessage, 2), String(r.lost),
      r.label === "relay" ? "-" : cell(r.ternRateRatio, 2), r.label === "relay" || r.label === "sink" ? "-" : cell(r.cpuRatioToTern, 2),
    ]),
  );
  return rows;
};

const chartFor = (scenario: string, reports: ReadonlyArray<RunReport>) => {
  const main = reports[reports.length - 1]!;
  return renderChart(`tern bench: ${scenario}`, [
    {
      title: "throughput",
      unit: "msg/s",
      series: [
        { name: "accepted", color: "#1f77b4", points: ratePoints(main.acceptTimes, main.startedAt) },
        { name: "delivered", color: "#2ca02c", points: ratePoints(main.arrivalTimes, main.startedAt) },
      ],
    },
    { title: "queue depth", unit: "entries", series: [{ name: "queued", color: "#d62728", points: main.queueDepth }] },
  ]);
};

type Parsed = NonNullable<ReturnType<typeof parse>>;

/** One round: the baseline, the scenario, then each peer under the same load. A peer that cannot run is noted in `peerErrors`. */
const measureRound = async (parsed: Parsed, peerErrors: Record<string, string>): Promise<RunReport[]> => {
  const { scenario, options } = parsed;
  const reports: RunReport[] = [];
  const ceiling = parsed.baseline ? await baseline(options) : undefined;
  if (ceiling) reports.push(ceiling);
  // A peer that cannot run here (no root for Postfix, the package missing) is reported, and
  // the rows already measured are kept.
  const imap = scenario === "imap" ? await imapScenario(options, parsed.peers) : undefined;
  Object.assign(peerErrors, imap?.peerErrors);
  const runs = imap ? imap.reports : [...(parsed.peers.length > 0 ? [await sinkCeiling(options)] : []), ...(await runScenario(scenario, options))];
  for (const name of imap ? [] : parsed.peers) {
    try {
      runs.push(await peerRelay(options, peers[name]!));
    } catch (error) {
      peerErrors[name] = error instanceof Error ? error.message : String(error);
    }
  }
  for (const report of runs) {
    if (ceiling && ceiling.acceptedPerSec > 0) report.ratioToBaseline = report.acceptedPerSec / ceiling.acceptedPerSec;
    reports.push(report);
  }
  return reports;
};

const median = (values: ReadonlyArray<number>) => {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2;
};

interface Spread {
  readonly median: number;
  readonly min: number;
  readonly max: number;
}

const spreadOf = (values: ReadonlyArray<number | undefined>): Spread | undefined => {
  const known = values.filter((v): v is number => v !== undefined && Number.isFinite(v));
  return known.length === 0 ? undefined : { median: median(known), min: Math.min(...known), max: Math.max(...known) };
};

/**
 * Each row (by label) over the rounds: CPU per message and rate as median and range, and
 * against Tern's relay row of the same round, the ratios paired round by round, so a slow
 * moment of the machine moves both sides of a ratio.
 */
const summarise = (reports: ReadonlyArray<RunReport & { round: number }>) => {
  const rate = (r: RunReport) => r.deliveredPerSec ?? r.acceptedPerSec;
  const labels = [...new Set(reports.map((r) => r.label))];
  return labels.map((label) => {
    const rows = reports.filter((r) => r.label === label);
    const ternOf = (round: number) => reports.find((r) => r.label === "relay" && r.round === round);
    const paired = rows.map((r) => ({ row: r, tern: ternOf(r.round) })).filter(({ row, tern }) => tern && row !== tern);
    return {
      label,
      system: rows[0]!.system ?? "Tern",
      rounds: rows.length,
      cpuMsPerMessage: spreadOf(rows.map((r) => cpuMsPerMessage(r))),
      perSec: spreadOf(rows.map(rate)),
      lost: rows.reduce((sum, r) => sum + (r.lost ?? 0), 0),
      ternRateRatio: spreadOf(paired.map(({ row, tern }) => (rate(row) > 0 ? rate(tern!) / rate(row) : undefined))),
      cpuRatioToTern: spreadOf(paired.map(({ row, tern }) => {
        const ternCpu = cpuMsPerMessage(tern!);
        const cpu = cpuMsPerMessage(row);
        return cpu !== undefined && ternCpu ? cpu / ternCpu : undefined;
      })),
    };
  });
};

const printSummary = (summary: ReturnType<typeof summarise>, rounds: number) => {
  const spread = (s: Spread | undefined, digits: number) => (s === undefined ? "-" : `${cell(s.median, digits)} (${cell(s.min, digits)}–${cell(s.max, digits)})`);
  console.log(`\nmedian of ${rounds} rounds (range in brackets; ratios paired with Tern's relay row of the same round):`);
  printRows(
    ["run", "system", "rounds", "CPU ms/msg", "msg/s", "lost", "Tern ÷ it (msg/s)", "its CPU ÷ Tern's"],
    summary.map((r) => [r.label, r.system, String(r.rounds), spread(r.cpuMsPerMessage, 2), spread(r.perSec, 0), String(r.lost), spread(r.ternRateRatio, 2), spread(r.cpuRatioToTern, 2)]),
  );
};

const main = async () => {
  const parsed = parse();
  if (!parsed) return void console.log(help);
  const { scenario, options } = parsed;
  const machine = describeMachine();
  console.log(`tern bench ${scenario}: ${options.messages} messages × ${options.recipients} rcpt, ${options.size.min === options.size.max ? options.size.min : `${options.size.min}-${options.size.max}`} B, ${options.connections} connections (${options.reuse ? "reused" : "one per message"}), ${options.rate ? `${options.rate} msg/s open loop` : "closed loop"}`);
  console.log(`machine: ${machine.cpuModel}, ${machine.cores} cores, ${machine.memoryGiB} GiB, load ${machine.loadAverage.join(" ")}, node ${machine.node}, ${machine.nats}`);

  const reports: Array<RunReport & { readonly round: number }> = [];
  const comparisons: Array<ReturnType<typeof comparePeers>> = [];
  const peerErrors: Record<string, string> = {};
  for (let round = 1; round <= parsed.rounds; round++) {
    if (parsed.rounds > 1) console.log(`\nround ${round} of ${parsed.rounds}`);
    const measured = await measureRound(parsed, peerErrors);
    if (scenario === "imap") printImapTable(measured);
    else printTable(measured);
    comparisons.push(comparePeers(measured));
    reports.push(...measured.map((report) => ({ ...report, round })));
  }
  const summary = summarise(reports);
  if (parsed.rounds > 1) printSummary(summary, parsed.rounds);
  for (const [name, error] of Object.entries(peerErrors)) {
    console.error(`${name}: not measured: ${error}`);
    process.exitCode = 2;
  }

  const folder = join(parsed.results, `${new Date().toISOString().replace(/[:.]/g, "-")}-${scenario}`);
  await mkdir(folder, { recursive: true });
  const slim = reports.map(({ acceptTimes, arrivalTimes, ...rest }) => ({
    ...rest,
    system: rest.system ?? "Tern",
    cpuMsPerMessage: cpuMsPerMessage(rest),
    cpuBasis: cpuBasis(rest),
    sharedCpuMsPerMessage: rest.processes.some((p) => p.role === "shared") ? cpuMsPerMessage(rest, "shared") : undefined,
    cpuMsPerAccepted: cpuMsPerAccepted(rest),
  }));
  const lost = reports.reduce((sum, r) => sum + (r.lost ?? 0), 0);
  await writeFile(
    join(folder, "result.json"),
    JSON.stringify(
      { scenario, options, peers: parsed.peers, rounds: parsed.rounds, machine, loadAverageAfter: loadavg(), passed: lost === 0, reports: slim, comparison: comparisons.at(-1), comparisons, summary, peerErrors },
      null,
      2,
    ),
  );
  await writeFile(join(folder, "chart.svg"), chartFor(scenario, reports.filter((r) => r.round === parsed.rounds)));
  console.log(`results: ${join(folder, "result.json")} and chart.svg`);
  if (lost > 0) {
    console.error(`FAILED: ${lost} accepted message(s) (a 250 or a submit reply) never arrived`);
    process.exitCode = 1;
  }
};

process.once("SIGINT", () => {
  console.error("\ninterrupted: stopping everything the bench started");
  stopEverything().finally(() => process.exit(130));
});

main()
  .catch((error) => {
    console.error(error instanceof Error ? error.message : error);
    process.exitCode = 2;
  })
  .finally(() => stopEverything());
