// The suppression list (README "Suppression list"): recipients the cluster no longer sends
// to, because they hard-bounced, complained, or were added by an operator or a tenant.
// One record per (scope, recipient) in the cluster's KV bucket `tern_<cluster>_suppressions`
// (cluster/suppressions.ts); a scope is "global" (every sender) or one sender domain.
//
// Here: the record, how an address and a scope become a KV key, and the requests and
// replies of the admin endpoints shared by the API (a tenant, its own sender domains) and
// `tern suppress` (the operator, any scope).
import { hash } from "node:crypto";
import { domainToASCII } from "node:url";
import { Schema } from "effect";

/** Why a recipient is on the list: a hard bounce, a complaint, or an explicit add. */
export const SuppressionReason = Schema.Literals(["bad-mailbox", "bad-domain", "complaint", "manual", "import"]);
export type SuppressionReason = typeof SuppressionReason.Type;

export const suppressionReasons: ReadonlyArray<SuppressionReason> = SuppressionReason.literals;

/** The scope that applies to every sender. */
export const GLOBAL_SCOPE = "global";

/** What the KV bucket holds for one suppressed (scope, recipient). */
export const SuppressionRecord = Schema.Struct({
  /** The recipient as it was first suppressed (its case kept; matching ignores case). */
  address: Schema.String,
  /** "global", or the sender domain (lower case, A-labels) whose mail it applies to. */
  scope: Schema.String,
  reason: SuppressionReason,
  /** When it was added, ms since the epoch. */
  at: Schema.Number,
  /** The message whose bounce or complaint added it. */
  msg: Schema.optional(Schema.String),
  /** The node that added it. */
  node: Schema.optional(Schema.String),
  /** The reply or feedback type that added it, or the operator's note (at most 200 characters). */
  detail: Schema.optional(Schema.String),
});
export type SuppressionRecord = typeof SuppressionRecord.Type;

export const MAX_DETAIL = 200;

/** Which entry refused a recipient. */
export interface SuppressionMatch {
  readonly scope: string;
  readonly reason: SuppressionReason;
}

// ---------------------------------------------------------------------------
// Normal forms and keys

const asciiDomain = (domain: string): string => {
  const lower = domain.toLowerCase();
  return /^[\x00-\x7f]*$/.test(lower) ? lower : domainToASCII(lower) || lower;
};

/**
 * The form addresses are compared in: the whole address lower-cased, the domain in its
 * A-label form. RFC 5321 lets a local part be case-sensitive, but no mailbox provider that
 * matters treats `John@` and `john@` as two people, and a list that missed one of them
 * would keep mailing an address that complained.
 */
export const normalAddress = (address: string): string => {
  const at = address.lastIndexOf("@");
  return at === -1 ? address.toLowerCase() : `${address.slice(0, at).toLowerCase()}@${asciiDomain(address.slice(at + 1))}`;
};

const LDH_DOMAIN = /^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$/;

/** A scope as stored: "global", or a sender domain lower-cased in A-labels; undefined for anything else (an address literal). */
export const normalScope = (scope: string): string | undefined => {
  if (scope.toLowerCase() === GLOBAL_SCOPE) return GLOBAL_SCOPE;
  const domain = asciiDomain(scope);
  return domain.length <= 253 && LDH_DOMAIN.test(domain) ? domain : undefined;
};

/**
 * A scope as the first tokens of a KV key: "global", or "domain.<name with '_' for '.'>".
 * KV keys allow only [-/_=.a-zA-Z0-9], and a mail domain has no '_' (RFC 5321), so the
 * token stands for one domain only, and "example.com" never prefixes "example.com.au".
 */
export const scopeToken = (scope: string): string => (scope === GLOBAL_SCOPE ? GLOBAL_SCOPE : `domain.${scope.replace(/\./g, "_")}`);

/**
 * The KV key of a (scope, address): the scope's token and the first 22 base64url
 * characters (132 bits) of the SHA-256 of the normal address (no '.'): any address fits
 * the key alphabet, keys stay short for the in-memory view every node keeps, and the
 * address itself is in the value.
 */
export const suppressionKey = (scope: string, address: string): string => `${scopeToken(scope)}.${addressHash(address)}`;

/** On every recipient's check: `crypto.hash` is several times faster than a Hash object for one short input. */
export const addressHash = (address: string): string => hash("sha256", normalAddress(address), "base64url").slice(0, 22);

/** The scope token of a key (everything before its last '.'). */
export const scopeTokenOfKey = (key: string): string => key.slice(0, key.lastIndexOf("."));

/** The address hash of a key (after its last '.'). */
export const hashOfKey = (key: string): string => key.slice(key.lastIndexOf(".") + 1);

