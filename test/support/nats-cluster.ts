// A three-server NATS cluster of the test's own, on free loopback ports: routes between
// every pair, JetStream on each with its own store dir, one cluster name. A test can kill
// one server (SIGKILL, as a crash) and restart it on the same ports with its store intact.
// Resolves once JetStream has a meta leader, so streams with 3 replicas can be created.
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { randomBytes } from "node:crypto";
import { connect } from "@nats-io/transport-node";
import { findFreePort } from "./dnsmasq.ts";
import { spawnNatsServer, type SpawnedNatsServer } from "./spawn-nats-server.ts";

const CLUSTER_READY_TIMEOUT_MS = 20_000;

export interface ClusterNatsServer {
  /** server_name, as `nc.info.server_name` and `nats-server` logs name it. */
  readonly name: string;
  readonly url: string;
  readonly port: number;
  readonly storeDir: string;
  /** SIGKILL: no shutdown, no leadership hand-off. */
  readonly kill: () => Promise<void>;
  /** Starts it again on the same ports with its store as the kill left it. */
  readonly restart: () => Promise<void>;
}

export interface TestNatsCluster {
  readonly name: string;
  readonly servers: ReadonlyArray<ClusterNatsServer>;
  /** Every client URL, for a node's `nats.servers`. */
  readonly urls: ReadonlyArray<string>;
  /** The server a client URL (as `nc.getServer()` reports it, "127.0.0.1:port") belongs to. */
  readonly serverAt: (address: string) => ClusterNatsServer | undefined;
  /** Stops every server and removes their files. */
  readonly dispose: () => Promise<void>;
}

const serverConfig = (name: string, cluster: string, storeDir: string, routePort: number, routePorts: ReadonlyArray<number>) => `
server_name: ${name}
jetstream { store_dir: "${storeDir}" }
cluster {
  name: ${cluster}
  listen: 127.0.0.1:${routePort}
  routes: [${routePorts.filter((port) => port !== routePort).map((port) => `nats-route://127.0.0.1:${port}`).join(", ")}]
}
`;

/** Waits until the cluster's JetStream answers (a meta leader was elected). */
const waitForJetStream = async (urls: ReadonlyArray<string>) => {
  const deadline = Date.now() + CLUSTER_READY_TIMEOUT_MS;
  const nc = await connect({ servers: [...urls] });
  try {
    let last = "";
    while (Date.now() < deadline) {
      const reply = await nc.request("$JS.API.INFO", "", { timeout: 1_000 }).then((m) => m.json<{ error?: { description: string } }>(), (error: unknown) => ({ error: { description: String(error) } }));
      if (reply.error === undefined) return;
      last = reply.error.description;
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
    throw new Error(`the NATS cluster's JetStream never became ready: ${last}`);
  } finally {
    await nc.close();
  }
};

export const startNatsCluster = async (size = 3): Promise<TestNatsCluster> => {
  const dir = await mkdtemp(join(tmpdir(), "tern-nats-cluster-"));
  const name = `c${randomBytes(4).toString("hex")}`;
  const routePorts: number[] = [];
  // Distinct ports: findFreePort may hand out the same port twice while nothing listens on it yet.
  while (routePorts.length < size) {
    const port = await findFreePort();
    if (!routePorts.includes(port)) routePorts.push(port);
  }
  const spawned: SpawnedNatsServer[] = [];
  const dispose = async () => {
    await Promise.all(spawned.map((server) => server.dispose()));
    await rm(dir, { recursive: true, force: true });
  };
  try {
    const servers = await Promise.all(
      routePorts.map(async (routePort, index) => {
        const serverName = `${name}-n${index + 1}`;
        const storeDir = join(dir, serverName);
        const server = await spawnNatsServer({ config: serverConfig(serverName, name, storeDir, routePort, routePorts) });
        spawned.push(server);
        return { name: serverName, url: server.url, port: server.port, storeDir, kill: server.kill, restart: server.restart };
      }),
    );
    const urls = servers.map((server) => server.url);
    await waitForJetStream(urls);
    return {
      name,
      servers,
      urls,
      serverAt: (address) => servers.find((server) => address.endsWith(`:${server.port}`)),
      dispose,
    };
  } catch (error) {
    await dispose();
    throw error;
  }
};
