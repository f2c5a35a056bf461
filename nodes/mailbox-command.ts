// `tern mailbox move USER NODE`: asks node NODE to take USER's mailbox from the node that
// holds it now, while mail keeps arriving (actors/mailbox/move.ts); resolves when NODE
// has committed its copy and the ownership KV names it.
import { parseArgs } from "node:util";
import { Effect } from "effect";
import { callEndpoint } from "../actors/runtime/remote.ts";
import { moveEndpoint, type MoveReply } from "../protocol/mailbox-move.ts";
import { isSafeToken, makeSubjects } from "../protocol/subjects.ts";
import { loadConfig } from "./config.ts";
import { connectAsOperator } from "./operator-connection.ts";
import type { Output } from "./queue-command.ts";
import { badTimeout, timeoutOption } from "./timeout-option.ts";

const mailboxUsage = `usage: tern mailbox move [--config FILE] [--json] [--timeout MS] USER NODE
move copies USER's mailbox (every folder, message, flag, UIDVALIDITY and UIDNEXT, so
POP3 UIDLs stay the same) from the node holding it to NODE while mail keeps arriving:
the source refuses writes only for the final copy (deliveries wait in the senders'
queues, POP3 answers [SYS/TEMP]), then NODE owns the mailbox and the source's copy goes.
Exit status: 0 moved, 1 refused (unknown user, already on NODE, a move under way) or
failed (nothing changed), 2 bad usage, 69 NODE did not answer (unknown or down).`;

export const runMailbox = (args: string[]): Promise<number> => mailboxCommand(args, { out: (t) => console.log(t), err: (t) => console.error(t) });

const mailboxCommand = async (args: string[], io: Output): Promise<number> => {
  const [action, ...rest] = args;
  if (action === "move") return mailboxMove(rest, io);
  io.out(mailboxUsage);
  return action === undefined || action === "--help" || action === "-h" ? 0 : 2;
};

const mailboxMove = async (args: string[], io: Output): Promise<number> => {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: { config: { type: "string", short: "c" }, json: { type: "boolean" }, timeout: { type: "string" }, help: { type: "boolean", short: "h" } },
  });
  if (values.help) {
    io.out(mailboxUsage);
    return 0;
  }
  const [user, node] = positionals;
  if (user === undefined || node === undefined || positionals.length !== 2) {
    io.err(mailboxUsage);
    return 2;
  }
  if (!isSafeToken(node)) {
    io.err(`tern: ${JSON.stringify(node)} is not a node id (letters, digits, '-' and '_' only)`);
    return 2;
  }
  // A big mailbox takes a while to copy; the move goes on if we stop waiting.
  const timeoutMs = timeoutOption(values.timeout, 600_000);
  if (timeoutMs === undefined) {
    io.err(`tern: ${badTimeout(values.timeout)}`);
    return 2;
  }
  const config = await loadConfig(values.config, process.env);
  const nc = await connectAsOperator(config, "tern-mailbox");
  try {
    const subject = makeSubjects(config.cluster).mailboxMoveAdmin(node);
    const answer = await Effect.runPromise(Effect.result(callEndpoint(nc, subject, moveEndpoint, { user }, { timeoutMs })));
    if (answer._tag === "Success") {
      io.out(values.json ? JSON.stringify(answer.success.value) : render(answer.success.value));
      return 0;
    }
    const failure = answer.failure;
    switch (failure._tag) {
      case "MoveFailed":
        io.err(`tern: mailbox ${failure.user} not moved (${failure.code}): ${failure.detail}`);
        return 1;
      case "RemoteUnavailable":
        io.err(`tern: node ${node} of cluster ${config.cluster} did not answer (no such node, or it is down): ${failure.detail}`);
        return 69; // EX_UNAVAILABLE
      case "MalformedMessage":
        io.err(`tern: node ${node} answered something unexpected: ${failure.detail}`);
        return 1;
    }
  } finally {
    await nc.close();
  }
};

const render = (reply: MoveReply): string =>
  reply.from === ""
    ? `${reply.user}: had no mailbox yet; node ${reply.to} holds it now`
    : `${reply.user}: moved from node ${reply.from} to node ${reply.to}: ${reply.messages} message${reply.messages === 1 ? "" : "s"} ` +
      `(${reply.bytes} bytes) in ${reply.folders} folder${reply.folders === 1 ? "" : "s"}; writes waited ${reply.frozenMs} ms`;
