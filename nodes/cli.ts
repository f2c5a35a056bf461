// The `tern` command line. Each command lives in a module of its own, loaded only when it
// is asked for: `tern queue list` starts without loading the node (or, in the bundle, its
// chunks), so operator commands answer in a fraction of a second.
import { ConfigError } from "./config.ts";
import { NatsUnavailable } from "../cluster/nats.ts";

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

/** A command: resolves with its exit status (undefined: 0). */
type Command = (args: string[]) => Promise<number | void>;

const commands: Readonly<Record<string, () => Promise<Command>>> = {
  node: async () => (await import("./node-command.ts")).runNodeCommand,
  "node drain": async () => (await import("./drain-command.ts")).runDrain,
  user: async () => (await import("./user-command.ts")).runUser,
  queue: async () => (await import("./queue-command.ts")).runQueue,
  pools: async () => (await import("./pools-command.ts")).runPools,
  reputation: async () => (await import("./reputation-command.ts")).runReputation,
  status: async () => (await import("./status-command.ts")).runStatus,
  events: async () => (await import("./events-command.ts")).runEvents,
  "nats-config": async () => (await import("./nats-config-command.ts")).runNatsConfig,
  submit: async () => (await import("./submit-command.ts")).runSubmit,
  cluster: async () => (await import("./cluster-command.ts")).runCluster,
  mailbox: async () => (await import("./mailbox-command.ts")).runMailbox,
  config: async () => (await import("./config-command.ts")).runConfig,
  suppress: async () => (await import("./suppress-command.ts")).runSuppress,
};

const main = async () => {
  const [command, ...rest] = process.argv.slice(2);
  const drain = command === "node" && rest[0] === "drain";
  const name = drain ? "node drain" : command;
  const load = name !== undefined && Object.hasOwn(commands, name) ? commands[name] : undefined;
  if (!load) {
    console.error(usage);
    process.exit(command === undefined || command === "--help" || command === "-h" ? 0 : 2);
  }
  const code = await (await load())(drain ? rest.slice(1) : rest);
  process.exitCode = code ?? 0;
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

main().catch((error) => {
  if (error instanceof ConfigError || error instanceof NatsUnavailable) {
    console.error(`tern: ${error.message}`);
    process.exit(78); // EX_CONFIG
  }
  console.error(error);
  process.exit(1);
});
