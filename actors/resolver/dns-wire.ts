// DNS messages as the resolver sees them: encoding one query, deciding whether a reply
// answers it, and decoding the records the resolver uses. Pure: no sockets here.
import * as dnsPacket from "dns-packet";

export type DnsQueryType = "MX" | "A" | "AAAA" | "CNAME" | "TXT" | "PTR" | "TLSA";

export type DnsRecord =
  | { readonly type: "MX"; readonly name: string; readonly ttl: number; readonly preference: number; readonly exchange: string }
  | { readonly type: "A" | "AAAA"; readonly name: string; readonly ttl: number; readonly address: string }
  | { readonly type: "CNAME" | "PTR"; readonly name: string; readonly ttl: number; readonly target: string }
  /** One TXT record: its character-strings as sent (SPF and DKIM join them without separator). */
  | { readonly type: "TXT"; readonly name: string; readonly ttl: number; readonly strings: ReadonlyArray<string> }
  /** DANE (RFC 6698); the association data in lower-case hex. */
  | {
      readonly type: "TLSA";
      readonly name: string;
      readonly ttl: number;
      readonly usage: number;
      readonly selector: number;
      readonly matchingType: number;
      readonly data: string;
    }
  /** Only `minimum` matters here: the negative-caching TTL of RFC 2308. */
  | { readonly type: "SOA"; readonly name: string; readonly ttl: number; readonly minimum: number };

export type DnsRecordOf<T extends DnsRecord["type"]> = Extract<DnsRecord, { type: T }>;

export interface DnsAnswer {
  /** As dns-packet names it: "NOERROR", "NXDOMAIN", "SERVFAIL", "REFUSED", ... */
  readonly rcode: string;
  readonly answers: ReadonlyArray<DnsRecord>;
  /** Authority section: the SOA that bounds negative caching. */
  readonly authorities: ReadonlyArray<DnsRecord>;
  readonly additionals: ReadonlyArray<DnsRecord>;
  /** "host:port" of the server that answered. */
  readonly server: string;
  /** How the answer came: "tcp" after a truncated UDP reply. */
  readonly transport: "udp" | "tcp";
  /** TC bit of this answer; the client retries those over TCP, so callers see it unset. */
  readonly truncated: boolean;
  /** AD bit: a validating resolver vouches for the data (DANE needs it). */
  readonly authenticated: boolean;
}

/** Lower-case, no trailing dot: how names are compared everywhere in the resolver. */
export const normalizeName = (name: string): string => name.toLowerCase().replace(/\.$/, "");

// Advertise a 1232-byte EDNS buffer (the DNS flag day value): large enough for most MX
// answers, small enough to avoid IP fragmentation, which off-path spoofers exploit.
const EDNS_PAYLOAD_SIZE = 1232;

export const encodeQuery = (id: number, name: string, type: DnsQueryType): dnsPacket.Packet => ({
  type: "query",
  id,
  // AD in a query asks a validating resolver to report whether it validated (RFC 6840 §5.7).
  flags: dnsPacket.RECURSION_DESIRED | dnsPacket.AUTHENTIC_DATA,
  questions: [{ type, class: "IN", name: normalizeName(name) }],
  additionals: [{ type: "OPT", name: ".", udpPayloadSize: EDNS_PAYLOAD_SIZE, extendedRcode: 0, ednsVersion: 0, flags: 0, flag_do: false, options: [] }],
});

/** The decoded reply if it answers exactly our question; undefined for garbage and strays. */
export const decodeMatchingReply = (message: Buffer, id: number, name: string, type: DnsQueryType): dnsPacket.DecodedPacket | undefined => {
  let reply: dnsPacket.DecodedPacket;
  try {
    reply = dnsPacket.decode(message);
  } catch {
    return undefined; // a malformed datagram is someone else's noise, not our answer
  }
  const questions = reply.questions ?? [];
  const question = questions[0];
  const matches =
    reply.type === "response" &&
    reply.id === id &&
    questions.length === 1 &&
    question !== undefined &&
    question.type === type &&
    (question.class ?? "IN") === "IN" &&
    normalizeName(question.name) === normalizeName(name);
  return matches ? reply : undefined;
};

export const toAnswer = (reply: dnsPacket.DecodedPacket, server: string, transport: DnsAnswer["transport"]): DnsAnswer => ({
  // dns-packet decodes the rcode but its type definitions omit the field.
  rcode: (reply as dnsPacket.DecodedPacket & { rcode?: string }).rcode ?? "NOERROR",
  answers: toRecords(reply.answers),
  authorities: toRecords(reply.authorities),
  additionals: toRecords(reply.additionals),
  server,
  transport,
  truncated: reply.flag_tc,
  authenticated: reply.flag_ad,
});

const toRecords = (answers: ReadonlyArray<dnsPacket.Answer> | undefined): ReadonlyArray<DnsRecord> =>
  (answers ?? []).flatMap((answer) => {
    const record = toRecord(answer);
    return record === undefined ? [] : [record];
  });

/** Keeps the record types the resolver uses; the rest (OPT, RRSIG, NS...) are dropped. */
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
    case "PTR":
      return { type: answer.type, ...common, target: normalizeName(answer.data) };
    case "TXT":
      return { type: "TXT", ...common, strings: txtStrings(answer.data) };
    case "TLSA": {
      const { usage, selector, matchingType, certificate } = answer.data;
      return { type: "TLSA", ...common, usage, selector, matchingType, data: certificate.toString("hex") };
    }
    case "SOA":
      return { type: "SOA", ...common, minimum: answer.data.minimum ?? 0 };
    default:
      return undefined;
  }
};

const txtStrings = (data: dnsPacket.TxtData): ReadonlyArray<string> =>
  (Array.isArray(data) ? data : [data]).map((part) => (typeof part === "string" ? part : part.toString("utf8")));
