// IMAP retriever (RFC 3501 with IDLE, UIDPLUS, MOVE, LITERAL+, NAMESPACE, ID, ENABLE, CONDSTORE,
// UNSELECT, SPECIAL-USE): one TCP connection = one session. This file is the socket
// side: a listener for plain IMAP (STARTTLS, RFC 2595) and one for implicit TLS (IMAPS,
// RFC 8314), framing with protocol/imap/framer.ts, the TLS upgrade, idle timeouts and
// the connection cap. Commands are answered by imap-session.ts, strictly one after
// another; while one runs, reading pauses, so pipelined input waits in the kernel.
import * as net from "node:net";
import * as tls from "node:tls";
import { Clock, Context, Deferred, Effect } from "effect";
import { describeBad } from "../../protocol/imap/command.ts";
import { makeFramer, type FramerEvent, type FramerLimits } from "../../protocol/imap/framer.ts";
import { parseCommand } from "../../protocol/imap/parse.ts";
import type { LoginOutcome } from "../../protocol/pop3.ts";
import { clientAddress, inNetworks } from "../common/networks.ts";
import { makeConnectionCap, type ConnectionEvent } from "../runtime/connection-cap.ts";
import { loginAccountsOn, makeLoginThrottle, type LoginThrottle } from "../users/login-throttle.ts";
import type { ImapAccess } from "./imap-access.ts";
import { makeMimeCache } from "./imap-mime.ts";
import { makeImapSession, type After, type ImapSessionConfig } from "./imap-session.ts";
import type { Log } from "../../protocol/log.ts";

export interface ImapServerOptions {
  readonly services?: Context.Context<never>;
  readonly host: string;
  /** Plain IMAP (STARTTLS offered when `tls` is given). */
  readonly port: number;
  /** Implicit TLS (IMAPS); unset: no such listener. */
  readonly tlsPort?: number | undefined;
  readonly hostname: string;
  readonly access: ImapAccess;
  readonly tls?: { readonly key: Buffer; readonly cert: Buffer } | undefined;
  /** Clients on these networks may log in without TLS (default: loopback only). */
  readonly plaintextLoginNetworks?: ReadonlyArray<string>;
  readonly throttle?: LoginThrottle;
  readonly failureDelayMs?: number;
  readonly maxFailuresPerConnection?: number;
  /** RFC 3501 §5.4: at least 30 minutes of inactivity before an autologout; lower only for tests. */
  readonly idleTimeoutMs?: number;
  /** Inactivity allowed before the client has logged in (default 60 s, never more than idleTimeoutMs). */
  readonly loginTimeoutMs?: number;
  /** Largest literal accepted (APPEND's message): the node's message size limit. */
  readonly maxLiteralOctets?: number;
  readonly maxConnections?: number;
  readonly onConnection?: (event: ConnectionEvent) => void;
  readonly onLogin?: (outcome: LoginOutcome) => void;
  readonly log?: Log;
}

export interface ImapServer {
  readonly port: number;
  readonly tlsPort: number | undefined;
  readonly close: () => Promise<void>;
}

const LOOPBACK_NETWORKS: ReadonlyArray<string> = ["127.0.0.0/8", "::1/128"];
const DEFAULT_IDLE_TIMEOUT_MS = 30 * 60 * 1000;
/** Command lines (outside literals) longer than this are refused; long UID sets fit easily. */
const MAX_LINE_OCTETS = 64 * 1024;
/**
 * Before login a client may send only small commands: a stranger must not make the server
 * hold megabytes per connection (a refused synchronizing literal gets no "+", a refused
 * non-synchronizing one is read and dropped, never kept).
 */
const PRE_LOGIN_LIMITS: FramerLimits = { maxLineOctets: 8 * 1024, maxLiteralOctets: 8 * 1024, maxCommandOctets: 16 * 1024 };
const DEFAULT_LOGIN_TIMEOUT_MS = 60_000;
const MIME_CACHE_ENTRIES = 2_000;

interface ServerContext {
  readonly options: ImapServerOptions;
  readonly run: <A, E>(effect: Effect.Effect<A, E>) => Promise<A>;
  readonly config: ImapSessionConfig;
  readonly secureContext: tls.SecureContext | undefined;
  readonly sockets: Set<net.Socket>;
  count: number;
}

const listen = (server: net.Server, port: number, host: string) =>
  new Promise<number>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => {
      server.off("error", reject);
      resolve((server.address() as net.AddressInfo).port);
    });
  });

