// A scripted UDP DNS server for what dnsmasq cannot be made to do: SERVFAIL on demand,
// silence, spoofed replies, counting queries.
import * as dgram from "node:dgram";
import * as dnsPacket from "dns-packet";

/** What the handler wants sent back: one reply, several in order, or nothing at all. */
export type ScriptedReply = dnsPacket.Packet | ReadonlyArray<dnsPacket.Packet> | "drop";

export interface ScriptedDns {
  host: "127.0.0.1";
  port: number;
  /** Every query received, in order. */
  queries: dnsPacket.DecodedPacket[];
  stop(): Promise<void>;
}

export const startScriptedDns = (handler: (query: dnsPacket.DecodedPacket) => ScriptedReply): Promise<ScriptedDns> =>
  new Promise((resolve, reject) => {
    const socket = dgram.createSocket("udp4");
    const queries: dnsPacket.DecodedPacket[] = [];
    socket.on("message", (message, from) => {
      const query = dnsPacket.decode(message);
      queries.push(query);
      const reply = handler(query);
      if (reply === "drop") return;
      for (const packet of Array.isArray(reply) ? reply : [reply]) socket.send(dnsPacket.encode(packet), from.port, from.address);
    });
    socket.once("error", reject);
    socket.bind(0, "127.0.0.1", () => {
      const stop = () => new Promise<void>((done) => socket.close(() => done()));
      resolve({ host: "127.0.0.1", port: socket.address().port, queries, stop });
    });
  });

const RCODE_VALUES = { NOERROR: 0, FORMERR: 1, SERVFAIL: 2, NXDOMAIN: 3, NOTIMP: 4, REFUSED: 5 } as const;

/** A response to `query` echoing its id and question, with the given rcode and records. */
export const replyTo = (
  query: dnsPacket.DecodedPacket,
  reply: { rcode?: keyof typeof RCODE_VALUES; answers?: dnsPacket.Answer[]; additionals?: dnsPacket.Answer[]; id?: number } = {},
): dnsPacket.Packet => ({
  type: "response",
  id: reply.id ?? query.id ?? 0,
  // dns-packet writes the low 4 bits of flags as the rcode.
  flags: dnsPacket.RECURSION_DESIRED | dnsPacket.RECURSION_AVAILABLE | RCODE_VALUES[reply.rcode ?? "NOERROR"],
  questions: query.questions ?? [],
  answers: reply.answers ?? [],
  additionals: reply.additionals ?? [],
});
