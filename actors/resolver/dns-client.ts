// A minimal stub resolver: UDP queries to configured recursive servers, nothing more.
// Each query gets a fresh socket (random source port) and a random id, and only a reply
// that matches source, id and question is accepted, so blind spoofing needs to guess both.
import { randomInt } from "node:crypto";
import * as dgram from "node:dgram";
import { isIPv6 } from "node:net";
import * as dnsPacket from "dns-packet";
import { Effect, Schema } from "effect";

export type DnsQueryType = "MX" | "A" | "AAAA";

export type DnsRecord =
  | { readonly type: "MX"; readonly name: string; readonly ttl: number; readonly preference: number; readonly exchange: string }
  | { readonly type: "A" | "AAAA"; readonly name: string; readonly ttl: number; readonly address: string }
  | { readonly type: "CNAME"; readonly name: string; readonly ttl: number; readonly target: string };

export interface DnsAnswer {
  /** As dns-packet names it: "NOERROR", "NXDOMAIN", "SERVFAIL", "REFUSED", ... */
  readonly rcode: string;
  readonly answers: ReadonlyArray<DnsRecord>;
  /** Additional section (e.g. A records for MX exchanges), same decoding. */
  readonly additionals: ReadonlyArray<DnsRecord>;
  /** "host:port" of the server that answered. */
  readonly server: string;
  /** TC bit: the UDP answer was cut short; there is no TCP fallback yet. */
  readonly truncated: boolean;
}

/** No usable reply from any server: every try timed out or hit a socket error. */
export class DnsQueryError extends Schema.TaggedError<DnsQueryError>()("DnsQueryError", {
  reason: Schema.Literals(["timeout", "network"]),
  name: Schema.String,
  type: Schema.String,
  detail: Schema.String,
}) {}

export interface DnsServer {
  readonly host: string;
  readonly port: number;
}

export interface DnsClientOptions {
  readonly servers: ReadonlyArray<DnsServer>;
  readonly timeoutMs: number;
  /** Rounds over the whole server list. */
  readonly tries: number;
}

export interface DnsClient {
  query(name: string, type: DnsQueryType): Effect.Effect<DnsAnswer, DnsQueryError>;
}

/** Lower-case, no trailing dot: how names are compared everywhere in the resolver. */
export const normalizeName = (name: string): string => name.toLowerCase().replace(/\.$/, "");

// A server that answers SERVFAIL/REFUSED may be broken while the next one is fine
// (glibc and c-ares also move on); any other rcode is the zone's real answer.
const RCODES_WORTH_ANOTHER_SERVER = new Set(["SERVFAIL", "REFUSED", "NOTIMP"]);

// Advertise a 1232-byte EDNS buffer (the DNS flag day value) so MX answers with
// glue rarely get truncated, since this client has no TCP fallback.
const EDNS_PAYLOAD_SIZE = 1232;

export const makeDnsClient = (options: DnsClientOptions): DnsClient => {
  const attempts = Array.from({ length: options.tries }, () => options.servers).flat();
  const query = Effect.fn("DnsClient.query")(function* (name: string, type: DnsQueryType) {
    let lastOutcome: DnsAnswer | DnsQueryError = noServers(name, type);
    for (const server of attempts) {
      const outcome = yield* Effect.result(queryServer(server, name, type, options.timeoutMs));
      lastOutcome = outcome._tag === "Success" ? outcome.success : outcome.failure;
      if (lastOutcome instanceof DnsQueryError) continue;
      if (!RCODES_WORTH_ANOTHER_SERVER.has(lastOutcome.rcode)) return lastOutcome;
    }
    if (lastOutcome instanceof DnsQueryError) return yield* lastOutcome;
    return lastOutcome;
  });
  return { query };
};

const noServers = (name: string, type: DnsQueryType) =>
  new DnsQueryError({ reason: "network", name, type, detail: "no DNS servers configured" });

