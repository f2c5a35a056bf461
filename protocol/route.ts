// Where mail for a domain goes: the resolver's answer, as it crosses NATS.
import { Schema } from "effect";

/** One MX host (or the domain itself, for the implicit-MX fallback) with its addresses. */
export const MailHost = Schema.Struct({
  name: Schema.String,
  preference: Schema.Number,
  addresses: Schema.Array(Schema.String),
});
export type MailHost = typeof MailHost.Type;

/** The DNS answer a route or failure rests on, for delivery logs and events. */
export const DnsSource = Schema.Struct({
  /** "host:port" of the DNS server that answered. */
  server: Schema.String,
  /** Its rcode: "NOERROR", "NXDOMAIN", "SERVFAIL", ... */
  rcode: Schema.String,
});
export type DnsSource = typeof DnsSource.Type;

/** Hosts in the order delivery must try them (lowest preference first, equal ones shuffled). */
export const MailRoute = Schema.Struct({
  domain: Schema.String,
  hosts: Schema.Array(MailHost),
  /** true when the domain had no MX and its own address is used (RFC 5321 §5.1). */
  implicitMx: Schema.Boolean,
  /** The MX answer (absent for address literals, and from resolvers older than this field). */
  dns: Schema.optional(DnsSource),
});
export type MailRoute = typeof MailRoute.Type;

export const ResolveRequest = Schema.Struct({ domain: Schema.String });
export type ResolveRequest = typeof ResolveRequest.Type;

// Optional so that failures from older nodes (and tests) still decode.
const failureSource = {
  /** The rcode of the answer that decided, when an answer came (none for timeouts). */
  rcode: Schema.optional(Schema.String),
  /** "host:port" of the DNS server that gave that answer, or was last tried. */
  server: Schema.optional(Schema.String),
};

/** Temporary: SERVFAIL, REFUSED, timeouts, network errors, CNAME loops. Never a bounce. */
export class DnsTemporaryFailure extends Schema.TaggedError<DnsTemporaryFailure>()("DnsTemporaryFailure", {
  domain: Schema.String,
  detail: Schema.String,
  ...failureSource,
}) {}

/** Why a domain permanently takes no mail from us. */
export const PermanentDnsReason = Schema.Literals(["nxdomain", "null-mx", "no-address", "non-public-address"]);
export type PermanentDnsReason = typeof PermanentDnsReason.Type;

/** Permanent: NXDOMAIN, null MX, no address, or only refused addresses. The recipient bounces. */
export class DnsPermanentFailure extends Schema.TaggedError<DnsPermanentFailure>()("DnsPermanentFailure", {
  domain: Schema.String,
  detail: Schema.String,
  reason: Schema.optional(PermanentDnsReason),
  ...failureSource,
}) {}

export const ResolveFailure = Schema.Union([DnsTemporaryFailure, DnsPermanentFailure]);
export type ResolveFailure = typeof ResolveFailure.Type;

// RFC 7505 §4.2 asks for 5.1.10 on a null MX; RFC 3463 5.1.2 is "bad destination system
// address", 5.4.4 "unable to route".
const PERMANENT_STATUS: Record<PermanentDnsReason, string> = {
  nxdomain: "5.1.2",
  "null-mx": "5.1.10",
  "no-address": "5.4.4",
  "non-public-address": "5.4.4",
};

/** The enhanced status (RFC 3463) a recipient fails with when its domain permanently takes no mail. */
export const dnsFailureStatus = (reason: PermanentDnsReason): string => PERMANENT_STATUS[reason];
