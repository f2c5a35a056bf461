// A stub resolver's transport: queries to configured recursive servers over UDP, and
// over TCP when the UDP answer is truncated. Each exchange gets a fresh socket (random
// source port) and a random id, and only a reply that matches source, id and question is
// accepted, so blind spoofing needs to guess both.
import { randomInt } from "node:crypto";
import * as dgram from "node:dgram";
import * as net from "node:net";
import { performance } from "node:perf_hooks";
import * as dnsPacket from "dns-packet";
import { Effect, Schema } from "effect";
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
  const exchangeOptions = { observer };
  const query = Effect.fn("DnsClient.query")(function* (name: string, type: DnsQueryType, overrides: QueryOptions = {}) {
    const started = performance.now();
    const timeoutMs = overrides.timeoutMs ?? options.timeoutMs;
    const attempts = Array.from({ length: overrides.tries ?? options.tries }, () => options.servers).flat();
    const outcome = yield* Effect.result(firstUsefulAnswer(attempts, name, type, timeoutMs, exchangeOptions));
    const label = outcome._tag === "Success" ? outcome.success.rcode.toLowerCase() : outcome.failure.reason;
    observer.queried?.(type, label, (performance.now() - started) / 1000);
    return yield* Effect.fromResult(outcome);
  });
  return { query };
};

/**
 * Tries the servers in order until one gives an answer worth keeping. When all fail,
 * the last answer received (it names an rcode and a server) beats the last error.
 */
const firstUsefulAnswer = (
  attempts: ReadonlyArray<DnsServer>,
  name: string,
  type: DnsQueryType,
  timeoutMs: number,
  context: { readonly observer: DnsClientObserver },
): Effect.Effect<DnsAnswer, DnsQueryError> =>
  Effect.gen(function* () {
    let lastAnswer: DnsAnswer | undefined;
    let lastError = new DnsQueryError({ reason: "network", name, type, detail: "no DNS servers configured" });
    for (const server of attempts) {
      const outcome = yield* Effect.result(exchange(server, name, type, timeoutMs, context.observer));
      if (outcome._tag === "Failure") {
        lastError = outcome.failure;
        continue;
      }
      if (!RCODES_WORTH_ANOTHER_SERVER.has(outcome.success.rcode)) return outcome.success;
      lastAnswer = outcome.success;
    }
    return lastAnswer ?? (yield* lastError);
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

const withTimeout = (server: DnsServer, name: string, type: DnsQueryType, timeoutMs: number, transport: string) =>
  Effect.timeoutOrElse({
    duration: timeoutMs,
    orElse: () =>
      Effect.fail(
        new DnsQueryError({ reason: "timeout", name, type, server: serverLabel(server), detail: `no ${transport} reply from ${serverLabel(server)} in ${timeoutMs} ms` }),
      ),
  });

const networkError = (server: DnsServer, name: string, type: DnsQueryType, detail: string) =>
  new DnsQueryError({ reason: "network", name, type, server: serverLabel(server), detail: `${serverLabel(server)}: ${detail}` });

/** One UDP query to one server, with its own socket, bounded by timeoutMs. */
const udpExchange = (server: DnsServer, name: string, type: DnsQueryType, timeoutMs: number) =>
  Effect.acquireUseRelease(
    Effect.sync(() => dgram.createSocket(net.isIPv6(server.host) ? "udp6" : "udp4")),
    (socket) => awaitUdpReply(socket, server, name, type),
    (socket) => Effect.sync(() => closeQuietly(socket)),
  ).pipe(withTimeout(server, name, type, timeoutMs, "UDP"));

const awaitUdpReply = (socket: dgram.Socket, server: DnsServer, name: string, type: DnsQueryType) =>
  Effect.callback<DnsAnswer, DnsQueryError>((resume) => {
    const id = randomInt(0, 0x10000);
    socket.on("message", (message, from) => {
      if (from.port !== server.port || !sameAddress(from.address, server.host)) return;
      const reply = decodeMatchingReply(message, id, name, type);
      if (reply !== undefined) resume(Effect.succeed(toAnswer(reply, serverLabel(server), "udp")));
    });
    socket.on("error", (error) => resume(Effect.fail(networkError(server, name, type, error.message))));
    socket.send(dnsPacket.encode(encodeQuery(id, name, type)), server.port, server.host);
  });

/** One TCP query (RFC 7766 framing: a 2-byte length before each message), bounded by timeoutMs. */
const tcpExchange = (server: DnsServer, name: string, type: DnsQueryType, timeoutMs: number) =>
  Effect.acquireUseRelease(
    Effect.sync(() => net.connect({ host: server.host, port: server.port })),
    (socket) => awaitTcpReply(socket, server, name, type),
    (socket) => Effect.sync(() => socket.destroy()),
  ).pipe(withTimeout(server, name, type, timeoutMs, "TCP"));

const awaitTcpReply = (socket: net.Socket, server: DnsServer, name: string, type: DnsQueryType) =>
  Effect.callback<DnsAnswer, DnsQueryError>((resume) => {
    const id = randomInt(0, 0x10000); // a fresh id: the UDP one may have been seen by a spoofer
    const frames = frameReader((message) => {
      const reply = decodeMatchingReply(message, id, name, type);
      if (reply !== undefined) resume(Effect.succeed(toAnswer(reply, serverLabel(server), "tcp")));
    });
    socket.on("connect", () => socket.write(dnsPacket.streamEncode(encodeQuery(id, name, type))));
    socket.on("data", frames);
    socket.on("error", (error) => resume(Effect.fail(networkError(server, name, type, `TCP: ${error.message}`))));
    socket.on("close", () => resume(Effect.fail(networkError(server, name, type, "TCP connection closed without an answer"))));
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

export const serverLabel = (server: DnsServer): string =>
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