/** One query to one server, with its own socket, bounded by timeoutMs. */
const queryServer = (server: DnsServer, name: string, type: DnsQueryType, timeoutMs: number) =>
  Effect.acquireUseRelease(
    Effect.sync(() => dgram.createSocket(isIPv6(server.host) ? "udp6" : "udp4")),
    (socket) => awaitMatchingReply(socket, server, name, type),
    (socket) => Effect.sync(() => closeQuietly(socket)),
  ).pipe(
    Effect.timeoutOrElse({
      duration: timeoutMs,
      orElse: () =>
        Effect.fail(
          new DnsQueryError({ reason: "timeout", name, type, detail: `no reply from ${serverLabel(server)} in ${timeoutMs} ms` }),
        ),
    }),
  );

const awaitMatchingReply = (socket: dgram.Socket, server: DnsServer, name: string, type: DnsQueryType) =>
  Effect.callback<DnsAnswer, DnsQueryError>((resume) => {
    const id = randomInt(0, 0x10000);
    socket.on("message", (message, from) => {
      if (from.port !== server.port || !sameAddress(from.address, server.host)) return;
      const reply = decodeMatchingReply(message, id, name, type);
      if (reply !== undefined) resume(Effect.succeed(toAnswer(reply, server)));
    });
    socket.on("error", (error) => {
      resume(Effect.fail(new DnsQueryError({ reason: "network", name, type, detail: `${serverLabel(server)}: ${error.message}` })));
    });
    socket.send(encodeQuery(id, name, type), server.port, server.host);
  });

const encodeQuery = (id: number, name: string, type: DnsQueryType): Buffer =>
  dnsPacket.encode({
    type: "query",
    id,
    flags: dnsPacket.RECURSION_DESIRED,
    questions: [{ type, class: "IN", name: normalizeName(name) }],
    additionals: [{ type: "OPT", name: ".", udpPayloadSize: EDNS_PAYLOAD_SIZE, extendedRcode: 0, ednsVersion: 0, flags: 0, flag_do: false, options: [] }],
  });

/** The decoded reply if it answers exactly our question; undefined for garbage and strays. */
const decodeMatchingReply = (message: Buffer, id: number, name: string, type: DnsQueryType) => {
  let reply: dnsPacket.DecodedPacket;
  try {
    reply = dnsPacket.decode(message);
  } catch {
    return undefined; // a malformed datagram is someone else's noise, not our answer
  }
  const question = reply.questions?.[0];
  const matches =
    reply.type === "response" &&
    reply.id === id &&
    question !== undefined &&
    question.type === type &&
    normalizeName(question.name) === normalizeName(name);
  return matches ? reply : undefined;
};

const toAnswer = (reply: dnsPacket.DecodedPacket, server: DnsServer): DnsAnswer => ({
  // dns-packet decodes the rcode but its type definitions omit the field.
  rcode: (reply as dnsPacket.DecodedPacket & { rcode?: string }).rcode ?? "NOERROR",
  answers: toRecords(reply.answers),
  additionals: toRecords(reply.additionals),
  server: serverLabel(server),
  truncated: reply.flag_tc,
});

const toRecords = (answers: ReadonlyArray<dnsPacket.Answer> | undefined): ReadonlyArray<DnsRecord> =>
  (answers ?? []).flatMap((answer) => {
    const record = toRecord(answer);
    return record === undefined ? [] : [record];
  });

/** Keeps the record types the resolver uses; the rest (SOA, OPT, RRSIG...) are dropped. */
const toRecord = (answer: dnsPacket.Answer): DnsRecord | undefined => {
  if (answer.type === "OPT") return undefined;
  const common = { name: normalizeName(answer.name), ttl: answer.ttl ?? 0 };
  switch (answer.type) {
    case "MX":
      return { type: "MX", ...common, preference: answer.data.preference ?? 0, exchange: normalizeName(answer.data.exchange) };
    case "A":
    case "AAAA":
      return { type: answer.type, ...common, address: answer.data };
    case "CNAME":
      return { type: "CNAME", ...common, target: normalizeName(answer.data) };
    default:
      return undefined;
  }
};

const serverLabel = (server: DnsServer): string =>
  isIPv6(server.host) ? `[${server.host}]:${server.port}` : `${server.host}:${server.port}`;

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
