// `tern queue …`: queue administration of running nodes over NATS, without a restart.
import { parseArgs } from "node:util";
import { askQueueAdmin, type NodeAnswer } from "../actors/queue-admin/client.ts";
import { renderResult, replyLine, type AttemptRecord } from "../protocol/delivery.ts";
import type { EntryView, QueueAdminReply, QueueAdminRequest, SiteBackoffView } from "../protocol/queue-admin.ts";
import { makeSubjects } from "../protocol/subjects.ts";
import { ConfigError, loadConfig } from "./config.ts";
import { connectAsOperator } from "./operator-connection.ts";

const queueUsage = `usage: tern queue [--config FILE] [--node ID] [--json] [--timeout MS] COMMAND
  shape [--limit N]                         entries per destination and age, like qshape (alias: summary)
  list [--domain D] [--sender S] [--limit N] [--after ENTRY_ID]
  show ENTRY_ID                             one entry with its attempts
  suspend DOMAIN | resume DOMAIN            hold or release a destination's queue
  retry [--domain D] [--sender S]           make entries due now (no selection: all)
  bounce (--domain D | --sender S) [--reason TEXT]   fail them now, with a DSN to the sender
  delete (--domain D | --sender S)          remove them, without a DSN
  sites                                     sites slowed or paused after throttling replies, and why
A local mailbox's queue is named local:<address>. Without --node every node answers.`;

export interface Output {
  readonly out: (text: string) => void;
  readonly err: (text: string) => void;
}

export const runQueue = (args: string[]): Promise<number> => queueCommand(args, { out: (t) => console.log(t), err: (t) => console.error(t) });

