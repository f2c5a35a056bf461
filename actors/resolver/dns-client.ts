// A stub resolver's transport: queries to configured recursive servers over UDP, and
// over TCP when the UDP answer is truncated. Each exchange gets a fresh socket (random
// source port) and a random id, and only a reply that matches source, id and question is
// accepted, so blind spoofing needs to guess both.
import { randomInt } from "node:crypto";
import * as dgram from "node:dgram";
import * as net from "node:net";
import { performance } from "node:perf_hooks";
import * as dnsPacket from "dns-packet";
import { Cause, Effect, Exit, Option, Schema } from "effect";
import { decodeMatchingReply, encodeQuery, toAnswer, type DnsAnswer, type DnsQueryType } from "./dns-wire.ts";

export { normalizeName, type DnsAnswer, type DnsQueryType, type DnsRecord, type DnsRecordOf } from "./dns-wire.ts";

/** No usable reply from any server: every try timed out or hit a socket error. */
export class DnsQueryError extends Schema.TaggedError<DnsQueryError>()("DnsQueryError", {
  reason: Schema.Literals(["timeout", "network"]),
  name: Schema.String,
  type: Schema.String,
  detail: Schema.String,
  /** "host:port" of the last server tried. */
  server: Schema.optional(Schema.String),
}) {}

export interface DnsServer {
  readonly host: string;
  readonly port: number;
}

/** What the client reports as it works; the node turns it into metrics. */
export interface DnsClientObserver {
  /** Once per query(), after every server and try: outcome is the rcode (lower case), "timeout" or "network". */
  readonly queried?: (type: DnsQueryType, outcome: string, seconds: number) => void;
  /** Once per exchange that got no reply in time. */
  readonly timedOut?: (server: string) => void;
  /** Once per truncated UDP answer retried over TCP. */
  readonly truncated?: (server: string) => void;
}

export interface DnsClientOptions {
  readonly servers: ReadonlyArray<DnsServer>;
  /** Per exchange (one UDP or TCP try to one server). */
  readonly timeoutMs: number;
  /** Rounds over the whole server list. */
  readonly tries: number;
  readonly observer?: DnsClientObserver;
}

/** Per-query overrides, e.g. a short budget for the PTR lookup of a connecting client. */
export interface QueryOptions {
  readonly timeoutMs?: number;
  readonly tries?: number;
}

export interface DnsClient {
  query(name: string, type: DnsQueryType, options?: QueryOptions): Effect.Effect<DnsAnswer, DnsQueryError>;
}

// A server that answers SERVFAIL/REFUSED may be broken while the next one is fine
// (glibc and c-ares also move on); any other rcode is the zone's real answer.
const RCODES_WORTH_ANOTHER_SERVER = new Set(["SERVFAIL", "REFUSED", "NOTIMP"]);

export const makeDnsClient = (options: DnsClientOptions): DnsClient => {
  const observer = options.observer ?? {};
  // Untraced: this is the hot path, and a traced Effect.fn (it captures a stack per call)
  // measured at about a quarter of a loopback query's cost in bench/resolver.ts.
  const query = (name: string, type: DnsQueryType, overrides: QueryOptions = {}): Effect.Effect<DnsAnswer, DnsQueryError> =>
    Effect.suspend(() => {
      const started = performance.now();
      const timeoutMs = overrides.timeoutMs ?? options.timeoutMs;
      const attempts = Array.from({ length: overrides.tries ?? options.tries }, () => options.servers).flat();
      return firstUsefulAnswer(attempts, name, type, timeoutMs, observer).pipe(
        Effect.onExit((exit) =>
          Effect.sync(() => {
            const outcome = exit._tag === "Success" ? exit.value.rcode.toLowerCase() : queryErrorOf(exit)?.reason ?? "interrupted";
            observer.queried?.(type, outcome, (performance.now() - started) / 1000);
          })),
      );
    });
  return { query };
};

const queryErrorOf = (exit: Exit.Exit<DnsAnswer, DnsQueryError>) =>
  Exit.isFailure(exit) ? Option.getOrUndefined(Cause.findErrorOption(exit.cause)) : undefined;

/**
 * Tries the servers in order until one gives an answer worth keeping. When all fail,
 * the last answer received (it names an rcode and a server) beats the last error.
 */
const firstUsefulAnswer = Effect.fnUntraced(function* (
  attempts: ReadonlyArray<DnsServer>,
  name: string,
  type: DnsQueryType,
  timeoutMs: number,
  observer: DnsClientObserver,
) {
  let lastAnswer: DnsAnswer | undefined;
  let lastError: DnsQueryError | undefined; // built only when needed: a Schema error costs a stack trace
  for (const server of attempts) {
    const outcome = yield* Effect.result(exchange(server, name, type, timeoutMs, observer));
    if (outcome._tag === "Failure") {
      lastError = outcome.failure;
      continue;
    }
    if (!RCODES_WORTH_ANOTHER_SERVER.has(outcome.success.rcode)) return outcome.success;
    lastAnswer = outcome.success;
  }
  if (lastAnswer !== undefined) return lastAnswer;
  return yield* lastError ?? new DnsQueryError({ reason: "network", name, type, detail: "no DNS servers configured" });
});

