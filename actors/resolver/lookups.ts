// The other questions a mail server asks, through the same transport and cache as routing:
// TXT (SPF, DMARC, MTA-STS, DKIM keys), PTR (a connecting client's name), TLSA (DANE).
import { isIP, isIPv4 } from "node:net";
import { Effect } from "effect";
import type { DnsTemporaryFailure } from "../../protocol/route.ts";
import type { DnsRecordOf } from "./dns-client.ts";
import { temporaryFailure } from "./mail-route.ts";
import type { RecordSource } from "./records.ts";

/**
 * Each TXT record as one string, its character-strings joined without separator (RFC 7208
 * §3.3, RFC 6376 §3.6.2.2). "No such name" and "no TXT" both give none: SPF and DMARC read
 * both as "no policy". RecordSource.lookup tells them apart where that matters.
 */
export const lookupTxt = (records: RecordSource, name: string): Effect.Effect<ReadonlyArray<string>, DnsTemporaryFailure> =>
  records.lookup(name, "TXT").pipe(
    Effect.map((set) => set.records.flatMap((record) => (record.type === "TXT" ? [record.strings.join("")] : []))),
    Effect.mapError(temporaryFailure(name)),
  );

/**
 * Host names of an address (usually one). Meant for the SMTP greeting path, so it takes a
 * short budget: one round over the servers with `timeoutMs` each. An address with no PTR
 * gives none; that is common and no error.
 */
export const lookupPtr = (
  records: RecordSource,
  address: string,
  timeoutMs: number,
): Effect.Effect<ReadonlyArray<string>, DnsTemporaryFailure> => {
  const name = reverseName(address);
  if (name === undefined) return Effect.succeed([]); // not an IP: nothing in the reverse tree
  return records.lookup(name, "PTR", { timeoutMs, tries: 1 }).pipe(
    Effect.map((set) => set.records.flatMap((record) => (record.type === "PTR" ? [record.target] : []))),
    Effect.mapError(temporaryFailure(name)),
  );
};

export interface TlsaAnswer {
  readonly records: ReadonlyArray<DnsRecordOf<"TLSA">>;
  /** The resolver validated them (AD bit). DANE must not use records without it (RFC 7672 §2.2). */
  readonly authenticated: boolean;
}

/** TLSA records of an SMTP server: `_port._tcp.host` (RFC 7672). */
export const lookupTlsa = (records: RecordSource, host: string, port = 25): Effect.Effect<TlsaAnswer, DnsTemporaryFailure> => {
  const name = `_${port}._tcp.${host}`;
  return records.lookup(name, "TLSA").pipe(
    Effect.map((set) => ({
      records: set.records.filter((record): record is DnsRecordOf<"TLSA"> => record.type === "TLSA"),
      authenticated: set.authenticated,
    })),
    Effect.mapError(temporaryFailure(name)),
  );
};

/** 192.0.2.1 → 1.2.0.192.in-addr.arpa; IPv6 as reversed nibbles under ip6.arpa (RFC 3596). */
export const reverseName = (address: string): string | undefined => {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address)?.[1];
  const ip = mapped ?? address;
  if (isIPv4(ip)) return `${ip.split(".").reverse().join(".")}.in-addr.arpa`;
  if (isIP(ip) !== 6) return undefined;
  return `${[...expandIPv6(ip)].reverse().join(".")}.ip6.arpa`;
};

/** The 32 hex digits of an IPv6 address, "::" and an embedded IPv4 tail expanded. */
const expandIPv6 = (address: string): string => {
  const ipv4Tail = /(\d+\.\d+\.\d+\.\d+)$/.exec(address)?.[1];
  const withoutTail = ipv4Tail === undefined ? address : address.slice(0, -ipv4Tail.length) + ipv4AsGroups(ipv4Tail);
  const [head = "", tail] = withoutTail.split("::");
  const groups = (part: string) => (part === "" ? [] : part.split(":"));
  const missing = 8 - groups(head).length - groups(tail ?? "").length;
  const all = tail === undefined ? groups(head) : [...groups(head), ...Array<string>(missing).fill("0"), ...groups(tail)];
  return all.map((group) => group.padStart(4, "0")).join("").toLowerCase();
};

/** 192.0.2.1 → "c000:0201": the two IPv6 groups an embedded IPv4 address stands for. */
const ipv4AsGroups = (ipv4: string): string => {
  const hex = ipv4.split(".").map((byte) => Number(byte).toString(16).padStart(2, "0"));
  return `${hex[0]}${hex[1]}:${hex[2]}${hex[3]}`;
};
