// Starts a nats-server of the test's own on a free loopback port and waits until it
// answers; every test that needs a server it can configure, stop or restart goes
// through here (nats-server.ts, secure-nats.ts, cluster/nats.test.ts).
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { createConnection } from "node:net";
import { tmpdir } from "node:os";
import { delimiter, join } from "node:path";
import { findFreePort } from "./dnsmasq.ts";

const READY_TIMEOUT_MS = 10_000;
const PROBE_EVERY_MS = 50;
const STDERR_KEPT = 16_384;

export interface SpawnedNatsServer {
  readonly url: string;
  readonly port: number;
  /** Stops the server (SIGTERM, waits for it to exit); `restart` brings it back. */
  readonly stop: () => Promise<void>;
  /** Kills the server with SIGKILL (no shutdown, as a crash or a pulled plug); `restart` brings it back. */
  readonly kill: () => Promise<void>;
  /** Starts it again on the same port with the same config and arguments. */
  readonly restart: () => Promise<void>;
  /** Stops it and removes the config file it was given. */
  readonly dispose: () => Promise<void>;
}

export interface SpawnNatsServerOptions {
  /**
   * A config-file body. The server listens where the command line says (127.0.0.1 and
   * the free port; flags win over the file), so the body need not name it; a function
   * gets the port, for a config that must name it anyway.
   */
  readonly config?: string | ((port: number) => string);
  /** More command-line arguments, such as `-js -sd <dir>`. */
  readonly args?: ReadonlyArray<string>;
}

/** nats-server on PATH, or in the sbin directories PATH often lacks (as cluster/nats.ts looks). */
export const natsServerBinary = (): string => {
  const dirs = (process.env.PATH ?? "").split(delimiter).concat(["/usr/sbin", "/usr/local/sbin"]);
  const found = dirs.map((dir) => join(dir, "nats-server")).find((path) => existsSync(path));
  if (found === undefined) throw new Error("nats-server is neither on PATH nor in /usr/sbin (apt-get install nats-server)");
  return found;
};

const answers = (port: number) =>
  new Promise<boolean>((resolve) => {
    const socket = createConnection({ host: "127.0.0.1", port }, () => {
      socket.destroy();
      resolve(true);
    });
    socket.once("error", () => resolve(false));
  });

const stopChild = async (child: ChildProcess, signal: NodeJS.Signals = "SIGTERM") => {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once("exit", resolve));
  child.kill(signal);
  await exited;
};

/** Resolves once `child` answers on `port`; throws with its stderr if it exits or never answers. */
const waitUntilAnswering = async (child: ChildProcess, port: number, stderr: () => string) => {
  const deadline = Date.now() + READY_TIMEOUT_MS;
  while (child.exitCode === null && Date.now() < deadline) {
    if (await answers(port)) return;
    await new Promise((resolve) => setTimeout(resolve, PROBE_EVERY_MS));
  }
  const why = child.exitCode !== null ? `exited with code ${child.exitCode}` : `did not answer within ${READY_TIMEOUT_MS} ms`;
  await stopChild(child);
  throw new Error(`nats-server on port ${port} ${why}:\n${stderr().trim() || "(nothing on stderr)"}`);
};

export const spawnNatsServer = async (options: SpawnNatsServerOptions = {}): Promise<SpawnedNatsServer> => {
  const binary = natsServerBinary();
  const port = await findFreePort();
  const configDir = options.config === undefined ? undefined : await mkdtemp(join(tmpdir(), "tern-nats-config-"));
  const configArgs: string[] = [];
  if (configDir !== undefined && options.config !== undefined) {
    const file = join(configDir, "server.conf");
    await writeFile(file, typeof options.config === "string" ? options.config : options.config(port));
    configArgs.push("-c", file);
  }
  const args = [...configArgs, "-a", "127.0.0.1", "-p", String(port), ...(options.args ?? [])];
  let child: ChildProcess | undefined;

  const start = async () => {
    let stderr = "";
    const started = spawn(binary, args, { stdio: ["ignore", "ignore", "pipe"] });
    // Kept (its tail) only to explain a failed start.
    started.stderr!.on("data", (chunk: Buffer) => (stderr = (stderr + chunk.toString()).slice(-STDERR_KEPT)));
    child = started;
    await waitUntilAnswering(started, port, () => stderr);
  };
  const stopWith = (signal: NodeJS.Signals) => async () => {
    const running = child;
    child = undefined;
    if (running !== undefined) await stopChild(running, signal);
  };
  const stop = stopWith("SIGTERM");
  const dispose = async () => {
    await stop();
    if (configDir !== undefined) await rm(configDir, { recursive: true, force: true });
  };

  try {
    await start();
  } catch (error) {
    await dispose();
    throw error;
  }
  const restart = async () => {
    await stop();
    await start();
  };
  return { url: `nats://127.0.0.1:${port}`, port, stop, kill: stopWith("SIGKILL"), restart, dispose };
};
