// Connecting a node to NATS. The embedded default: when nothing answers at the
// configured URL and `nats-server` is on PATH, start one as a child with JetStream
// under the data dir, and stop it when the node stops.
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdir } from "node:fs/promises";
import { delimiter, join } from "node:path";
import { connect, type NatsConnection } from "@nats-io/transport-node";

export interface NatsLink {
  readonly nc: NatsConnection;
  /** Set when this node started its own nats-server. */
  readonly embedded: ChildProcess | undefined;
  readonly close: () => Promise<void>;
}

export class NatsUnavailable extends Error {
  override readonly name = "NatsUnavailable";
}

const tryConnect = (servers: ReadonlyArray<string>, name: string) =>
  connect({ servers: [...servers], name, timeout: 1500, maxReconnectAttempts: -1, reconnectTimeWait: 500 }).catch(
    () => undefined,
  );

const findOnPath = (program: string): string | undefined => {
  const candidates = (process.env.PATH ?? "").split(delimiter).concat(["/usr/sbin", "/usr/local/sbin"]);
  return candidates.map((dir) => join(dir, program)).find((path) => existsSync(path));
};

export const linkToNats = async (options: {
  readonly servers: ReadonlyArray<string>;
  readonly embedded: boolean;
  readonly dataDir: string;
  readonly clientName: string;
}): Promise<NatsLink> => {
  const direct = await tryConnect(options.servers, options.clientName);
  if (direct) return { nc: direct, embedded: undefined, close: () => direct.drain() };

  const binary = options.embedded ? findOnPath("nats-server") : undefined;
  if (!binary) {
    throw new NatsUnavailable(
      `no NATS server answers at ${options.servers.join(", ")}; install one (apt-get install nats-server) or set TERN_NATS_URL`,
    );
  }
  const url = new URL(options.servers[0] ?? "nats://127.0.0.1:4222");
  const storeDir = join(options.dataDir, "nats");
  await mkdir(storeDir, { recursive: true });
  const child = spawn(binary, ["-a", url.hostname, "-p", url.port || "4222", "-js", "-sd", storeDir], {
    stdio: "ignore",
  });
  const nc = await waitForNats(options.servers, options.clientName, child);
  return {
    nc,
    embedded: child,
    close: async () => {
      // Stop the child even when the connection is already gone and cannot drain.
      await nc.drain().catch(() => undefined);
      child.kill("SIGTERM");
    },
  };
};

const waitForNats = async (servers: ReadonlyArray<string>, name: string, child: ChildProcess) => {
  for (let attempt = 0; attempt < 40; attempt++) {
    if (child.exitCode !== null) break;
    const nc = await tryConnect(servers, name);
    if (nc) return nc;
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
  child.kill("SIGKILL");
  throw new NatsUnavailable(`started nats-server but it never answered at ${servers.join(", ")}`);
};
