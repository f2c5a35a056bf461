// `tern node [--config FILE]`: runs one node until SIGTERM/SIGINT (or until drained), then stops gracefully.
import { parseArgs } from "node:util";
import { readFile, writeFile } from "node:fs/promises";
import { ConfigError, loadConfig, parseConfig } from "./config.ts";
import { hashPassword } from "../actors/users/store.ts";
import { Cause, Effect, Exit, Fiber } from "effect";
import { runNode, type NodePorts } from "./node.ts";
import { NatsUnavailable } from "../cluster/nats.ts";
import { runQueue } from "./queue-command.ts";
import { runPools } from "./pools-command.ts";
import { runReputation } from "./reputation-command.ts";
import { runStatus } from "./status-command.ts";
import { runEvents } from "./events-command.ts";
import { runNatsConfig } from "./nats-config-command.ts";
import { runSubmit } from "./submit-command.ts";
import { runCluster } from "./cluster-command.ts";
import { runMailbox } from "./mailbox-command.ts";
import { runDrain } from "./drain-command.ts";
import { runConfig } from "./config-command.ts";
import { runSuppress } from "./suppress-command.ts";
import { StartFailure } from "./services/core.ts";

const usage = `usage: tern node [--config FILE]
       tern node drain [--config FILE] [--json] [--timeout MS] NODE_ID   (tern node drain --help)
       tern user add --config FILE ADDRESS [--home NODE]   (password on stdin)
       tern user hash                                       (password on stdin)
       tern queue [--config FILE] [--node ID] COMMAND ...    (tern queue --help)
       tern pools [--config FILE] [--node ID] [--json]       IP pools, warm-up caps and usage (tern pools --help)
       tern reputation [--config FILE] [--window 1h|24h] [--by source|sender-domain|provider] [--json]   (tern reputation --help)
       tern status [--config FILE] [--json] MESSAGE_ID        (tern status --help)
       tern events [--config FILE] [--follow] [--type T] [--tenant T] [--domain D] [--since SEQ|TIME]   (tern events --help)
       tern nats-config [--config FILE] [--listen HOST:PORT] [--store-dir DIR] [--secrets-dir DIR] [--example]
       tern submit [--config FILE] [--tenant T] [FILE | - | --from A --to B ...]   (tern submit --help)
       tern cluster status [--config FILE] [--json]                  (tern cluster --help)
       tern cluster up --nodes N [--config FILE] [--base-port P] [--data-dir D]
       tern mailbox move [--config FILE] [--json] USER NODE          (tern mailbox --help)
       tern config check FILE [--skip-ports]                         validate a config without starting
       tern suppress add|remove|list|import [--config FILE] [--scope S] ...   the suppression list (tern suppress --help)

tern node runs one Tern node. Without --config, a one-node cluster on loopback defaults.
tern node drain hands a running node's queue to the other nodes and stops it.
tern user add stores the user with an scrypt hash of the password in the config file;
tern user hash prints such a hash for a config written by other means.
tern nats-config prints a nats-server configuration with node, operator and application
users (fresh passwords) and the permissions of each, for the config's cluster.
Environment overrides: TERN_NATS_URL, TERN_DATA_DIR, TERN_NODE_ID,
TERN_SMTP_PORT, TERN_SMTPS_PORT, TERN_POP3_PORT, TERN_IMAP_PORT, TERN_IMAPS_PORT, TERN_HTTP_PORT;
NATS credentials: TERN_NATS_USER with TERN_NATS_PASSWORD, TERN_NATS_TOKEN,
TERN_NATS_NKEY_SEED, TERN_NATS_CREDS (a creds file).`;

const runNodeCommand = async (args: string[]) => {
  const { values } = parseArgs({ args, options: { config: { type: "string", short: "c" }, help: { type: "boolean", short: "h" } } });
  if (values.help) return void console.log(usage);
  const config = await loadConfig(values.config, process.env);
  const announce = (ports: NodePorts) =>
    console.error(
      `tern: node ${config.nodeId} of cluster ${config.cluster} is up: smtp ${config.listen.host}:${ports.smtp}, ` +
        `smtps ${config.listen.host}:${ports.smtps}, ` +
        `pop3 ${config.listen.host}:${ports.pop3}, imap ${config.listen.host}:${ports.imap}, imaps ${config.listen.host}:${ports.imaps}, http http://${urlHost(config.http.host)}:${ports.http}/metrics`,
    );
  // The edge of the Effect program: the node runs until a signal interrupts it, and the
  // interruption closes its scope, which is the graceful stop.
  const node = Effect.runFork(runNode(config, announce));
  const shutdown = () => void Effect.runFork(Fiber.interrupt(node));
  process.once("SIGTERM", shutdown);
  process.once("SIGINT", shutdown);
  const exit = await Effect.runPromise(Fiber.await(node));
  process.off("SIGTERM", shutdown);
  process.off("SIGINT", shutdown);
  // Stopped by a signal or drained: exit now, whatever handles (idle sockets, timers) are left.
  if (Exit.isSuccess(exit) || Cause.hasInterruptsOnly(exit.cause)) process.exit(0);
  const failure = Cause.findErrorOption(exit.cause);
  if (failure._tag === "Some") throw failure.value;
  throw new Error(Cause.pretty(exit.cause));
};

