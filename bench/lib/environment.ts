// Everything a benchmark run needs, started and stopped by the harness itself:
// DNS (dnsmasq) pointing the bench domain at the sink, the sink process, and N Tern
// nodes as separate processes on one NATS, each with its own data dir and fixed ports.
import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { startDnsmasq, findFreePort, type RunningDnsmasq } from "../../test/support/dnsmasq.ts";
import { startSinkProcess, type SinkOptions, type SinkProcess } from "./sink.ts";
import { makeDataDir, removeDataDir, startTernNode, uniqueCluster, type TernNode } from "../../nodes/launcher.ts";

export const REMOTE_DOMAIN = "remote.bench";
export const LOCAL_DOMAIN = "local.bench";
/** The API tenant owning the load's sender domain (load.tern), so the NATS API takes its mail. */
export const BENCH_TENANT = "bench";

export interface EnvironmentOptions {
  readonly nodes: number;
  readonly sink: Omit<SinkOptions, "port"> & { readonly port?: number };
  readonly localUsers: number;
  /** Extra `delivery` config for every node. */
  readonly delivery?: Record<string, unknown>;
}

export interface Environment {
  /** The cluster name the nodes use on NATS (API clients need it). */
  readonly cluster: string;
  readonly dns: RunningDnsmasq;
  readonly sink: SinkProcess;
  readonly nodes: TernNode[];
  /** kill -9 node i, then start it again on the same data dir and ports. */
  readonly crashAndRestart: (i: number) => Promise<TernNode>;
  /**
   * Nodes that exited during the run without the harness asking (a crash, a fatal error),
   * each described with its exit status, when, and the end of its log: a run that lost mail
   * says why.
   */
  readonly unexpectedExits: () => ReadonlyArray<string>;
  readonly stop: () => Promise<void>;
}

/** Everything started and not yet stopped, so Ctrl-C can stop it all. */
const running = new Set<() => Promise<void>>();

export const stopEverything = async () => {
  await Promise.all([...running].map((stop) => stop()));
};

export const whileRunning = <T extends { stop: () => Promise<void> }>(thing: T): T => {
  const stop = thing.stop;
  const tracked = { ...thing, stop: async () => {
    running.delete(tracked.stop);
    await stop();
  } };
  running.add(tracked.stop);
  return tracked;
};

/** SIGTERM, and SIGKILL if the node has not stopped within 10 s. */
const stopGracefully = async (node: TernNode) => {
  const killer = setTimeout(() => void node.kill("SIGKILL"), 10_000);
  await node.kill("SIGTERM");
  clearTimeout(killer);
};

export const localUser = (n: number) => ({ address: `u${n}@${LOCAL_DOMAIN}`, password: `pw${n}` });

export const startEnvironment = async (options: EnvironmentOptions): Promise<Environment> => {
  const cleanups: Array<() => Promise<void>> = [];
  const stop = async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup().catch(() => undefined);
  };
  try {
    const sinkPort = options.sink.port ?? (await findFreePort());
    const sink = await startSinkProcess({ ...options.sink, port: sinkPort });
    cleanups.push(() => sink.stop());
    const dns = await startDnsmasq({
      mx: [{ domain: REMOTE_DOMAIN, host: `mx.${REMOTE_DOMAIN}`, preference: 10 }],
      hosts: [{ name: `mx.${REMOTE_DOMAIN}`, address: "127.0.0.1" }],
    });
    cleanups.push(() => dns.stop());

    const cluster = uniqueCluster();
    const configs = await Promise.all(
      Array.from({ length: options.nodes }, async (_, i) => {
        const dataDir = await makeDataDir();
        cleanups.push(() => removeDataDir(dataDir));
        return {
          nodeId: `n${i}`,
          cluster,
          dataDir,
          listen: { host: "127.0.0.1", smtp: await findFreePort(), pop3: await findFreePort(), http: await findFreePort() },
          localDomains: [LOCAL_DOMAIN],
          users: Array.from({ length: options.localUsers }, (_, u) => ({ ...localUser(u), home: `n${u % options.nodes}` })),
          dns: { servers: [`${dns.host}:${dns.port}`], timeoutMs: 1000, tries: 2, allowedTargetNetworks: ["127.0.0.0/8"] },
          delivery: { remotePort: sinkPort, pollMs: 50, connectionsPerSite: Number(process.env.BENCH_SITE_CONNECTIONS ?? 4), retryBaseMs: 1000, retryMaxMs: 2000, connectTimeoutMs: 2000, ...options.delivery },
          limits: { maxMessageBytes: 50 * 1024 * 1024, maxRecipients: 1000 },
          api: { tenants: [{ name: BENCH_TENANT, senderDomains: ["load.tern"] }] },
        };
      }),
    );
    const nodes: TernNode[] = [];
    const exits: string[] = [];
    const startedAt = Date.now();
    /** Nodes the harness stops or kills itself. */
    const stopped = new Set<TernNode>();
    const watch = (node: TernNode, i: number) =>
      void node.exited().then((code) => {
        if (stopped.has(node)) return;
        const tail = node.logs().trimEnd().split("\n").slice(-20).join("\n");
        exits.push(`node n${i} (pid ${node.pid}) exited on its own (${code === null ? "killed by a signal" : `status ${code}`}) at ${((Date.now() - startedAt) / 1000).toFixed(1)} s; the end of its log:\n${tail}`);
      });
    for (const [i, config] of configs.entries()) {
      const node = await startTernNode(config);
      nodes.push(node);
      watch(node, i);
    }
    cleanups.push(async () => {
      nodes.forEach((node) => stopped.add(node));
      await Promise.all(nodes.map(stopGracefully));
      // BENCH_NODE_LOGS=DIR keeps each node's output (its log lines and any crash) for a look after the run.
      const logDir = process.env.BENCH_NODE_LOGS;
      if (logDir) {
        await mkdir(logDir, { recursive: true });
        await Promise.all(nodes.map((node, i) => writeFile(join(logDir, `n${i}-${node.pid}.log`), node.logs())));
      }
    });

    return whileRunning({
      cluster,
      dns,
      sink,
      nodes,
      crashAndRestart: async (i: number) => {
        stopped.add(nodes[i]!);
        await nodes[i]!.kill("SIGKILL");
        nodes[i] = await startTernNode(configs[i]!);
        watch(nodes[i]!, i);
        return nodes[i]!;
      },
      unexpectedExits: () => exits,
      stop,
    });
  } catch (error) {
    await stop();
    throw error;
  }
};
