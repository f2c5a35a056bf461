// POP3 retriever (RFC 1939; CAPA and response codes from RFC 2449 / RFC 3206; STLS from
// RFC 2595; AUTH PLAIN from RFC 5034). One TCP connection = one session:
// AUTHORIZATION -> TRANSACTION -> UPDATE (on QUIT). This file is the socket side: line
// reading, replies, the TLS upgrade and the session's lifetime. What each command does is
// in pop3-session.ts; wire parsing in protocol/pop3.ts; mail through MaildropAccess.
import * as net from "node:net";
import * as tls from "node:tls";
import { Clock, Context, Deferred, Effect, type Fiber } from "effect";
import type { LoginOutcome } from "../../protocol/pop3.ts";
import { clientAddress, inNetworks } from "../common/networks.ts";
import { makeConnectionCap, type ConnectionEvent } from "../runtime/connection-cap.ts";
import { loginAccountsOn, makeLoginThrottle, type LoginThrottle } from "../users/login-throttle.ts";
import type { MaildropAccess, OpenMaildrop } from "./maildrop.ts";
import type { Log } from "../../protocol/log.ts";
import {
  answerLine,
  greeting,
  err,
  initialState,
  keepLockAlive,
  releaseMaildrop,
  type ConnectionView,
  type Reply,
  type SessionConfig,
  type SessionState,
} from "./pop3-session.ts";

export interface Pop3ServerOptions {
  /** Services the sessions' Effects run with (the node's Clock among them); default: none, the live Clock. */
  readonly services?: Context.Context<never>;
  readonly host: string;
  readonly port: number;
  /** Name shown in the greeting and sign-off. */
  readonly hostname: string;
  readonly access: MaildropAccess;
  readonly log?: Log;
  /** RFC 1939 §3: the autologout timer must be at least 10 minutes; lower only for tests. */
  readonly idleTimeoutMs?: number;
  /** Key and certificate for STLS; without them STLS is not offered. */
  readonly tls?: { readonly key: Buffer; readonly cert: Buffer } | undefined;
  /**
   * Clients on these networks may log in without TLS (default: loopback only, where
   * nobody can listen in). Everyone else must STLS before USER/PASS or AUTH.
   */
  readonly plaintextLoginNetworks?: ReadonlyArray<string>;
  /**
   * Failed-login limits (the node's, shared with SMTP AUTH). Default: this server's own,
   * with default limits, counting each login name as given (lower-cased).
   */
  readonly throttle?: LoginThrottle;
  /** Pause before answering a failed login (default 1 s). */
  readonly failureDelayMs?: number;
  /** Failed logins on one connection before it is closed (default 3). */
  readonly maxFailuresPerConnection?: number;
  /** Names this node in maildrop lock holders (default: the hostname). */
  readonly nodeId?: string;
  readonly onLogin?: (outcome: LoginOutcome) => void;
  /** Open sessions allowed, all clients together (unset: no overall cap); above it -ERR [SYS/TEMP]. */
  readonly maxConnections?: number;
  /** Sessions opened, ended and refused at the cap (for metrics). */
  readonly onConnection?: (event: ConnectionEvent) => void;
}

export interface Pop3Server {
  /** The port actually bound (useful when started on port 0). */
  readonly port: number;
  /** Stops listening and ends open sessions without entering UPDATE. */
  readonly close: () => Promise<void>;
}

const LOOPBACK_NETWORKS: ReadonlyArray<string> = ["127.0.0.0/8", "::1/128"];

const DEFAULT_IDLE_TIMEOUT_MS = 10 * 60 * 1000;
/** Far above any legal command (255 octets) or SASL response; a peer sending more is not speaking POP3. */
const MAX_BUFFERED_LINE_OCTETS = 8192;

interface ServerContext {
  readonly options: Pop3ServerOptions;
  /** Socket callbacks are the edge: they run session Effects with the services the server was given. */
  readonly run: <A, E>(effect: Effect.Effect<A, E>) => Promise<A>;
  readonly fork: <A, E>(effect: Effect.Effect<A, E>) => Fiber.Fiber<A, E>;
  readonly config: SessionConfig;
  readonly secureContext: tls.SecureContext | undefined;
  readonly sockets: Set<net.Socket>;
}