const readPassword = async (): Promise<string> => {
  let text = "";
  for await (const chunk of process.stdin) text += chunk;
  const password = text.replace(/\r?\n$/, "");
  if (password === "") throw new ConfigError("no password on standard input");
  return password;
};

const runUser = async (args: string[]) => {
  const { values, positionals } = parseArgs({ args, allowPositionals: true, options: { config: { type: "string" }, home: { type: "string" } } });
  const [action, address] = positionals;
  if (action === "hash") return void console.log(await hashPassword(await readPassword()));
  if (action !== "add" || !values.config || !address) throw new ConfigError(`usage: tern user add --config FILE ADDRESS [--home NODE]`);
  const existing = await readFile(values.config, "utf8").catch((error: NodeJS.ErrnoException) => {
    if (error.code === "ENOENT") return undefined;
    throw new ConfigError(`tern: cannot read ${values.config}: ${error.message}`);
  });
  const raw = existing === undefined ? startingConfig(address) : (JSON.parse(existing) as { users?: Array<Record<string, unknown>> });
  const users = (raw.users ?? []).filter((user) => String(user.address).toLowerCase() !== address.toLowerCase());
  users.push({ address, passwordHash: await hashPassword(await readPassword()), ...(values.home ? { home: values.home } : {}) });
  const updated = { ...raw, users };
  parseConfig(updated); // refuse to write a config the node would refuse
  await writeFile(values.config, `${JSON.stringify(updated, null, 2)}\n`);
  if (existing === undefined) {
    console.error(`tern: created ${values.config}, a development config: local domain ${domainOfAddress(address)}, NATS started by the node when none answers (nats.embedded)`);
  }
  console.error(`tern: ${address} saved in ${values.config}`);
};

const domainOfAddress = (address: string) => address.slice(address.lastIndexOf("@") + 1).toLowerCase();

/**
 * The config `user add` writes when the file does not exist yet: the user's domain is local
 * (else the node would refuse the user) and, as for `tern node` without a config, the node
 * starts its own NATS when none answers, so the file works at once on a development machine.
 * A production config sets nats.servers and leaves embedded off.
 */
const startingConfig = (address: string): { users?: Array<Record<string, unknown>> } & Record<string, unknown> => ({
  localDomains: [domainOfAddress(address)],
  nats: { embedded: true },
});

const main = async () => {
  const [command, ...rest] = process.argv.slice(2);
  if (command === "node" && rest[0] === "drain") return void (process.exitCode = await runDrain(rest.slice(1)));
  if (command === "node") return runNodeCommand(rest);
  if (command === "user") return runUser(rest);
  if (command === "queue") return void (process.exitCode = await runQueue(rest));
  if (command === "pools") return void (process.exitCode = await runPools(rest));
  if (command === "reputation") return void (process.exitCode = await runReputation(rest));
  if (command === "status") return void (process.exitCode = await runStatus(rest));
  if (command === "events") return void (process.exitCode = await runEvents(rest));
  if (command === "nats-config") return runNatsConfig(rest);
  if (command === "submit") return void (process.exitCode = await runSubmit(rest));
  if (command === "cluster") return void (process.exitCode = await runCluster(rest));
  if (command === "mailbox") return void (process.exitCode = await runMailbox(rest));
  if (command === "config") return void (process.exitCode = await runConfig(rest));
  if (command === "suppress") return void (process.exitCode = await runSuppress(rest));
  console.error(usage);
  process.exit(command === undefined || command === "--help" ? 0 : 2);
};

// lmdb-js starts each write batch with an internal write whose promise nobody holds; when
// the batch cannot commit (disk full, I/O error) that promise rejects unobserved. The
// failure already reaches the writes that matter (our commits answer 451/defer), so such
// rejections, recognised by lmdb's `commitError` property, are not fatal. Any other
// unhandled rejection is a bug: log it and exit non-zero so a supervisor restarts us.
process.on("unhandledRejection", (reason) => {
  const commitError = (reason as { commitError?: Promise<unknown> } | null)?.commitError;
  if (commitError && typeof commitError.catch === "function") {
    commitError.catch(() => undefined);
    return;
  }
  console.error("tern: unhandled rejection", reason);
  process.exit(70); // EX_SOFTWARE
});

/** A host as it appears in a URL: an IPv6 address in brackets. */
const urlHost = (host: string) => (host.includes(":") ? `[${host}]` : host);

main().catch((error) => {
  if (error instanceof ConfigError || error instanceof NatsUnavailable) {
    console.error(`tern: ${error.message}`);
    process.exit(78); // EX_CONFIG
  }
  if (error instanceof StartFailure) {
    console.error(`tern: could not start ${error.part}: ${error.detail}`);
    process.exit(1);
  }
  console.error(error);
  process.exit(1);
});
