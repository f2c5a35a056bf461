// Where mail for a domain goes: the resolver's answer, as it crosses NATS.
import { Schema } from "effect";

/** One MX host (or the domain itself, for the implicit-MX fallback) with its addresses. */
export const MailHost = Schema.Struct({
  name: Schema.String,
  preference: Schema.Number,
  addresses: Schema.Array(Schema.String),
});
export type MailHost = typeof MailHost.Type;

/** Hosts in the order delivery must try them (lowest preference first). */
export const MailRoute = Schema.Struct({
  domain: Schema.String,
  hosts: Schema.Array(MailHost),
  /** true when the domain had no MX and its own A record is used (RFC 5321 §5.1). */
  implicitMx: Schema.Boolean,
});
export type MailRoute = typeof MailRoute.Type;

export const ResolveRequest = Schema.Struct({ domain: Schema.String });
export type ResolveRequest = typeof ResolveRequest.Type;

/** Temporary: SERVFAIL, REFUSED, timeouts, network errors. Never a bounce. */
export class DnsTemporaryFailure extends Schema.TaggedError<DnsTemporaryFailure>()("DnsTemporaryFailure", {
  domain: Schema.String,
  detail: Schema.String,
}) {}

/** Permanent: NXDOMAIN, or no MX and no address at all. The recipient bounces. */
export class DnsPermanentFailure extends Schema.TaggedError<DnsPermanentFailure>()("DnsPermanentFailure", {
  domain: Schema.String,
  detail: Schema.String,
}) {}

export const ResolveFailure = Schema.Union([DnsTemporaryFailure, DnsPermanentFailure]);
export type ResolveFailure = typeof ResolveFailure.Type;