export const startPop3Server = async (options: Pop3ServerOptions): Promise<Pop3Server> => {
  const services = options.services ?? Context.empty();
  const context: ServerContext = {
    options,
    run: Effect.runPromiseWith(services),
    fork: Effect.runForkWith(services),
    config: {
      hostname: options.hostname,
      access: options.access,
      throttle: options.throttle ?? makeLoginThrottle(loginAccountsOn(Context.get(services, Clock.Clock), () => undefined)),
      failureDelayMs: options.failureDelayMs ?? 1_000,
      maxFailuresPerConnection: options.maxFailuresPerConnection ?? 3,
      holderPrefix: `${options.nodeId ?? options.hostname}/pop3`,
      ...(options.onLogin && { onLogin: options.onLogin }),
    },
    secureContext: options.tls ? tls.createSecureContext({ key: options.tls.key, cert: options.tls.cert }) : undefined,
    sockets: new Set(),
  };
  let connectionCount = 0;
  const cap = makeConnectionCap({
    max: options.maxConnections ?? Infinity,
    observe: options.onConnection,
    onFull: (open) => options.log?.("pop3.connections.full", { level: "warn", open }),
  });
  const server = net.createServer((socket) => {
    if (!cap.admit()) return refuseOverCap(socket);
    // The TCP socket closes last, whether the session ended on it or on TLS after STLS.
    socket.once("close", cap.release);
    runSession(socket, ++connectionCount, context);
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(options.port, options.host, () => {
      server.off("error", reject);
      resolve();
    });
  });
  const address = server.address() as net.AddressInfo;
  let closing: Promise<void> | undefined;
  const close = () =>
    (closing ??= new Promise<void>((resolve) => {
      server.close(() => resolve());
      for (const socket of context.sockets) socket.destroy();
    }));
  return { port: address.port, close };
};

/**
 * RFC 3206: SYS/TEMP says the refusal is temporary and not the client's fault. The
 * descriptor is given back as soon as the reply and our FIN are with the kernel, without
 * waiting for the client to hang up: a flood of refused clients must not hold descriptors.
 */
const refuseOverCap = (socket: net.Socket): void => {
  socket.on("error", () => undefined); // a client that resets first is no concern here
  socket.end("-ERR [SYS/TEMP] too many connections\r\n", () => socket.destroy());
};

// ---------------------------------------------------------------------------
// Session lifetime

type LineVerdict = "continue" | "stop" | "upgrade";

const runSession = (raw: net.Socket, conn: number, context: ServerContext): void => {
  const { options, config } = context;
  let io: net.Socket = raw;
  let secure = false;
  let state: SessionState = initialState;
  let stopKeepAlive = () => {};
  let ended = false;
  const left = Deferred.makeUnsafe<void>();
  const remoteAddress = clientAddress(raw.remoteAddress ?? "");
  const openedAt = performance.now(); // a duration for the log, not a timer
  // Every line of the connection says whose it is, first (one shape with SMTP and IMAP).
  const log: Log = (event, fields) => options.log?.(event, { protocol: "pop3", conn: `pop3-${conn}`, client: remoteAddress, ...fields });
  const connection: ConnectionView = {
    conn,
    remoteAddress,
    secure: () => secure,
    tlsAvailable: context.secureContext !== undefined,
    plaintextLoginAllowed: inNetworks(remoteAddress, options.plaintextLoginNetworks ?? LOOPBACK_NETWORKS),
    left: Deferred.await(left),
    log,
  };

  /** Leaves the session; a maildrop still locked is handed back without UPDATE (RFC 1939 §6). */
  const end = () => {
    if (ended) return;
    ended = true;
    Deferred.doneUnsafe(left, Effect.void);
    stopKeepAlive();
    if (state.phase === "transaction") release(context, state.maildrop);
    const user = state.phase === "transaction" ? state.user : undefined;
    state = { phase: "closed" };
    log("connection.closed", { durationMs: Math.round(performance.now() - openedAt), tls: secure, ...(user !== undefined ? { user } : {}) });
  };

  const enter = (next: SessionState) => {
    if (next.phase === "transaction" && state.phase !== "transaction") {
      const renewing = context.fork(keepLockAlive(next, connection));
      stopKeepAlive = () => renewing.interruptUnsafe();
    }
    if (next.phase === "closed") stopKeepAlive();
    state = next;
  };

  const handleLine = async (line: string): Promise<LineVerdict> => {
    const outcome = await context.run(answerLine(state, line, config, connection));
    if (state.phase === "closed") {
      // The peer left while the maildrop was being asked: undo a login that raced the drop.
      if (outcome.next?.phase === "transaction") release(context, outcome.next.maildrop);
      return "stop";
    }
    if (outcome.next !== undefined) enter(outcome.next);
    if (outcome.reply.startTls) {
      // Written as is, then TLS starts at once: the client waits for this line before its handshake.
      io.write(replyBytes(outcome.reply));
      return "upgrade";
    }
    await writeReply(io, outcome.reply);
    if (!outcome.reply.close) return "continue";
    end();
    io.end();
    return "stop";
  };

  const onDefect = (error: unknown) => {
    // A bug in this session (or a MaildropAccess that throws) ends this connection, not the server.
    log("pop3.session.crashed", { level: "error", error: error instanceof Error ? (error.stack ?? error.message) : String(error) });
    io.destroy();
  };

  const watch = (socket: net.Socket) => {
    context.sockets.add(socket);
    socket.setTimeout(options.idleTimeoutMs ?? DEFAULT_IDLE_TIMEOUT_MS);
    // RFC 1939 §3: on autologout, close without UPDATE and without a reply.
    socket.on("timeout", () => {
      log("pop3.idle-timeout");
      socket.destroy();
    });
    socket.on("error", (error) => log("pop3.socket-error", { error: error.message }));
    socket.on("close", () => {
      context.sockets.delete(socket);
      end();
    });
  };

  /** STLS: commands pipelined after it were sent in the clear and are dropped (RFC 2595 §4). */
  const upgrade = () => {
    raw.setTimeout(0);
    raw.removeAllListeners("timeout");
    const secureSocket = new tls.TLSSocket(raw, { isServer: true, secureContext: context.secureContext! });
    // Watched from the start, so a client that stalls in the handshake still times out.
    watch(secureSocket);
    secureSocket.once("secure", () => {
      secure = true;
      io = secureSocket;
      log("pop3.tls", { tlsVersion: secureSocket.getProtocol() ?? undefined });
      readLines(secureSocket, handleLine, upgrade, onDefect);
    });
    secureSocket.on("error", () => {
      secureSocket.destroy();
      raw.destroy();
    });
  };

  watch(raw);
  log("connection.opened", { tls: false });
  void writeReply(raw, greeting(config));
  readLines(raw, handleLine, upgrade, onDefect);
};



