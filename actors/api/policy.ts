// Who may submit what over the NATS API: pure decisions, like actors/session/policy.ts
// (whose recipient and sender-syntax rules they reuse), answered as typed ApiErrors.
//
// The API's caller is an application the NATS server authenticated into a tenant's
// subject space, so it is treated like an authenticated submission client: it may relay,
// but only from senders it owns. A sender is owned when its domain is a local domain,
// when it is an address a configured user may send as (the user's own or an alias), or
// when its domain is one of the tenant's senderDomains; and, when tenants are configured,
// the sender's tenant (actors/common/tenants.ts) must be the subject's tenant. The null
// sender is refused: bounces are the MTA's to write, not an application's.
import { ApiError, type RefusedRecipient } from "../../protocol/api.ts";
import { domainOf } from "../common/domains.ts";
import { DEFAULT_TENANT, tenantOf } from "../common/tenants.ts";
import { decideRecipient, decideSender, type ClientFacts, type RecipientPolicy } from "../session/policy.ts";

export interface Tenant {
  readonly name: string;
  readonly senderDomains: ReadonlyArray<string>;
}

export interface SenderPolicy {
  readonly tenants: ReadonlyArray<Tenant>;
  readonly localDomains: ReadonlyArray<string>;
  /** An address some configured user may send as (its own or an alias). */
  readonly isUserAddress: (address: string) => boolean;
}

/** The subject's tenant token must name a configured tenant, or be "default". */
export const checkTenant = (token: string, tenants: ReadonlyArray<Tenant>): ApiError | undefined =>
  token === DEFAULT_TENANT || tenants.some((t) => t.name === token)
    ? undefined
    : new ApiError({ code: "UnknownTenant", message: `no tenant ${JSON.stringify(token)} is configured` });

/** The application's facts as the session policy sees them: authenticated (it may relay), no SMTPUTF8. */
const apiClient = (tenant: string): ClientFacts => ({ remoteAddress: "api", user: `api:${tenant}`, smtpUtf8: false });

export const checkSender = (sender: string, tenant: string, policy: SenderPolicy): ApiError | undefined => {
  if (sender === "") return new ApiError({ code: "SenderNotAllowed", message: "the null sender cannot be used over the API" });
  const syntax = decideSender(sender, { ...apiClient(tenant), user: undefined }, () => true);
  if (!syntax.ok) return new ApiError({ code: "BadRequest", message: `envelope sender ${sender}: ${syntax.reply.code} ${syntax.reply.text}` });
  const domain = domainOf(sender);
  const tenantDomains = policy.tenants.find((t) => t.name === tenant)?.senderDomains ?? [];
  const owned =
    policy.localDomains.includes(domain) || policy.isUserAddress(sender) || tenantDomains.some((d) => d.toLowerCase() === domain);
  if (!owned) return new ApiError({ code: "SenderNotAllowed", message: `sender ${sender} is not in a local domain, a user's address or the tenant's sender domains` });
  const owner = tenantOf(sender, policy.tenants);
  if (owner !== tenant) return new ApiError({ code: "SenderNotAllowed", message: `sender ${sender} belongs to tenant ${owner}, not ${tenant}` });
  return undefined;
};

export interface RecipientDecisions {
  /** Envelope recipients taken, each with where it is delivered (differs for catch-all and postmaster). */
  readonly accepted: ReadonlyArray<{ readonly recipient: string; readonly deliverTo: string }>;
  readonly refused: ReadonlyArray<RefusedRecipient>;
}

/** Each distinct recipient (compared without case) decided as an authenticated submission would be. */
export const decideRecipients = (recipients: ReadonlyArray<string>, tenant: string, policy: RecipientPolicy): RecipientDecisions => {
  const seen = new Set<string>();
  const accepted: Array<{ recipient: string; deliverTo: string }> = [];
  const refused: RefusedRecipient[] = [];
  for (const recipient of recipients) {
    if (seen.has(recipient.toLowerCase())) continue;
    seen.add(recipient.toLowerCase());
    const { decision, deliverTo } = decideRecipient(recipient, apiClient(tenant), policy);
    if (decision.ok) accepted.push({ recipient, deliverTo });
    else refused.push({ recipient, reason: decision.reason, reply: `${decision.reply.code} ${decision.reply.text}` });
  }
  return { accepted, refused };
};

/** When a message with this send-at is due: now for none or a past time; refused beyond `maxAheadMs`. */
export const dueTimeOf = (sendAt: number | string | undefined, now: number, maxAheadMs: number): number | ApiError => {
  if (sendAt === undefined) return now;
  const at = typeof sendAt === "number" ? sendAt : Date.parse(sendAt);
  if (!Number.isFinite(at)) return new ApiError({ code: "BadRequest", message: `sendAt ${JSON.stringify(sendAt)} is not a time (epoch ms or ISO 8601)` });
  if (at > now + maxAheadMs) {
    return new ApiError({ code: "LimitExceeded", message: `sendAt is more than ${Math.round(maxAheadMs / 3_600_000)} h ahead (api.maxSendAtAheadMs)` });
  }
  return Math.max(at, now);
};
