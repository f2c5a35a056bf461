// Connecting a node to NATS. The embedded default: when nothing answers at the
// configured URL and `nats-server` is on PATH, start one as a child with JetStream
// under the data dir, and stop it when the node stops (after draining the connection).
// That server refuses anonymous clients too: it gets generated node and operator
// credentials (cluster/embedded-nats.ts).
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync } from "node:fs";
import { delimiter, join } from "node:path";
import { connect, type ConnectionOptions, type NatsConnection } from "@nats-io/transport-node";
import type { Subjects } from "../protocol/subjects.ts";
import { prepareEmbeddedServer, embeddedCredentials } from "./embedded-nats.ts";
import { securityOptions, type NatsSecurity } from "./nats-auth.ts";

export interface NatsLink {
  readonly nc: NatsConnection;
  /** Set when this node started its own nats-server. */
  readonly embedded: ChildProcess | undefined;
  readonly close: () => Promise<void>;
}

export class NatsUnavailable extends Error {
  override readonly name = "NatsUnavailable";
}

type Attempt = { readonly nc: NatsConnection } | { readonly error: string };

/** One connect attempt; a failure keeps why (bad credentials, TLS), to explain a refusal rather than "nothing answers". */
const tryConnect = (servers: ReadonlyArray<string>, options: Partial<ConnectionOptions>): Promise<Attempt> =>
  connect({ servers: [...servers], timeout: 1500, maxReconnectAttempts: -1, reconnectTimeWait: 500, ...options }).then(
    (nc) => ({ nc }),
    (error: unknown) => ({ error: error instanceof Error ? error.message : String(error) }),
  );

const findOnPath = (program: string): string | undefined => {
  const candidates = (process.env.PATH ?? "").split(delimiter).concat(["/usr/sbin", "/usr/local/sbin"]);
  return candidates.map((dir) => join(dir, program)).find((path) => existsSync(path));
};

export const linkToNats = async (options: {
  readonly servers: ReadonlyArray<string>;
  readonly security: NatsSecurity;
  readonly embedded: boolean;
  readonly dataDir: string;
  readonly clientName: string;
  readonly subjects: Subjects;
  /** Replies and offered blobs of this connection live under this subject (Subjects.nodeInbox). */
  readonly inboxPrefix: string;
}): Promise<NatsLink> => {
  // noAsyncTraces: by default nats.js builds two Error objects (stack traces) per request
  // to point a later failure at its caller; every event published to JetStream is a
  // request, so that was about 4% of a relaying node's CPU. Failures keep their own stack.
  const base = { name: options.clientName, inboxPrefix: options.inboxPrefix, noAsyncTraces: true };
  const direct = await tryConnect(options.servers, { ...base, ...(await securityOptions(options.security)) });
  if ("nc" in direct) return { nc: direct.nc, embedded: undefined, close: () => direct.nc.drain() };

  const binary = options.embedded && options.security.auth.kind === "none" ? findOnPath("nats-server") : undefined;
  if (!binary) {
    throw new NatsUnavailable(
      `no NATS server lets this node in at ${options.servers.join(", ")} (${direct.error}); ` +
        `check nats credentials and TLS, or install a server (apt-get install nats-server) or set TERN_NATS_URL`,
    );
  }
  const url = new URL(options.servers[0] ?? "nats://127.0.0.1:4222");
  const embedded = await prepareEmbeddedServer({ dataDir: options.dataDir, host: url.hostname, port: Number(url.port || 4222), subjects: options.subjects });
  const asNode = { ...base, ...(await securityOptions(embeddedCredentials(options.dataDir, "node"))) };
  // An embedded server left running by an earlier run of this node (its parent was killed) is still ours.
  const leftOver = await tryConnect(options.servers, asNode);
  if ("nc" in leftOver) return { nc: leftOver.nc, embedded: undefined, close: () => leftOver.nc.drain() };
  // In a process group of its own: Ctrl-C in a terminal signals the whole foreground group,
  // and NATS must outlive the node's graceful stop (which drains the connection), so the
  // node stops it itself, last.
  const child = spawn(binary, ["-c", embedded.configFile], { stdio: "ignore", detached: true });
  const nc = await waitForNats(options.servers, asNode, child);
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

const waitForNats = async (servers: ReadonlyArray<string>, options: Partial<ConnectionOptions>, child: ChildProcess) => {
  for (let attempt = 0; attempt < 40; attempt++) {
    if (child.exitCode !== null) break;
    const attempt = await tryConnect(servers, options);
    if ("nc" in attempt) return attempt.nc;
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
  child.kill("SIGKILL");
  throw new NatsUnavailable(`started nats-server but it never answered at ${servers.join(", ")}`);
};