/** UDP first; a truncated answer is asked again over TCP, from the same server. */
const exchange = (server: DnsServer, name: string, type: DnsQueryType, timeoutMs: number, observer: DnsClientObserver) =>
  udpExchange(server, name, type, timeoutMs).pipe(
    Effect.flatMap((answer) => {
      if (!answer.truncated) return Effect.succeed(answer);
      observer.truncated?.(serverLabel(server));
      return tcpExchange(server, name, type, timeoutMs);
    }),
    Effect.tapError((error) => Effect.sync(() => (error.reason === "timeout" ? observer.timedOut?.(serverLabel(server)) : undefined))),
  );

type Finish = (outcome: Effect.Effect<DnsAnswer, DnsQueryError>) => void;

/**
 * One exchange on a socket of its own: `open` creates the socket, wires its events to
 * `finish` and returns how to release it. The first outcome wins; the socket is released
 * then, or when the exchange is interrupted, which is how the timeout (on the fiber's
 * Clock, so TestClock can drive it) ends a server that never answers.
 */
const boundedExchange = (timeoutMs: number, timedOut: () => DnsQueryError, open: (finish: Finish) => () => void) =>
  Effect.callback<DnsAnswer, DnsQueryError>((resume) => {
    let done = false;
    let release = () => {};
    const finish: Finish = (outcome) => {
      if (done) return;
      done = true;
      release();
      resume(outcome);
    };
    release = open(finish);
    if (done) release(); // finished while opening: release what was just opened
    return Effect.sync(() => {
      done = true;
      release();
    });
  }).pipe(Effect.timeoutOrElse({ duration: timeoutMs, orElse: () => Effect.fail(timedOut()) }));

const timeoutError = (server: DnsServer, name: string, type: DnsQueryType, timeoutMs: number, transport: string) => () => {
  const detail = `no ${transport} reply from ${serverLabel(server)} in ${timeoutMs} ms`;
  return new DnsQueryError({ reason: "timeout", name, type, server: serverLabel(server), detail });
};

const networkError = (server: DnsServer, name: string, type: DnsQueryType, detail: string) =>
  new DnsQueryError({ reason: "network", name, type, server: serverLabel(server), detail: `${serverLabel(server)}: ${detail}` });

/** One UDP query to one server from a fresh socket, so a fresh random source port. */
const udpExchange = (server: DnsServer, name: string, type: DnsQueryType, timeoutMs: number) =>
  boundedExchange(timeoutMs, timeoutError(server, name, type, timeoutMs, "UDP"), (finish) => {
    const socket = dgram.createSocket(net.isIPv6(server.host) ? "udp6" : "udp4");
    const id = randomInt(0, 0x10000);
    socket.on("message", (message, from) => {
      if (from.port !== server.port || !sameAddress(from.address, server.host)) return;
      const reply = decodeMatchingReply(message, id, name, type);
      if (reply !== undefined) finish(Effect.succeed(toAnswer(reply, serverLabel(server), "udp")));
    });
    socket.on("error", (error) => finish(Effect.fail(networkError(server, name, type, error.message))));
    socket.send(dnsPacket.encode(encodeQuery(id, name, type)), server.port, server.host);
    return () => closeQuietly(socket);
  });

/** One TCP query (RFC 7766 framing: a 2-byte length before each message). */
const tcpExchange = (server: DnsServer, name: string, type: DnsQueryType, timeoutMs: number) =>
  boundedExchange(timeoutMs, timeoutError(server, name, type, timeoutMs, "TCP"), (finish) => {
    const socket = net.connect({ host: server.host, port: server.port });
    const id = randomInt(0, 0x10000); // a fresh id: the UDP one may have been seen by a spoofer
    socket.on("connect", () => socket.write(dnsPacket.streamEncode(encodeQuery(id, name, type))));
    socket.on("data", frameReader((message) => {
      const reply = decodeMatchingReply(message, id, name, type);
      if (reply !== undefined) finish(Effect.succeed(toAnswer(reply, serverLabel(server), "tcp")));
    }));
    socket.on("error", (error) => finish(Effect.fail(networkError(server, name, type, `TCP: ${error.message}`))));
    socket.on("close", () => finish(Effect.fail(networkError(server, name, type, "TCP connection closed without an answer"))));
    return () => socket.destroy();
  });

/** Splits a TCP byte stream into DNS messages; a message may arrive in several chunks. */
const frameReader = (onMessage: (message: Buffer) => void) => {
  let pending = Buffer.alloc(0);
  return (chunk: Buffer): void => {
    pending = Buffer.concat([pending, chunk]);
    while (pending.length >= 2 && pending.length >= 2 + pending.readUInt16BE(0)) {
      const length = pending.readUInt16BE(0);
      onMessage(pending.subarray(2, 2 + length));
      pending = pending.subarray(2 + length);
    }
  };
};

const serverLabel = (server: DnsServer): string =>
  net.isIPv6(server.host) ? `[${server.host}]:${server.port}` : `${server.host}:${server.port}`;

// dgram reports IPv4-mapped senders on udp6 sockets as ::ffff:a.b.c.d.
const sameAddress = (from: string, expected: string): boolean =>
  from.toLowerCase().replace(/^::ffff:/, "") === expected.toLowerCase().replace(/^::ffff:/, "");

const closeQuietly = (socket: dgram.Socket): void => {
  try {
    socket.close();
  } catch {
    // already closed by an error path; nothing left to release
  }
};
