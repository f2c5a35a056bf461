// `tern status ID`: what became of a message and each of its recipients, asked of every
// node of the cluster over NATS (the node holding the message answers). ID is the one in
// the SMTP reply `250 2.0.0 Ok: queued as ID`.
import { parseArgs } from "node:util";
import { Effect, Schema } from "effect";
import { lookupStatus } from "../actors/status/client.ts";
import { MessageId, type RecipientView, type StatusReply } from "../protocol/status.ts";
import { makeSubjects } from "../protocol/subjects.ts";
import { loadConfig } from "./config.ts";
import { connectAsOperator } from "./operator-connection.ts";
import type { Output } from "./queue-command.ts";
import { badTimeout, timeoutOption } from "./timeout-option.ts";

const statusUsage = `usage: tern status [--config FILE] [--json] [--timeout MS] MESSAGE_ID
Shows a message (as queued: "250 ... queued as MESSAGE_ID") and each recipient's state
(queued, deferred, held, delivered, bounced, expired, removed) with its attempts.
Exit status: 0 found, 1 not found on any node that answered, 2 bad usage, 69 no node answered.`;

export const runStatus = (args: string[]): Promise<number> => statusCommand(args, { out: (t) => console.log(t), err: (t) => console.error(t) });

/** Runs one `tern status`; resolves with the exit code. */
export const statusCommand = async (args: string[], io: Output): Promise<number> => {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: {
      config: { type: "string", short: "c" },
      json: { type: "boolean" },
      timeout: { type: "string" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help || positionals.length !== 1) {
    io.out(statusUsage);
    return values.help ? 0 : 2;
  }
  const messageId = positionals[0]!;
  const timeoutMs = timeoutOption(values.timeout, 5_000);
  const misuse = !Schema.is(MessageId)(messageId)
    ? `${JSON.stringify(messageId)} is not a message id (letters and digits, as in "queued as ID")`
    : timeoutMs === undefined
      ? badTimeout(values.timeout)
      : undefined;
  if (misuse !== undefined || timeoutMs === undefined) {
    io.err(`tern: ${misuse}`);
    return 2;
  }
  const config = await loadConfig(values.config, process.env);
  const nc = await connectAsOperator(config, "tern-status");
  try {
    const answer = await Effect.runPromise(Effect.result(lookupStatus(nc, makeSubjects(config.cluster), { messageId }, { timeoutMs, stallMs: 300 })));
    if (answer._tag === "Success") {
      io.out(values.json ? JSON.stringify(answer.success) : render(answer.success));
      return 0;
    }
    const failure = answer.failure;
    if (failure._tag === "NotFound") {
      io.err(`tern: message ${messageId} not found (${failure.nodesAsked} node${failure.nodesAsked === 1 ? "" : "s"} of cluster ${config.cluster} answered)`);
      return 1;
    }
    // No node answered, or one that did could not say (it may hold the message).
    io.err(`tern: status of ${messageId} unavailable in cluster ${config.cluster}: ${failure.detail}`);
    return 69; // EX_UNAVAILABLE
  } finally {
    await nc.close();
  }
};

const time = (at: number) => new Date(at).toISOString().replace(/\.\d+Z$/, "Z");

const render = (status: StatusReply): string => {
  const { message } = status;
  const labels = [
    ...(message.tags && message.tags.length > 0 ? [`tags: ${message.tags.join(", ")}`] : []),
    ...(message.metadata && Object.keys(message.metadata).length > 0
      ? [`metadata: ${Object.entries(message.metadata).map(([k, v]) => `${k}=${v}`).join(", ")}`]
      : []),
  ];
  return [
    `message ${message.id} on node ${message.node}: ${message.state}`,
    `  from <${message.sender}>, received ${time(message.receivedAt)}, ${message.size} bytes, tenant ${message.tenant}`,
    ...labels.map((l) => `  ${l}`),
    ...status.recipients.map(recipient),
  ].join("\n");
};

const recipient = (r: RecipientView): string => {
  const when =
    r.finishedAt !== undefined
      ? ` at ${time(r.finishedAt)}`
      : r.inFlight
        ? " (attempt in flight)"
        : r.nextAttemptAt !== undefined
          ? ` next attempt ${time(r.nextAttemptAt)}`
          : "";
  const head = `  ${r.recipient}: ${r.state}${r.handedOffTo !== undefined ? ` to node ${r.handedOffTo}` : ""}${when}, ${r.attempts} attempt${r.attempts === 1 ? "" : "s"}${r.reason && r.finishedAt === undefined ? `, ${r.reason}` : ""} (queue ${r.queue}, entry ${r.entry})`;
  const attempts = r.history.map((a) => {
    const hop = a.mx ? `${a.mx}[${a.ip ?? "?"}]` : (a.via ?? "?");
    return `    ${time(a.at)} ${hop} ${a.status}${a.category ? ` (${a.category})` : ""}: ${a.reply}`;
  });
  return [head, ...attempts].join("\n");
};
