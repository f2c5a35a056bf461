// `tern node [--config FILE]`: runs one node until SIGTERM/SIGINT, then stops gracefully.
import { parseArgs } from "node:util";
import { ConfigError, loadConfig } from "./config.ts";
import { startNode } from "./node.ts";
import { NatsUnavailable } from "../cluster/nats.ts";

const usage = `usage: tern node [--config FILE]

Runs one Tern node. Without --config, a one-node cluster on loopback defaults.
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

const main = async () => {
  const [command, ...rest] = process.argv.slice(2);
  if (command === "node") return runNode(rest);
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
