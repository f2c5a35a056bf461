// `tern queue …`: queue administration of running nodes over NATS, without a restart:
// whole queues by destination or sender, or one message by the id of its `250` reply.
import { parseArgs } from "node:util";
import { Schema } from "effect";
import { askQueueAdmin, type NodeAnswer } from "../actors/queue-admin/client.ts";
import { renderResult, replyLine, type AttemptRecord } from "../protocol/delivery.ts";
import { MessageOrEntryId, type EntryActOutcome, type EntryView, type MessageAction, type QueueAdminReply, type QueueAdminRequest, type SiteBackoffView } from "../protocol/queue-admin.ts";
import { makeSubjects } from "../protocol/subjects.ts";
import { memberIds } from "./cluster-members.ts";
import { loadConfig } from "./config.ts";
import { connectAsOperator } from "./operator-connection.ts";
import { badTimeout, timeoutOption } from "./timeout-option.ts";

const queueUsage = `usage: tern queue [--config FILE] [--node ID] [--json] [--timeout MS] COMMAND
  shape [--limit N]                         entries per destination and age, like qshape (alias: summary)
  list [--domain D] [--sender S] [--limit N] [--after ENTRY_ID]
  show ID                                   a message (ID as in "250 … queued as ID") or one entry (ID.n), with its attempts
  hold ID                                   never attempted until released (kept over restarts and drains)
  release ID                                off hold, due now
  retry ID | retry [--domain D] [--sender S]          due now (no selection: all; held entries stay held)
  bounce ID | bounce (--domain D | --sender S) [--reason TEXT]   fail now, with a DSN to the sender
  delete ID | delete (--domain D | --sender S)        remove, without a DSN
  suspend DOMAIN | resume DOMAIN            hold or release a destination's queue
  sites                                     sites slowed or paused after throttling replies, and why
A local mailbox's queue is named local:<address>. Without --node every node answers.
Exit status: 0 done, 1 not found (or a node failed), 2 bad usage, 69 no node answered,
75 nothing changed (a release of a message not held, a retry of one in flight…).`;

export interface Output {
  readonly out: (text: string) => void;
  readonly err: (text: string) => void;
}

/** A command line that does not say what to do: exit 2, with the usage. */
class UsageError extends Error {}

export const runQueue = (args: string[]): Promise<number> => queueCommand(args, { out: (t) => console.log(t), err: (t) => console.error(t) });

/** Runs one `tern queue` command; resolves with the exit code. */
export const queueCommand = async (args: string[], io: Output): Promise<number> => {
  const parsed = parseQueueArgs(args);
  if (parsed instanceof UsageError) {
    io.err(`tern: ${parsed.message}\n${queueUsage}`);
    return 2;
  }
  const { values, request } = parsed;
  if (request === undefined) {
    io.out(queueUsage);
    return values.help ? 0 : 2;
  }
  const config = await loadConfig(values.config, process.env);
  const nc = await connectAsOperator(config, "tern-queue");
  try {
    const subjects = makeSubjects(config.cluster);
    const timeoutMs = Number(values.timeout ?? (request._tag === "Bounce" || request._tag === "Delete" || request._tag === "Retry" ? 120_000 : 10_000));
    const answers = await askQueueAdmin(nc, subjects, request, {
      node: values.node,
      timeoutMs,
      // Every node is asked: the member list tells when all have answered.
      members: values.node === undefined ? memberIds(nc, subjects, Math.min(timeoutMs, 2_000)) : undefined,
    }).catch((error: Error) => {
      io.err(`tern: ${values.node ? `node ${values.node}` : "no node"} answered: ${error.message}`);
      return [] as NodeAnswer[];
    });
    if (answers.length === 0) {
      io.err(`tern: no node of cluster ${config.cluster} answered`);
      return 69; // EX_UNAVAILABLE
    }
    for (const answer of answers) if (!answer.ok) io.err(`tern: node ${answer.node}: ${answer.detail}`);
    const replies = answers.flatMap((answer) => (answer.ok ? [answer.reply] : []));
    const failed = replies.length < answers.length;
    if (request._tag === "Show" || request._tag === "Act") return byId(request.id, replies, answers.length, failed, values.json === true, io);
    for (const reply of replies) io.out(values.json ? JSON.stringify(reply) : render(reply));
    return failed ? 1 : 0;
  } finally {
    await nc.close();
  }
};

/**
 * Prints what the nodes holding the message said (those holding none of it stay quiet) and
 * picks the exit status: 1 when no node holds it, 75 when one does and nothing changed.
 */
const byId = (id: string, replies: ReadonlyArray<QueueAdminReply>, asked: number, failed: boolean, json: boolean, io: Output): number => {
  const holding = replies.filter((reply) => (reply._tag === "Show" || reply._tag === "Acted") && reply.entries.length > 0);
  if (holding.length === 0) {
    io.err(`tern: no queue entry of ${id} on ${failed ? "the" : "any of the"} ${asked} node${asked === 1 ? "" : "s"} that answered${failed ? " (some failed)" : ""}; tern status ${id.replace(/\.\d+$/, "")} tells what became of it`);
    return 1;
  }
  for (const reply of holding) io.out(json ? JSON.stringify(reply) : render(reply));
  const acted = holding.flatMap((reply) => (reply._tag === "Acted" ? reply.entries : []));
  if (acted.length > 0 && acted.every((entry) => entry.outcome !== "done" && entry.outcome !== "held-after-attempt")) {
    io.err(`tern: nothing changed`);
    return 75; // EX_TEMPFAIL
  }
  return 0;
};

