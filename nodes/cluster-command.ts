// `tern cluster status`: the cluster's members as a node reads them from the members
// bucket (any one node answers over NATS; operators need no access to the bucket).
// `tern cluster up`: nodes/cluster-up.ts.
import { parseArgs } from "node:util";
import { Effect } from "effect";
import { callEndpoint } from "../actors/runtime/remote.ts";
import type { MemberRecord } from "../protocol/membership.ts";
import { makeSubjects } from "../protocol/subjects.ts";
import { loadConfig } from "./config.ts";
import { connectAsOperator } from "./operator-connection.ts";
import type { Output } from "./queue-command.ts";
import { runClusterUp } from "./cluster-up.ts";
import { membersEndpoint } from "./cluster-members.ts";
import { badTimeout, timeoutOption } from "./timeout-option.ts";

const clusterUsage = `usage: tern cluster status [--config FILE] [--json] [--timeout MS]
       tern cluster up --nodes N [--config FILE] [--base-port P] [--data-dir D]
status lists the cluster's members: id, version, uptime, ready (or why not), queue depth
and outbound connections. Exit status: 0 listed, 2 bad usage, 69 no node answered.
up runs N nodes of the config's cluster on this machine, sharing its NATS: node i is
<nodeId>-<i>, its data in <D>/<nodeId>-<i>, its ports from P + 10*(i-1) (smtp +0,
smtps +1, pop3 +2, http +3); SIGINT/SIGTERM stops them all gracefully.`;

export const runCluster = (args: string[]): Promise<number> => clusterCommand(args, { out: (t) => console.log(t), err: (t) => console.error(t) });

const clusterCommand = async (args: string[], io: Output): Promise<number> => {
  const [action, ...rest] = args;
  if (action === "status") return clusterStatus(rest, io);
  if (action === "up") return runClusterUp(rest, io);
  io.out(clusterUsage);
  return action === undefined || action === "--help" || action === "-h" ? 0 : 2;
};

const clusterStatus = async (args: string[], io: Output): Promise<number> => {
  const { values } = parseArgs({
    args,
    options: { config: { type: "string", short: "c" }, json: { type: "boolean" }, timeout: { type: "string" }, help: { type: "boolean", short: "h" } },
  });
  if (values.help) {
    io.out(clusterUsage);
    return 0;
  }
  const timeoutMs = timeoutOption(values.timeout, 5_000);
  if (timeoutMs === undefined) {
    io.err(`tern: ${badTimeout(values.timeout)}`);
    return 2;
  }
  const config = await loadConfig(values.config, process.env);
  const subjects = makeSubjects(config.cluster);
  const nc = await connectAsOperator(config, "tern-cluster");
  try {
    const answer = await Effect.runPromise(Effect.result(callEndpoint(nc, subjects.clusterMembers, membersEndpoint, {}, { timeoutMs })));
    if (answer._tag === "Failure") {
      io.err(`tern: no node of cluster ${config.cluster} answered: ${answer.failure.detail}`);
      return 69; // EX_UNAVAILABLE
    }
    const { members, answeredBy } = answer.success.value;
    io.out(values.json ? JSON.stringify({ cluster: config.cluster, answeredBy, members }) : renderMembers(members, Date.now()));
    return 0;
  } finally {
    await nc.close();
  }
};

const duration = (ms: number): string => {
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${s % 60}s`;
  if (s < 86_400) return `${Math.floor(s / 3600)}h${Math.floor((s % 3600) / 60)}m`;
  return `${Math.floor(s / 86_400)}d${Math.floor((s % 86_400) / 3600)}h`;
};

/** One line per member under a header, columns aligned. */
const renderMembers = (members: ReadonlyArray<MemberRecord>, now: number): string => {
  const rows = [
    ["NODE", "VERSION", "UPTIME", "READY", "QUEUE", "OUTBOUND", "SMTP", "HTTP"],
    ...members.map((m) => [
      m.node,
      m.version,
      duration(now - m.startedAt),
      m.ready ? "yes" : `no: ${m.problems.join("; ")}`,
      String(m.queueDepth),
      String(m.outboundConnections),
      `${m.host}:${m.ports.smtp}`,
      `${m.host}:${m.ports.http}`,
    ]),
  ];
  const widths = rows[0]!.map((_, column) => Math.max(...rows.map((row) => row[column]!.length)));
  const lines = rows.map((row) => row.map((cell, column) => (column === row.length - 1 ? cell : cell.padEnd(widths[column]!))).join("  "));
  return [...lines, `${members.length} member${members.length === 1 ? "" : "s"}`].join("\n");
};