export const startImapServer = async (options: ImapServerOptions): Promise<ImapServer> => {
  const services = options.services ?? Context.empty();
  const context: ServerContext = {
    options,
    run: Effect.runPromiseWith(services),
    config: {
      hostname: options.hostname,
      access: options.access,
      throttle: options.throttle ?? makeLoginThrottle(loginAccountsOn(Context.get(services, Clock.Clock), () => undefined)),
      failureDelayMs: options.failureDelayMs ?? 1_000,
      maxFailuresPerConnection: options.maxFailuresPerConnection ?? 3,
      mimeTree: makeMimeCache(MIME_CACHE_ENTRIES),
      fork: Effect.runForkWith(services),
      ...(options.onLogin && { onLogin: options.onLogin }),
    },
    secureContext: options.tls ? tls.createSecureContext({ key: options.tls.key, cert: options.tls.cert }) : undefined,
    sockets: new Set(),
    count: 0,
  };
  const cap = makeConnectionCap({
    max: options.maxConnections ?? Infinity,
    observe: options.onConnection,
    onFull: (open) => options.log?.("imap.connections.full", { level: "warn", open }),
  });
  const admit = (socket: net.Socket, secure: boolean) => {
    if (!cap.admit()) {
      socket.on("error", () => undefined);
      socket.end("* BYE [UNAVAILABLE] too many connections\r\n", () => socket.destroy());
      return;
    }
    socket.once("close", cap.release);
    runSession(socket, ++context.count, context, secure);
  };
  const plain = net.createServer((socket) => admit(socket, false));
  const port = await listen(plain, options.port, options.host);
  let implicit: tls.Server | undefined;
  let tlsPort: number | undefined;
  if (options.tlsPort !== undefined && options.tls !== undefined) {
    implicit = tls.createServer({ key: options.tls.key, cert: options.tls.cert }, (socket) => admit(socket, true));
    implicit.on("tlsClientError", () => undefined);
    tlsPort = await listen(implicit, options.tlsPort, options.host);
  }
  let closing: Promise<void> | undefined;
  const close = () =>
    (closing ??= Promise.all([plain, ...(implicit ? [implicit] : [])].map((server) => new Promise<void>((resolve) => server.close(() => resolve())))).then(() => undefined));
  const closeAll = () => {
    const done = close();
    for (const socket of context.sockets) socket.destroy();
    return done;
  };
  return { port, tlsPort, close: closeAll };
};

type Mode = "command" | "sasl" | "idle";