/** Runs one `tern queue` command; resolves with the exit code. */
export const queueCommand = async (args: string[], io: Output): Promise<number> => {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: {
      config: { type: "string", short: "c" },
      node: { type: "string" },
      json: { type: "boolean" },
      timeout: { type: "string" },
      domain: { type: "string" },
      sender: { type: "string" },
      limit: { type: "string" },
      after: { type: "string" },
      reason: { type: "string" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help || positionals.length === 0) {
    io.out(queueUsage);
    return values.help ? 0 : 2;
  }
  const request = requestOf(positionals, values);
  const config = await loadConfig(values.config, process.env);
  const nc = await connectAsOperator(config, "tern-queue");
  try {
    const answers = await askQueueAdmin(nc, makeSubjects(config.cluster), request, {
      node: values.node,
      timeoutMs: Number(values.timeout ?? (request._tag === "Bounce" || request._tag === "Delete" || request._tag === "Retry" ? 120_000 : 10_000)),
    }).catch((error: Error) => {
      io.err(`tern: ${values.node ? `node ${values.node}` : "no node"} answered: ${error.message}`);
      return [] as NodeAnswer[];
    });
    if (answers.length === 0) {
      io.err(`tern: no node of cluster ${config.cluster} answered`);
      return 69; // EX_UNAVAILABLE
    }
    for (const answer of answers) {
      if (!answer.ok) io.err(`tern: node ${answer.node}: ${answer.detail}`);
      else io.out(values.json ? JSON.stringify(answer.reply) : render(answer.reply));
    }
    return answers.every((a) => a.ok) ? 0 : 1;
  } finally {
    await nc.close();
  }
};

const positiveInt = (text: string | undefined, flag: string): number | undefined => {
  if (text === undefined) return undefined;
  const n = Number(text);
  if (!Number.isInteger(n) || n < 1 || n > 10_000) throw new ConfigError(`${flag} ${text}: expected a whole number from 1 to 10000`);
  return n;
};

const requestOf = (positionals: string[], values: Record<string, string | boolean | undefined>): QueueAdminRequest => {
  const [command, argument] = positionals;
  const str = (key: string) => (typeof values[key] === "string" ? (values[key] as string) : undefined);
  const selection = { ...(str("domain") !== undefined ? { queue: str("domain")! } : {}), ...(str("sender") !== undefined ? { sender: str("sender")! } : {}) };
  const need = (what: string) => {
    if (!argument) throw new ConfigError(`tern queue ${command} needs ${what}\n${queueUsage}`);
    return argument;
  };
  switch (command) {
    case "shape":
    case "summary":
      return { _tag: "Shape", ...(positiveInt(str("limit"), "--limit") ? { limit: positiveInt(str("limit"), "--limit")! } : {}) };
    case "list":
      return { _tag: "List", ...selection, ...(positiveInt(str("limit"), "--limit") ? { limit: positiveInt(str("limit"), "--limit")! } : {}), ...(str("after") ? { after: str("after")! } : {}) };
    case "show":
      return { _tag: "Show", id: need("an entry id") };
    case "suspend":
      return { _tag: "Suspend", queue: need("a domain") };
    case "resume":
      return { _tag: "Resume", queue: need("a domain") };
    case "retry":
      return { _tag: "Retry", ...selection };
    case "sites":
      return { _tag: "Sites" };
    case "bounce":
    case "delete":
      if (selection.queue === undefined && selection.sender === undefined) throw new ConfigError(`tern queue ${command} needs --domain or --sender`);
      return command === "bounce" ? { _tag: "Bounce", ...selection, ...(str("reason") ? { reason: str("reason")! } : {}) } : { _tag: "Delete", ...selection };
    default:
      throw new ConfigError(`unknown queue command ${JSON.stringify(command)}\n${queueUsage}`);
  }
};

const time = (at: number) => new Date(at).toISOString().replace(/\.\d+Z$/, "Z");

const render = (reply: QueueAdminReply): string => {
  switch (reply._tag) {
    case "Shape": {
      const heads = ["T", ...reply.bucketsMinutes.map(String), `${reply.bucketsMinutes.at(-1)}+`];
      const width = Math.max(12, ...reply.queues.map((q) => q.queue.length + (q.suspended ? 12 : 0)));
      const cell = Math.max(6, String(reply.total.entries).length + 1);
      const row = (name: string, cells: ReadonlyArray<number | string>) => `${name.padStart(width)} ${cells.map((c) => String(c).padStart(cell)).join("")}`;
      const held = reply.held.map((h) => `${h.queue} until ${time(h.until)}`);
      return [
        `node ${reply.node}: ${reply.total.entries} entries in ${reply.queueCount} queues, ${reply.inFlight} in flight (age buckets in minutes)`,
        row("", heads),
        row("TOTAL", [reply.total.entries, ...reply.total.buckets]),
        ...reply.queues.map((q) => row(`${q.suspended ? "(suspended) " : ""}${q.queue}`, [q.entries, ...q.buckets])),
        ...(held.length > 0 ? [`held after trouble: ${held.join(", ")}`] : []),
        ...(reply.backedOff ?? []).map((site) => `backed off: ${backoffLine(site)}`),
      ].join("\n");
    }
    case "Sites":
      return reply.sites.length === 0
        ? `node ${reply.node}: no site backed off`
        : [`node ${reply.node}: ${reply.sites.length} site${reply.sites.length === 1 ? "" : "s"} backed off`, ...reply.sites.map((site) => `  ${backoffLine(site)}`)].join("\n");
    case "List":
      return reply.entries.length === 0 ? `node ${reply.node}: no entries` : reply.entries.map((e) => `${reply.node} ${line(e)}`).join("\n");
    case "Show":
      return reply.entry ? detail(reply.node, reply.entry) : `node ${reply.node}: no such entry`;
    case "Suspended":
      return `node ${reply.node}: ${reply.queue} ${reply.suspended ? "suspended" : "resumed"}`;
    case "Changed":
      return `node ${reply.node}: ${reply.entries} entries (${reply.recipients} recipients) changed, ${reply.skipped} in flight passed over${reply.notices ? `, ${reply.notices} DSNs queued` : ""}`;
  }
};

/** "mx.example.org@203.0.113.10 paused until …, level 1 (2 connections, 1000 ms apart) …; rule gmail-unusual-rate: 421 4.7.28 …". */
const backoffLine = (site: SiteBackoffView) =>
  [
    `${site.site}@${site.source ?? "default"}`,
    site.pausedUntil !== undefined ? `paused until ${time(site.pausedUntil)},` : "slowed,",
    `level ${site.level} (${site.connections} connection${site.connections === 1 ? "" : "s"}, ${site.gapMs} ms apart)`,
    `since ${time(site.since)}${site.nextStepAt !== undefined ? `, next step ${time(site.nextStepAt)}` : ""};`,
    `rule ${site.rule ?? "?"}${site.reply ? `: ${replyLine(site.reply)}` : ""}`,
  ].join(" ");

const line = (e: EntryView) => {
  const last = lastResult(e);
  return `${e.id} ${e.queue}${e.suspended ? " (suspended)" : ""} from <${e.sender}> to ${e.recipients.join(",")} attempts=${e.attempts} next=${e.inFlight ? "in-flight" : time(e.nextAttemptAt)} reason=${e.reason}${last ? ` last="${last}"` : ""}`;
};

const hop = (a: AttemptRecord) => (a.mx ? `${a.mx}[${a.ip}]` : (a.via ?? ""));

/** What the last attempt got for a recipient still waiting: "mx.example.org[192.0.2.1]: 451 4.3.0 try later". */
const lastResult = (e: EntryView): string | undefined => {
  const attempt = e.history?.at(-1);
  const waiting = attempt?.results.find((r) => r.status !== "delivered") ?? attempt?.results[0];
  return attempt && waiting ? `${hop(attempt)}: ${renderResult(waiting.result)}` : undefined;
};

const detail = (node: string, e: EntryView) =>
  [
    `node ${node}: ${line(e)}`,
    `  queued ${time(e.createdAt)}`,
    ...(e.history ?? []).map(
      (a) =>
        `  ${time(a.at)} ${hop(a)}${a.requeued ? ` requeued: ${a.requeued}` : ""}\n` +
        a.results.map((r) => `    ${r.rcpt} ${r.status}${r.category ? ` (${r.category})` : ""}: ${renderResult(r.result)}`).join("\n"),
    ),
  ].join("\n");
