// `tern reputation`: what receiving hosts said to the cluster's mail over the last hour or
// day, per source address, sender domain and destination provider — delivered, bounced
// (by category), deferred, complaints and their rates — summed over every node that
// answers, and the thresholds holding a source address or sender domain on each node
// (actors/delivery/reputation.ts).
import { parseArgs } from "node:util";
import { askReputation, type ReputationAnswer } from "../actors/delivery/reputation-status.ts";
import { rateOf, sumCounts, type Counts } from "../actors/delivery/reputation-window.ts";
import type { ActionView, KeyFigures, ReputationDimension, ReputationReply, ReputationWindow } from "../protocol/reputation.ts";
import { makeSubjects } from "../protocol/subjects.ts";
import { memberIds } from "./cluster-members.ts";
import { loadConfig } from "./config.ts";
import { connectAsOperator } from "./operator-connection.ts";
import type { Output } from "./queue-command.ts";
import { badTimeout, timeoutOption } from "./timeout-option.ts";

const reputationUsage = `usage: tern reputation [--config FILE] [--window 1h|24h] [--by source|sender-domain|provider] [--node ID] [--json] [--timeout MS]
Shows what receiving hosts said to the mail sent over the last hour (default) or day,
per source address, sender domain and destination provider: messages (delivered +
bounced), delivered, bounced by category, deferred attempts and complaints, with
  bounce rate     bounced / (delivered + bounced)
  complaint rate  complaints / delivered
  deferral rate   deferred / (delivered + bounced + deferred)
and the reputation thresholds slowing or pausing a source address or sender domain now.
Complaints and bounces that came back after delivery count on the node that sent the mail.
Without --node every node answers and the figures are summed; thresholds act on each
node's own figures, so holds are listed per node.
Exit status: 0 every node that answered did, 1 one failed, 2 bad usage, 69 no node answered.`;

const DIMENSION_NAMES: Readonly<Record<string, ReputationDimension>> = {
  source: "source",
  "sender-domain": "sender_domain",
  sender_domain: "sender_domain",
  provider: "provider",
};

export const runReputation = (args: string[]): Promise<number> => reputationCommand(args, { out: (t) => console.log(t), err: (t) => console.error(t) });

