// `tern node [--config FILE]`: runs one node until SIGTERM/SIGINT, then stops gracefully.
import { parseArgs } from "node:util";
import { readFile, writeFile } from "node:fs/promises";
import { ConfigError, loadConfig, parseConfig } from "./config.ts";
import { hashPassword } from "../actors/users/store.ts";
import { startNode } from "./node.ts";
import { NatsUnavailable } from "../cluster/nats.ts";
import { runQueue } from "./queue-command.ts";

const usage = `usage: tern node [--config FILE]
       tern user add --config FILE ADDRESS [--home NODE]   (password on stdin)
       tern user hash                                       (password on stdin)
       tern queue [--config FILE] [--node ID] COMMAND ...    (tern queue --help)

tern node runs one Tern node. Without --config, a one-node cluster on loopback defaults.
tern user add stores the user with an scrypt hash of the password in the config file;
tern user hash prints such a hash for a config written by other means.
Environment overrides: TERN_NATS_URL, TERN_DATA_DIR, TERN_NODE_ID,
TERN_SMTP_PORT, TERN_SMTPS_PORT, TERN_POP3_PORT, TERN_HTTP_PORT.`;

const runNode = async (args: string[]) => {
  const { values } = parseArgs({ args, options: { config: { type: "string", short: "c" }, help: { type: "boolean", short: "h" } } });
  if (values.help) return void console.log(usage);
  const config = await loadConfig(values.config, process.env);
  const node = await startNode(config);
  console.error(
    `tern: node ${config.nodeId} of cluster ${config.cluster} is up: smtp ${config.listen.host}:${node.ports.smtp}, ` +
      `smtps ${config.listen.host}:${node.ports.smtps}, ` +
      `pop3 ${config.listen.host}:${node.ports.pop3}, http http://${config.listen.host}:${node.ports.http}/metrics`,
  );
  const shutdown = () => {
    node.stop().then(
      () => process.exit(0),
      (error) => {
        console.error(`tern: error while stopping: ${String(error)}`);
        process.exit(1);
      },
    );
  };
  process.once("SIGTERM", shutdown);
  process.once("SIGINT", shutdown);
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
  const raw = JSON.parse(await readFile(values.config, "utf8").catch(() => "{}")) as { users?: Array<Record<string, unknown>> };
  const users = (raw.users ?? []).filter((user) => String(user.address).toLowerCase() !== address.toLowerCase());
  users.push({ address, passwordHash: await hashPassword(await readPassword()), ...(values.home ? { home: values.home } : {}) });
  const updated = { ...raw, users };
  parseConfig(updated); // refuse to write a config the node would refuse
  await writeFile(values.config, `${JSON.stringify(updated, null, 2)}\n`);
  console.error(`tern: ${address} saved in ${values.config}`);
};

const main = async () => {
  const [command, ...rest] = process.argv.slice(2);
  if (command === "node") return runNode(rest);
  if (command === "user") return runUser(rest);
  if (command === "queue") return void (process.exitCode = await runQueue(rest));
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

main().catch((error) => {
  if (error instanceof ConfigError || error instanceof NatsUnavailable) {
    console.error(`tern: ${error.message}`);
    process.exit(78); // EX_CONFIG
  }
  console.error(error);
  process.exit(1);
});
