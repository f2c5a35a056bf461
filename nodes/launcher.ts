// Runs real Tern node processes, for end-to-end tests and benchmarks (both import it from
// here, neither from the other): each with its own data dir, loopback ports chosen by the
// OS, and a cluster name unique to the run, on the machine's NATS (127.0.0.1:4222) unless
// told otherwise.
import { spawn } from "node:child_process";
import { mkdir, mkdtemp, writeFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { randomBytes } from "node:crypto";

export const uniqueCluster = () => `t${randomBytes(5).toString("hex")}`;

export const projectRoot = new URL("..", import.meta.url).pathname;

export interface TernNode {
  readonly pid: number;
  readonly ports: { smtp: number; smtps: number; pop3: number; imap: number; imaps: number; http: number };
  readonly dataDir: string;
  readonly logs: () => string;
  /** Resolves with the first log line whose event matches (and whose fields match `where`). */
  readonly waitForEvent: (event: string, where?: Record<string, unknown>, timeoutMs?: number) => Promise<Record<string, unknown>>;
  readonly events: (event: string) => Array<Record<string, unknown>>;
  readonly kill: (signal: NodeJS.Signals) => Promise<void>;
  /** Signals the node's whole process group (started with `ownGroup`), as Ctrl-C in a terminal does; resolves when it ended. */
  readonly signalGroup: (signal: NodeJS.Signals) => Promise<void>;
  /** Resolves when the process ends on its own (a drained node stops), with its exit code. */
  readonly exited: () => Promise<number | null>;
}

/**
 * How tests and benchmarks run Tern by default: the compiled bundle (`npm test` builds it
 * first when a source is newer), as `npm start` and production do, and it starts in a
 * fraction of tsx's time and CPU. TERN_RUN_SOURCES=1 runs the TypeScript sources under tsx
 * instead, with no build (for a quick edit-and-test loop, or profiles that name .ts lines).
 */
const defaultVia = (): "sources" | "bundle" => (process.env.TERN_RUN_SOURCES === "1" ? "sources" : "bundle");

/** The node arguments that run the `tern` command line from the bundle or from the sources. */
const cliEntry = (via: "sources" | "bundle"): string[] =>
  via === "bundle" ? [join(projectRoot, "dist/cli.js")] : ["--import", "tsx", join(projectRoot, "nodes/cli.ts")];

/** The node arguments that run the `tern` command line the default way: `[...ternCli, "queue", "list"]`. */
export const ternCli: ReadonlyArray<string> = cliEntry(defaultVia());

export const makeDataDir = () => mkdtemp(join(tmpdir(), "tern-test-"));

export const removeDataDir = (dir: string) => rm(dir, { recursive: true, force: true });

export interface StartOptions {
  /**
   * What runs the node: the bundle (`node dist/cli.js`, built by scripts/build.mjs; the
   * default unless TERN_RUN_SOURCES=1), the TypeScript sources under tsx, or `npm start`
   * (which builds the bundle when stale and runs it).
   */
  readonly via?: "sources" | "bundle" | "npm-start";
  /** In a process group of its own, as a terminal starts a command, so `signalGroup` reaches all of it. */
  readonly ownGroup?: boolean;
}

/** The command line that runs `tern node --config <configPath>`. */
const nodeCommand = (via: NonNullable<StartOptions["via"]>, configPath: string): { command: string; args: string[] } => {
  if (via === "npm-start") return { command: "npm", args: ["start", "--silent", "--", "--config", configPath] };
  // TERN_NODE_EXEC_ARGV passes extra flags to node, e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof".
  const extra = (process.env.TERN_NODE_EXEC_ARGV ?? "").split(" ").filter(Boolean);
  return { command: process.execPath, args: [...extra, ...cliEntry(via), "node", "--config", configPath] };
};

/** Starts `tern node --config <file>` and waits for its node.started line. */
export const startTernNode = async (config: Record<string, unknown> & { dataDir: string }, options: StartOptions = {}): Promise<TernNode> => {
  await mkdir(config.dataDir, { recursive: true });
  const configPath = join(config.dataDir, `config-${String(config.nodeId ?? "node")}.json`);
  const full = {
    nats: { servers: ["nats://127.0.0.1:4222"], embedded: false },
    // JetStream reserves a stream's max bytes on disk: a small events stream per run, so the
    // streams runs leave on the shared server never use up its storage.
    events: { maxBytes: 16 * 1024 * 1024, maxAgeSec: 3600 },
    ...config,
    listen: { host: "127.0.0.1", smtp: 0, smtps: 0, pop3: 0, imap: 0, imaps: 0, http: 0, ...(config.listen as object | undefined) },
  };
  await writeFile(configPath, JSON.stringify(full, null, 2));
  const { command, args } = nodeCommand(options.via ?? defaultVia(), configPath);
  const child = spawn(command, args, { cwd: projectRoot, stdio: ["ignore", "pipe", "pipe"], detached: options.ownGroup === true });
  let output = "";
  const parsed: Array<Record<string, unknown>> = [];
  const waiters = new Set<() => void>();
  let partial = "";
  child.stdout!.on("data", (chunk: Buffer) => {
    output += chunk.toString();
    partial += chunk.toString();
    const lines = partial.split("\n");
    partial = lines.pop() ?? "";
    for (const line of lines) {
      try {
        parsed.push(JSON.parse(line));
      } catch {
        // not a log line
      }
    }
    waiters.forEach((wake) => wake());
  });
  child.stderr!.on("data", (chunk: Buffer) => (output += chunk.toString()));
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  child.once("exit", () => waiters.forEach((wake) => wake())); // waiters learn the node is gone

  const matches = (line: Record<string, unknown>, event: string, where: Record<string, unknown>) =>
    line.event === event && Object.entries(where).every(([key, value]) => line[key] === value);

  const waitForEvent: TernNode["waitForEvent"] = (event, where = {}, timeoutMs = 20_000) =>
    new Promise((resolve, reject) => {
      const check = () => {
        const found = parsed.find((line) => matches(line, event, where));
        if (found) {
          cleanup();
          resolve(found);
        } else if (child.exitCode !== null || child.signalCode !== null) {
          cleanup();
          reject(new Error(`node exited (${child.exitCode ?? child.signalCode}) before ${event}:\n${output}`));
        }
      };
      const timer = setTimeout(() => {
        cleanup();
        reject(new Error(`timed out waiting for ${event} ${JSON.stringify(where)}:\n${output.slice(-4000)}`));
      }, timeoutMs);
      const cleanup = () => {
        clearTimeout(timer);
        waiters.delete(check);
      };
      waiters.add(check);
      check();
    });

  const started = await waitForEvent("node.started");
  return {
    pid: child.pid!,
    ports: { smtp: Number(started.smtp), smtps: Number(started.smtps), pop3: Number(started.pop3), imap: Number(started.imap), imaps: Number(started.imaps), http: Number(started.http) },
    dataDir: config.dataDir,
    logs: () => output,
    waitForEvent,
    events: (event) => parsed.filter((line) => line.event === event),
    kill: async (signal) => {
      if (child.exitCode === null) child.kill(signal);
      await exited;
    },
    signalGroup: async (signal) => {
      if (options.ownGroup !== true) throw new Error("signalGroup needs a node started with ownGroup");
      if (child.exitCode === null && child.signalCode === null) process.kill(-child.pid!, signal);
      await exited;
    },
    exited: () => exited,
  };
};

/** Reads one gauge or counter (summed over label sets) from a node's /metrics. */
export const readMetric = async (node: TernNode, name: string, labelFilter = ""): Promise<number> => {
  const text = await (await fetch(`http://127.0.0.1:${node.ports.http}/metrics`)).text();
  let sum = 0;
  for (const line of text.split("\n")) {
    if (line.startsWith(`${name}{`) || line.startsWith(`${name} `)) {
      if (labelFilter && !line.includes(labelFilter)) continue;
      sum += Number(line.slice(line.lastIndexOf(" ") + 1));
    }
  }
  return sum;
};