const release = (context: ServerContext, maildrop: OpenMaildrop) => void context.fork(releaseMaildrop(maildrop));

// ---------------------------------------------------------------------------
// Line reading: pipelined commands are answered strictly one after another.

const readLines = (
  socket: net.Socket,
  handleLine: (line: string) => Promise<LineVerdict>,
  upgrade: () => void,
  onDefect: (error: unknown) => void,
): void => {
  let pending: Buffer = Buffer.alloc(0);
  const onData = (chunk: Buffer) => {
    // Reading pauses while commands run, so a flood of pipelined input waits in the kernel.
    socket.pause();
    pending = pending.length === 0 ? chunk : Buffer.concat([pending, chunk]);
    drain().catch(onDefect);
  };
  const drain = async (): Promise<void> => {
    let lf: number;
    while ((lf = pending.indexOf(0x0a)) !== -1) {
      const raw = pending.subarray(0, lf);
      pending = pending.subarray(lf + 1);
      if (raw.length > MAX_BUFFERED_LINE_OCTETS) return refuseOverlong(socket);
      const verdict = await handleLine(stripCr(raw).toString("utf8"));
      if (verdict === "stop") return;
      if (verdict === "upgrade") {
        socket.off("data", onData);
        pending = Buffer.alloc(0);
        return upgrade();
      }
    }
    if (pending.length > MAX_BUFFERED_LINE_OCTETS) return refuseOverlong(socket);
    if (!socket.destroyed) socket.resume();
  };
  socket.on("data", onData);
};

const stripCr = (line: Buffer): Buffer => (line.at(-1) === 0x0d ? line.subarray(0, -1) : line);

const refuseOverlong = async (socket: net.Socket): Promise<void> => {
  await writeReply(socket, err("line too long"));
  socket.destroy();
};

const replyBytes = (reply: Reply): Buffer => {
  const status = Buffer.from(`${reply.text}\r\n`, "utf8");
  return reply.body === undefined ? status : Buffer.concat([status, reply.body]);
};

const writeReply = (socket: net.Socket, reply: Reply): Promise<void> => {
  if (socket.destroyed || !socket.writable) return Promise.resolve();
  return new Promise<void>((resolve) => {
    // Waiting for the write callback keeps a large RETR from piling up in memory.
    socket.write(replyBytes(reply), () => resolve());
  });
};