/** A message id (letters and digits) or an entry id (`<messageId>.<n>`). */
const isMessageOrEntryId = Schema.is(MessageOrEntryId);

const parseQueueArgs = (args: string[]) => {
  try {
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
    if (timeoutOption(values.timeout, 1) === undefined) throw new UsageError(badTimeout(values.timeout));
    return { values, request: values.help || positionals.length === 0 ? undefined : requestOf(positionals, values) };
  } catch (error) {
    // parseArgs throws TypeErrors with a code for unknown options and missing values.
    if (error instanceof UsageError || (error instanceof TypeError && "code" in error)) return new UsageError(error.message);
    throw error;
  }
};

const positiveInt = (text: string | undefined, flag: string): number | undefined => {
  if (text === undefined) return undefined;
  const n = Number(text);
  if (!Number.isInteger(n) || n < 1 || n > 10_000) throw new UsageError(`${flag} ${text}: expected a whole number from 1 to 10000`);
  return n;
};

const requestOf = (positionals: string[], values: Record<string, string | boolean | undefined>): QueueAdminRequest => {
  const [command, argument, ...extra] = positionals;
  const str = (key: string) => (typeof values[key] === "string" ? (values[key] as string) : undefined);
  const selection = { ...(str("domain") !== undefined ? { queue: str("domain")! } : {}), ...(str("sender") !== undefined ? { sender: str("sender")! } : {}) };
  const selected = selection.queue !== undefined || selection.sender !== undefined;
  if (extra.length > 0) throw new UsageError(`tern queue ${command}: one argument at most, got ${positionals.length - 1}`);
  const need = (what: string) => {
    if (!argument) throw new UsageError(`tern queue ${command} needs ${what}`);
    return argument;
  };
  /** The message or entry an action by id names; with a selection too, the command would be ambiguous. */
  const target = () => {
    const id = need("a message id (or an entry id)");
    if (!isMessageOrEntryId(id)) throw new UsageError(`${JSON.stringify(id)} is not a message id (letters and digits, as in "queued as ID") or an entry id (ID.n)`);
    if (selected) throw new UsageError(`tern queue ${command}: give an id or --domain/--sender, not both`);
    return id;
  };
  const reason = str("reason") ? { reason: str("reason")! } : {};
  switch (command) {
    case "shape":
    case "summary":
      return { _tag: "Shape", ...(positiveInt(str("limit"), "--limit") ? { limit: positiveInt(str("limit"), "--limit")! } : {}) };
    case "list":
      return { _tag: "List", ...selection, ...(positiveInt(str("limit"), "--limit") ? { limit: positiveInt(str("limit"), "--limit")! } : {}), ...(str("after") ? { after: str("after")! } : {}) };
    case "show":
      return { _tag: "Show", id: target() };
    case "hold":
    case "release":
      return { _tag: "Act", action: command, id: target() };
    case "suspend":
      return { _tag: "Suspend", queue: need("a domain") };
    case "resume":
      return { _tag: "Resume", queue: need("a domain") };
    case "retry":
      return argument !== undefined ? { _tag: "Act", action: "retry", id: target() } : { _tag: "Retry", ...selection };
    case "sites":
      return { _tag: "Sites" };
    case "bounce":
    case "delete":
      if (argument !== undefined) return { _tag: "Act", action: command, id: target(), ...(command === "bounce" ? reason : {}) };
      if (!selected) throw new UsageError(`tern queue ${command} needs a message id, --domain or --sender`);
      return command === "bounce" ? { _tag: "Bounce", ...selection, ...reason } : { _tag: "Delete", ...selection };
    default:
      throw new UsageError(`unknown queue command ${JSON.stringify(command)}`);
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
      return reply.entries.length === 0 ? `node ${reply.node}: no queue entry of ${reply.id}` : reply.entries.map((e) => detail(reply.node, e)).join("\n");
    case "Acted":
      return [
        ...reply.entries.map((e) => `node ${reply.node}: ${e.id} ${ACT_OUTCOME[e.outcome](reply.action)}`),
        ...(reply.notices > 0 ? [`node ${reply.node}: ${reply.notices} DSN${reply.notices === 1 ? "" : "s"} queued`] : []),
      ].join("\n");
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

/** What an action by id did to one entry, in words. */
const ACT_OUTCOME: Record<EntryActOutcome, (action: MessageAction) => string> = {
  done: (action) => ({ retry: "due now", bounce: "bounced", delete: "deleted", hold: "held", release: "released, due now" })[action],
  "held-after-attempt": () => "held after the attempt under way, whose transaction had begun (it finishes and is recorded)",
  "in-flight": () => "passed over: an attempt is in flight (its outcome is recorded first)",
  held: (action) => (action === "hold" ? "held already" : "on hold: release it"),
  "not-held": () => "not held",
  due: () => "due already",
};

const next = (e: EntryView) => (e.inFlight ? "in-flight" : e.heldAt !== undefined ? "held" : time(e.nextAttemptAt));

const line = (e: EntryView) => {
  const last = lastResult(e);
  const marks = `${e.suspended ? " (suspended)" : ""}${e.heldAt !== undefined ? ` (held since ${time(e.heldAt)})` : ""}`;
  return `${e.id} ${e.queue}${marks} from <${e.sender}> to ${e.recipients.join(",")} attempts=${e.attempts} next=${next(e)} reason=${e.reason}${last ? ` last="${last}"` : ""}`;
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
