// A scripted DNS server (UDP and TCP on one port) for what dnsmasq cannot be made to do:
// SERVFAIL on demand, silence, spoofed replies, CNAME loops, different answers per
// transport, counting queries.
import * as dgram from "node:dgram";
import * as net from "node:net";
import * as dnsPacket from "dns-packet";

/** What the handler wants sent back: one reply, several in order, or nothing at all. */
export type ScriptedReply = dnsPacket.Packet | ReadonlyArray<dnsPacket.Packet> | "drop";

export type Transport = "udp" | "tcp";

export interface ReceivedQuery {
  readonly query: dnsPacket.DecodedPacket;
  readonly transport: Transport;
  /** The client's source port. */
  readonly port: number;
}

export interface ScriptedDns {
  host: "127.0.0.1";
  port: number;
  /** Every query received, in order, over either transport. */
  queries: dnsPacket.DecodedPacket[];
  /** The same, with transport and source port. */
  received: ReceivedQuery[];
  stop(): Promise<void>;
}

/** `from` is where the query came from, so a test can play a spoofer answering there. */
export type ScriptHandler = (query: dnsPacket.DecodedPacket, transport: Transport, from: { address: string; port: number }) => ScriptedReply;

const packetsOf = (reply: ScriptedReply): ReadonlyArray<dnsPacket.Packet> =>
  reply === "drop" ? [] : Array.isArray(reply) ? reply : [reply as dnsPacket.Packet];

export const startScriptedDns = async (handler: ScriptHandler): Promise<ScriptedDns> => {
  const queries: dnsPacket.DecodedPacket[] = [];
  const received: ReceivedQuery[] = [];
  const answer = (message: Buffer, transport: Transport, port: number) => {
    const query = dnsPacket.decode(message);
    queries.push(query);
    received.push({ query, transport, port });
    return packetsOf(handler(query, transport, { address: "127.0.0.1", port }));
  };
  const { udp, tcp, connections } = await bindBoth(answer);
  const stop = async () => {
    for (const socket of connections) socket.destroy();
    await Promise.all([new Promise<void>((done) => udp.close(() => done())), new Promise<void>((done) => tcp.close(() => done()))]);
  };
  return { host: "127.0.0.1", port: udp.address().port, queries, received, stop };
};

type Answer = (message: Buffer, transport: Transport, port: number) => ReadonlyArray<dnsPacket.Packet>;

/** UDP on a free port, then TCP on the same one; another free port if TCP's is taken. */
const bindBoth = async (answer: Answer) => {
  for (let attempt = 0; ; attempt++) {
    const udp = await bindUdp(answer);
    const connections = new Set<net.Socket>();
    const tcp = await listenTcp(udp.address().port, answer, connections).catch((error: Error) => error);
    if (!(tcp instanceof Error)) return { udp, tcp, connections };
    await new Promise<void>((done) => udp.close(() => done()));
    if (attempt >= 10) throw tcp;
  }
};

const bindUdp = (answer: Answer): Promise<dgram.Socket> =>
  new Promise((resolve, reject) => {
    const socket = dgram.createSocket("udp4");
    socket.on("message", (message, from) => {
      for (const packet of answer(message, "udp", from.port)) socket.send(dnsPacket.encode(packet), from.port, from.address);
    });
    socket.once("error", reject);
    socket.bind(0, "127.0.0.1", () => resolve(socket));
  });

const listenTcp = (port: number, answer: Answer, connections: Set<net.Socket>): Promise<net.Server> =>
  new Promise((resolve, reject) => {
    const server = net.createServer((socket) => {
      connections.add(socket);
      socket.on("close", () => connections.delete(socket));
      socket.on("error", () => socket.destroy());
      let pending = Buffer.alloc(0);
      socket.on("data", (chunk: Buffer) => {
        pending = Buffer.concat([pending, chunk]);
        while (pending.length >= 2 && pending.length >= 2 + pending.readUInt16BE(0)) {
          const message = pending.subarray(2, 2 + pending.readUInt16BE(0));
          pending = pending.subarray(2 + message.length);
          for (const packet of answer(message, "tcp", socket.remotePort ?? 0)) socket.write(dnsPacket.streamEncode(packet));
        }
      });
    });
    server.once("error", reject);
    server.listen(port, "127.0.0.1", () => resolve(server));
  });

const RCODE_VALUES = { NOERROR: 0, FORMERR: 1, SERVFAIL: 2, NXDOMAIN: 3, NOTIMP: 4, REFUSED: 5 } as const;

/** A response to `query` echoing its id and question, with the given rcode and records. */
export const replyTo = (
  query: dnsPacket.DecodedPacket,
  reply: {
    rcode?: keyof typeof RCODE_VALUES;
    answers?: dnsPacket.Answer[];
    authorities?: dnsPacket.Answer[];
    additionals?: dnsPacket.Answer[];
    id?: number;
    truncated?: boolean;
  } = {},
): dnsPacket.Packet => ({
  type: "response",
  id: reply.id ?? query.id ?? 0,
  // dns-packet writes the low 4 bits of flags as the rcode.
  flags:
    dnsPacket.RECURSION_DESIRED |
    dnsPacket.RECURSION_AVAILABLE |
    (reply.truncated ? dnsPacket.TRUNCATED_RESPONSE : 0) |
    RCODE_VALUES[reply.rcode ?? "NOERROR"],
  questions: query.questions ?? [],
  answers: reply.answers ?? [],
  authorities: reply.authorities ?? [],
  additionals: reply.additionals ?? [],
});

export interface ZoneOptions {
  /** Put this SOA in the authority section of negative answers (RFC 2308). */
  soa?: { name: string; ttl: number; minimum: number };
}

/**
 * A scripted server answering from a tiny zone: records of the asked type, or the name's
 * CNAME (not chased: the client must ask again); NXDOMAIN for unknown names.
 */
export const startZoneDns = (zone: Record<string, dnsPacket.Answer[]>, options: ZoneOptions = {}): Promise<ScriptedDns> =>
  startScriptedDns((query) => {
    const question = query.questions?.[0];
    const records = question === undefined ? undefined : zone[question.name.toLowerCase()];
    const authorities: dnsPacket.Answer[] = options.soa
      ? [{ type: "SOA", name: options.soa.name, ttl: options.soa.ttl, data: { mname: `ns.${options.soa.name}`, rname: `hostmaster.${options.soa.name}`, minimum: options.soa.minimum } }]
      : [];
    if (records === undefined) return replyTo(query, { rcode: "NXDOMAIN", authorities });
    const matching = records.filter((record) => record.type === question?.type);
    const answers = matching.length > 0 ? matching : records.filter((record) => record.type === "CNAME");
    return replyTo(query, { answers, authorities: answers.length === 0 ? authorities : [] });
  });