/** Runs one `tern reputation`; resolves with the exit code. */
export const reputationCommand = async (args: string[], io: Output): Promise<number> => {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: {
      config: { type: "string", short: "c" },
      node: { type: "string" },
      window: { type: "string" },
      by: { type: "string" },
      json: { type: "boolean" },
      timeout: { type: "string" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) {
    io.out(reputationUsage);
    return 0;
  }
  const timeoutMs = timeoutOption(values.timeout, 10_000);
  const window = values.window ?? "1h";
  const dimension = values.by === undefined ? undefined : DIMENSION_NAMES[values.by];
  const problem =
    positionals.length > 0 ? `unexpected ${JSON.stringify(positionals[0])}`
    : timeoutMs === undefined ? badTimeout(values.timeout)
    : window !== "1h" && window !== "24h" ? `--window ${window}: expected 1h or 24h`
    : values.by !== undefined && dimension === undefined ? `--by ${values.by}: expected source, sender-domain or provider`
    : undefined;
  if (problem !== undefined || timeoutMs === undefined) {
    io.err(`tern: ${problem}\n${reputationUsage}`);
    return 2;
  }
  const config = await loadConfig(values.config, process.env);
  const nc = await connectAsOperator(config, "tern-reputation");
  try {
    const request = { _tag: "Reputation" as const, window: window as ReputationWindow, ...(dimension ? { dimension } : {}) };
    const subjects = makeSubjects(config.cluster);
    // Every node is asked unless one is named: the member list tells when all have answered.
    const members = values.node === undefined ? memberIds(nc, subjects, Math.min(timeoutMs, 2_000)) : undefined;
    const answers = await askReputation(nc, subjects, request, { node: values.node, timeoutMs, members }).catch((error: Error) => {
      io.err(`tern: ${values.node ? `node ${values.node}` : "no node"} answered: ${error.message}`);
      return [] as ReputationAnswer[];
    });
    if (answers.length === 0) {
      io.err(`tern: no node of cluster ${config.cluster} answered`);
      return 69; // EX_UNAVAILABLE
    }
    for (const answer of answers) if (!answer.ok) io.err(`tern: node ${answer.node}: ${answer.detail}`);
    const replies = answers.flatMap((answer) => (answer.ok ? [answer.reply] : []));
    if (replies.length > 0) {
      const summed = summarize(window as ReputationWindow, replies);
      io.out(values.json ? JSON.stringify(summed) : render(summed, dimension));
    }
    return answers.every((a) => a.ok) ? 0 : 1;
  } finally {
    await nc.close();
  }
};

/** One key's figures summed over the nodes, with its rates. */
export interface SummedFigures extends Omit<KeyFigures, "bounces"> {
  readonly bounces: Readonly<Record<string, number>>;
  /** delivered + bounced. */
  readonly messages: number;
  readonly bounceRate: number;
  readonly complaintRate: number;
  readonly deferralRate: number;
}

export interface Summary {
  readonly window: ReputationWindow;
  /** The nodes that answered. */
  readonly nodes: ReadonlyArray<string>;
  readonly figures: ReadonlyArray<SummedFigures>;
  readonly actions: ReadonlyArray<ActionView & { readonly node: string }>;
}

const DIMENSION_ORDER: ReadonlyArray<ReputationDimension> = ["source", "sender_domain", "provider"];

/** Sums every node's figures per dimension and key (rates from the sums, not averaged). */
export const summarize = (window: ReputationWindow, replies: ReadonlyArray<ReputationReply>): Summary => {
  const sums = new Map<string, { dimension: ReputationDimension; key: string; counts: Counts }>();
  for (const reply of replies) {
    for (const f of reply.figures) {
      const id = `${f.dimension}\u0000${f.key}`;
      const counts: Counts = { delivered: f.delivered, bounced: f.bounced, deferred: f.deferred, complained: f.complained, bounces: f.bounces };
      const kept = sums.get(id);
      sums.set(id, { dimension: f.dimension, key: f.key, counts: kept ? sumCounts(kept.counts, counts) : counts });
    }
  }
  const figures = [...sums.values()]
    .sort((a, b) => DIMENSION_ORDER.indexOf(a.dimension) - DIMENSION_ORDER.indexOf(b.dimension) || a.key.localeCompare(b.key))
    .map(({ dimension, key, counts }): SummedFigures => ({
      dimension,
      key,
      delivered: counts.delivered,
      bounced: counts.bounced,
      deferred: counts.deferred,
      complained: counts.complained,
      bounces: counts.bounces as Record<string, number>,
      messages: counts.delivered + counts.bounced,
      bounceRate: rateOf(counts, "bounce"),
      complaintRate: rateOf(counts, "complaint"),
      deferralRate: rateOf(counts, "deferral"),
    }));
  const nodes = replies.map((reply) => reply.node).sort();
  const actions = replies.flatMap((reply) => reply.actions.map((action) => ({ node: reply.node, ...action }))).sort((a, b) => a.node.localeCompare(b.node) || a.key.localeCompare(b.key));
  return { window, nodes, figures, actions };
};

const percent = (share: number, digits = 1) => `${(share * 100).toFixed(digits)}%`;
const time = (at: number) => new Date(at).toISOString().replace(/\.\d+Z$/, "Z");

const TITLES: Readonly<Record<ReputationDimension, string>> = { source: "source address", sender_domain: "sender domain", provider: "provider" };
const HEAD = ["messages", "delivered", "bounced", "deferred", "complaints", "bounce", "complaint", "deferral"];

const table = (rows: ReadonlyArray<SummedFigures>, title: string): string[] => {
  const cells = rows.map((r) => [r.key, String(r.messages), String(r.delivered), String(r.bounced), String(r.deferred), String(r.complained), percent(r.bounceRate), percent(r.complaintRate, 2), percent(r.deferralRate)]);
  const header = [title, ...HEAD];
  const widths = header.map((h, n) => Math.max(h.length, ...cells.map((c) => c[n]!.length)));
  const line = (c: ReadonlyArray<string>) => `  ${c.map((cell, n) => (n === 0 ? cell.padEnd(widths[n]!) : cell.padStart(widths[n]!))).join("  ")}`.trimEnd();
  return [
    line(header),
    ...rows.flatMap((r, n) => {
      const categories = Object.entries(r.bounces).sort(([, a], [, b]) => b - a).map(([category, count]) => `${category} ${count}`);
      return [line(cells[n]!), ...(categories.length > 0 ? [`      bounced: ${categories.join(", ")}`] : [])];
    }),
  ];
};

const describeAction = (a: Summary["actions"][number]): string => {
  const what = `${a.dimension === "source" ? "source address" : "sender domain"} ${a.key}`;
  const how = a.action === "pause" ? `paused until ${time(a.pausedUntil ?? a.since)}` : `slowed to level ${a.level ?? "?"}`;
  return `  node ${a.node}: ${what} ${how} since ${time(a.since)} by ${a.rule} (${a.kind} rate ${percent(a.rate)} ≥ ${percent(a.limit)} over ${a.messages} messages in ${a.window})`;
};

export const render = (summary: Summary, only?: ReputationDimension): string => {
  const dimensions = only ? [only] : DIMENSION_ORDER;
  const lines = [`last ${summary.window}, summed over ${summary.nodes.length} node${summary.nodes.length === 1 ? "" : "s"} (${summary.nodes.join(", ")})`];
  for (const dimension of dimensions) {
    const rows = summary.figures.filter((f) => f.dimension === dimension);
    lines.push(...(rows.length === 0 ? [`  ${TITLES[dimension]}: nothing sent`] : table(rows, TITLES[dimension])));
  }
  lines.push(summary.actions.length === 0 ? "held now: nothing" : "held now:", ...summary.actions.map(describeAction));
  return lines.join("\n");
};
