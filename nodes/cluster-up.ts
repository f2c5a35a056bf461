// `tern cluster up --nodes N`: N node processes of one cluster on this machine, sharing
// the configured NATS, for development and benchmarks (a node is one process on one
// core: one node per core is how a many-core machine is used). Each node gets its own
// id (`node<i>`), data dir (`<D>/node<i>`) and ports (from the base port, 10 apart),
// through the environment overrides `tern node` reads, over the same config file. The
// nodes' logs go to this command's stdout and stderr; SIGINT or SIGTERM is passed to every
// node, and the command exits once all have stopped.
import { spawn, type ChildProcess } from "node:child_process";
import { resolve } from "node:path";
import { parseArgs } from "node:util";
import { ConfigError, loadConfig } from "./config.ts";
import { installRoot, selfCommand } from "./install.ts";
import { connectAsOperator } from "./operator-connection.ts";
import type { Output } from "./queue-command.ts";

/** Ports of node i (1-based) from the base port: 10 per node, so 2525 gives node2 2535. */
const portsOf = (base: number, index: number) => {
  if (base === 0) return { smtp: 0, smtps: 0, pop3: 0, http: 0, imap: 0, imaps: 0 }; // each chosen by the OS
  const first = base + 10 * (index - 1);
  return { smtp: first, smtps: first + 1, pop3: first + 2, http: first + 3, imap: first + 4, imaps: first + 5 };
};

const MAX_PORT = 65_535;


const parseCount = (name: string, text: string | undefined, fallback: number | undefined, min: number, max: number): number => {
  const value = text === undefined ? fallback : Number(text);
  if (value === undefined || !Number.isInteger(value) || value < min || value > max) throw new ConfigError(`--${name} ${text ?? ""}: expected a whole number from ${min} to ${max}`);
  return value;
};

export const runClusterUp = async (args: string[], io: Output): Promise<number> => {
  const { values } = parseArgs({
    args,
    options: {
      nodes: { type: "string", short: "n" },
      config: { type: "string", short: "c" },
      "base-port": { type: "string" },
      "data-dir": { type: "string" },
    },
  });
  const count = parseCount("nodes", values.nodes, undefined, 1, 256);
  const configPath = values.config === undefined ? undefined : resolve(values.config);
  const config = await loadConfig(configPath, process.env);
  const base = parseCount("base-port", values["base-port"], config.listen.smtp, 0, MAX_PORT - 10 * count);
  const dataDir = resolve(values["data-dir"] ?? config.dataDir);

  // The nodes share one NATS: one embedded server per node would be N separate clusters.
  const probe = await connectAsOperator(config, "tern-cluster-up").catch((error: Error) => error);
  if (probe instanceof Error) {
    io.err(`tern: ${probe.message}; tern cluster up needs a NATS server the nodes share (nats-server -js, then TERN_NATS_URL or nats.servers)`);
    return 69; // EX_UNAVAILABLE
  }
  await probe.close();

  const children: Array<{ node: string; child: ChildProcess; exited: Promise<number> }> = [];
  for (let index = 1; index <= count; index++) {
    const node = `node${index}`;
    const ports = portsOf(base, index);
    const env = {
      ...process.env,
      TERN_NODE_ID: node,
      TERN_DATA_DIR: resolve(dataDir, node),
      TERN_SMTP_PORT: String(ports.smtp),
      TERN_SMTPS_PORT: String(ports.smtps),
      TERN_POP3_PORT: String(ports.pop3),
      TERN_HTTP_PORT: String(ports.http),
      TERN_IMAP_PORT: String(ports.imap),
      TERN_IMAPS_PORT: String(ports.imaps),
    };
    const self = selfCommand(); // this same tern: the bundle, or the sources under tsx
    const child = spawn(self.command, [...self.args, "node", ...(configPath ? ["--config", configPath] : [])], {
      cwd: installRoot,
      env,
      stdio: ["ignore", "inherit", "inherit"],
    });
    const exited = new Promise<number>((done) =>
      child.once("exit", (code, signal) => {
        io.err(`tern: ${node} exited (${signal ?? code})`);
        done(code ?? 1);
      }));
    children.push({ node, child, exited });
    io.err(`tern: starting ${node} of cluster ${config.cluster}: data ${env.TERN_DATA_DIR}, ` +
      (base === 0 ? "ports chosen by the OS" : `smtp ${ports.smtp}, smtps ${ports.smtps}, pop3 ${ports.pop3}, http ${ports.http}, imap ${ports.imap}, imaps ${ports.imaps}`));
  }

  const stop = (signal: NodeJS.Signals) => () => {
    io.err(`tern: ${signal}: stopping ${count} node${count === 1 ? "" : "s"}`);
    for (const { child } of children) if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
  };
  const onTerm = stop("SIGTERM");
  const onInt = stop("SIGINT");
  process.on("SIGTERM", onTerm);
  process.on("SIGINT", onInt);
  const codes = await Promise.all(children.map((c) => c.exited));
  process.off("SIGTERM", onTerm);
  process.off("SIGINT", onInt);
  return codes.every((code) => code === 0) ? 0 : 1;
};