/** The reply a submission gets for a suppressed recipient (SMTP RCPT, and `refused` of an API submit). */
export const suppressedReply = (match: SuppressionMatch): { readonly code: number; readonly text: string } => ({
  code: 550,
  text: `5.7.1 Recipient address is on the suppression list (${match.reason}, scope ${match.scope}); not sent`,
});

// ---------------------------------------------------------------------------
// Admin requests: the same bodies for the API (`api.v1.<tenant>.suppressions.<op>`) and
// for `tern suppress` (tagged, on `tern.<cluster>.suppressions.admin`).

export const MAX_BATCH = 1_000;
export const MAX_PAGE = 1_000;

const Address = Schema.String.check(Schema.makeFilter((s: string) => /^[^@\s<>,;]+@[^@\s<>,;]+$/.test(s) || "expected local@domain"));
const Scope = Schema.String.check(Schema.makeFilter((s: string) => normalScope(s) !== undefined || `expected "global" or a domain name`));
const Detail = Schema.String.check(Schema.isMaxLength(MAX_DETAIL));

/** Adds addresses to one scope ("manual"); addresses already there keep their record. */
export const SuppressionAddRequest = Schema.Struct({
  scope: Scope,
  addresses: Schema.Array(Address).check(Schema.isMinLength(1), Schema.isMaxLength(MAX_BATCH)),
  detail: Schema.optional(Detail),
});
export type SuppressionAddRequest = typeof SuppressionAddRequest.Type;

/** Adds a list brought from elsewhere ("import"), each address with its own scope. */
export const SuppressionImportRequest = Schema.Struct({
  entries: Schema.Array(Schema.Struct({ address: Address, scope: Scope })).check(Schema.isMinLength(1), Schema.isMaxLength(MAX_BATCH)),
});
export type SuppressionImportRequest = typeof SuppressionImportRequest.Type;

export const SuppressionRemoveRequest = Schema.Struct({
  scope: Scope,
  addresses: Schema.Array(Address).check(Schema.isMinLength(1), Schema.isMaxLength(MAX_BATCH)),
});
export type SuppressionRemoveRequest = typeof SuppressionRemoveRequest.Type;

/**
 * A page of the list: one scope, or every scope the caller may see; with `address`, that
 * address's entries only. `after` is the previous page's `next`.
 */
export const SuppressionListRequest = Schema.Struct({
  scope: Schema.optional(Scope),
  address: Schema.optional(Address),
  after: Schema.optional(Schema.String.check(Schema.isMaxLength(300))),
  limit: Schema.optional(Schema.Int.check(Schema.isBetween({ minimum: 1, maximum: MAX_PAGE }))),
});
export type SuppressionListRequest = typeof SuppressionListRequest.Type;

export const SuppressionChangeReply = Schema.Struct({
  /** Add and import: written now. Remove: taken off the list. */
  changed: Schema.Array(Schema.String),
  /** Add and import: on the list already (their record kept). Remove: not on the list. */
  unchanged: Schema.Array(Schema.String),
});
export type SuppressionChangeReply = typeof SuppressionChangeReply.Type;

export const SuppressionListReply = Schema.Struct({
  entries: Schema.Array(SuppressionRecord),
  /** Entries the request selects, all pages together. */
  total: Schema.Int,
  /** Give as `after` for the next page; absent on the last one. */
  next: Schema.optional(Schema.String),
});
export type SuppressionListReply = typeof SuppressionListReply.Type;

/** `tern suppress` to any node (queue group): one of the four operations. */
export const SuppressionAdminRequest = Schema.Union([
  Schema.TaggedStruct("Add", SuppressionAddRequest.fields),
  Schema.TaggedStruct("Import", SuppressionImportRequest.fields),
  Schema.TaggedStruct("Remove", SuppressionRemoveRequest.fields),
  Schema.TaggedStruct("List", SuppressionListRequest.fields),
]);
export type SuppressionAdminRequest = typeof SuppressionAdminRequest.Type;

export const SuppressionAdminReply = Schema.Union([
  Schema.TaggedStruct("Changed", { node: Schema.String, ...SuppressionChangeReply.fields }),
  Schema.TaggedStruct("Listed", { node: Schema.String, ...SuppressionListReply.fields }),
]);
export type SuppressionAdminReply = typeof SuppressionAdminReply.Type;

/** Why an admin request was not done: bad input, a scope the caller may not touch, or the bucket did not answer. */
export class SuppressionAdminError extends Schema.TaggedError<SuppressionAdminError>()("SuppressionAdminError", {
  code: Schema.Literals(["BadRequest", "ScopeNotAllowed", "Unavailable"]),
  message: Schema.String,
}) {}