const runSession = (raw: net.Socket, conn: number, context: ServerContext, startSecure: boolean): void => {
  const { options } = context;
  let io: net.Socket = raw;
  let secure = startSecure;
  let ended = false;
  let mode: Mode = "command";
  const left = Deferred.makeUnsafe<void>();
  const remoteAddress = clientAddress(raw.remoteAddress ?? "");
  const openedAt = performance.now(); // a duration for the log, not a timer
  // Every line of the connection says whose it is, first (one shape with SMTP and POP3).
  const log: Log = (event, fields) => options.log?.(event, { protocol: "imap", conn: `imap-${conn}`, client: remoteAddress, ...fields });
  const idleTimeoutMs = options.idleTimeoutMs ?? DEFAULT_IDLE_TIMEOUT_MS;
  const loginTimeoutMs = Math.min(options.loginTimeoutMs ?? DEFAULT_LOGIN_TIMEOUT_MS, idleTimeoutMs);
  const loggedInLimits: FramerLimits = {
    maxLineOctets: MAX_LINE_OCTETS,
    maxLiteralOctets: options.maxLiteralOctets ?? 50 * 1024 * 1024,
    maxCommandOctets: (options.maxLiteralOctets ?? 50 * 1024 * 1024) + MAX_LINE_OCTETS,
  };
  const loggedIn = () => {
    const phase = session.state().phase;
    return phase === "authenticated" || phase === "selected";
  };
  const framer = () => makeFramer(loggedIn() ? loggedInLimits : PRE_LOGIN_LIMITS);
  const session = makeImapSession(context.config, {
    remoteAddress,
    secure: () => secure,
    tlsAvailable: context.secureContext !== undefined,
    plaintextLoginAllowed: inNetworks(remoteAddress, options.plaintextLoginNetworks ?? LOOPBACK_NETWORKS),
    left: Deferred.await(left),
    write: (data) => {
      if (!io.destroyed && io.writable) io.write(data);
    },
    writable: Effect.promise(
      () =>
        new Promise<boolean>((resolve) => {
          const socket = io;
          if (ended || socket.destroyed || !socket.writable) return resolve(false);
          if (!socket.writableNeedDrain) return resolve(true);
          const done = () => {
            socket.off("drain", done);
            socket.off("close", done);
            resolve(!ended && !socket.destroyed && socket.writable);
          };
          socket.on("drain", done);
          socket.on("close", done);
        }),
    ),
    close: () => {
      if (!io.destroyed) io.end();
    },
    log,
  });

  const end = () => {
    if (ended) return;
    ended = true;
    Deferred.doneUnsafe(left, Effect.void);
    session.end();
    const state = session.state();
    log("connection.closed", { durationMs: Math.round(performance.now() - openedAt), tls: secure, ...("user" in state ? { user: state.user } : {}) });
  };

  const onDefect = (error: unknown) => {
    // A bug in this session ends this connection, not the server.
    log("imap.session.crashed", { level: "error", error: error instanceof Error ? (error.stack ?? error.message) : String(error) });
    io.destroy();
  };

  /** What one framed event leads to. */
  const answer = async (event: FramerEvent): Promise<After> => {
    switch (event._tag) {
      case "Continue":
        io.write("+ go ahead\r\n");
        return "continue";
      case "Refused":
        io.write(`${event.tag ?? "*"} BAD ${describeBad(event.bad)}\r\n`);
        return "continue";
      case "Command": {
        if (mode === "sasl") {
          mode = "command";
          return context.run(session.saslLine(event.bytes.toString("latin1")));
        }
        if (mode === "idle") {
          mode = "command";
          return context.run(session.idleLine(event.bytes.toString("latin1")));
        }
        return context.run(session.handle(parseCommand(event.bytes)));
      }
    }
  };

  const watch = (socket: net.Socket) => {
    context.sockets.add(socket);
    socket.setTimeout(loggedIn() ? idleTimeoutMs : loginTimeoutMs);
    socket.on("timeout", () => {
      log("imap.idle-timeout");
      if (!socket.destroyed) socket.end("* BYE autologout, idle too long\r\n");
      socket.destroy();
    });
    socket.on("error", (error) => log("imap.socket-error", { error: error.message }));
    socket.on("close", () => {
      context.sockets.delete(socket);
      end();
    });
  };

  const read = (socket: net.Socket) => {
    const frames = framer();
    let queue: FramerEvent[] = [];
    let busy = false;
    const drain = async () => {
      busy = true;
      while (queue.length > 0 && !ended) {
        const event = queue.shift()!;
        const wasLoggedIn = loggedIn();
        const after = await answer(event);
        if (!wasLoggedIn && loggedIn()) {
          // Logged in: commands may now be as big as a message, and the session may sit idle for the autologout time.
          frames.setLimits(loggedInLimits);
          socket.setTimeout(idleTimeoutMs);
        }
        if (after === "close") {
          socket.end();
          return;
        }
        if (after === "sasl" || after === "idle") mode = after;
        if (after === "starttls") {
          // Anything pipelined after STARTTLS was sent in the clear and is dropped (RFC 2595 §3.1).
          socket.off("data", onData);
          queue = [];
          return upgrade();
        }
      }
      busy = false;
      if (!socket.destroyed) socket.resume();
    };
    const onData = (chunk: Buffer) => {
      queue.push(...frames.push(chunk));
      if (busy || queue.length === 0) return;
      socket.pause();
      drain().catch(onDefect);
    };
    socket.on("data", onData);
    // Commands the client pipelined before it went are not run.
    socket.once("close", () => {
      queue = [];
    });
  };

  const upgrade = () => {
    raw.setTimeout(0);
    raw.removeAllListeners("timeout");
    const secureSocket = new tls.TLSSocket(raw, { isServer: true, secureContext: context.secureContext! });
    watch(secureSocket);
    secureSocket.once("secure", () => {
      secure = true;
      io = secureSocket;
      log("imap.tls", { tlsVersion: secureSocket.getProtocol() ?? undefined });
      read(secureSocket);
    });
    secureSocket.on("error", () => {
      secureSocket.destroy();
      raw.destroy();
    });
  };

  watch(raw);
  log("connection.opened", { tls: secure });
  io.write(`* OK [CAPABILITY ${session.capabilities()}] ${options.hostname} Tern IMAP ready\r\n`);
  read(raw);
};
