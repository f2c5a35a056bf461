// Who may send what to whom: the session's decisions as pure functions returning an
// SMTP reply (or acceptance), so each rule is testable without a socket.
import { domainOf, domainSyntaxProblem, localPartOf } from "../common/domains.ts";
import { inNetworks } from "../common/networks.ts";

export interface Reply {
  readonly code: number;
  /** Text starting with the enhanced status code. */
  readonly text: string;
}

export type Decision = { readonly ok: true } | { readonly ok: false; readonly reply: Reply; readonly reason: string };

const accept: Decision = { ok: true };
const refuse = (code: number, text: string, reason: string): Decision => ({ ok: false, reply: { code, text }, reason });

export interface RecipientPolicy {
  readonly localDomains: ReadonlyArray<string>;
  readonly isLocalUser: (address: string) => boolean;
  /** Domain → address that takes mail for unknown users of that domain. */
  readonly catchAll: Readonly<Record<string, string>>;
  /** Where postmaster's mail goes when no user has that name and the domain has no catch-all. */
  readonly postmaster: string | undefined;
  readonly trustedNetworks: ReadonlyArray<string>;
}

export interface ClientFacts {
  readonly remoteAddress: string;
  /** The authenticated user, if any. */
  readonly user: string | undefined;
  readonly smtpUtf8: boolean;
}

const hasNonAscii = (text: string) => /[^\x00-\x7f]/.test(text);

/** RFC 6531 §3.4: a non-ASCII address needs SMTPUTF8 on MAIL FROM. */
const checkAddressCharset = (address: string, client: ClientFacts): Decision =>
  hasNonAscii(address) && !client.smtpUtf8
    ? refuse(553, "5.6.7 Non-ASCII address requires the SMTPUTF8 parameter", "utf8-without-smtputf8")
    : accept;

/** RFC 5321 §4.5.1: the name is case-insensitive ("Postmaster", "POSTMASTER"). */
const isPostmaster = (localPart: string) => localPart.toLowerCase() === "postmaster";

/**
 * A domain that cannot exist (RFC 1035 limits, RFC 5321 syntax) is refused for good here,
 * rather than queued to wait out DNS timeouts for days. `code` is RFC 3463's X.1.3 (bad
 * destination mailbox syntax) for recipients, X.1.7 for senders.
 */
const checkDomainSyntax = (address: string, who: "recipient" | "sender"): Decision => {
  const problem = domainSyntaxProblem(domainOf(address));
  if (problem === undefined) return accept;
  return who === "recipient"
    ? refuse(501, `5.1.3 Bad destination mailbox address syntax (${problem})`, "bad-recipient-domain")
    : refuse(501, `5.1.7 Bad sender mailbox address syntax (${problem})`, "bad-sender-domain");
};

/** Where a recipient's mail goes, or why it is refused. Relaying needs auth or a trusted network (no open relay). */
export const decideRecipient = (
  address: string,
  client: ClientFacts,
  policy: RecipientPolicy,
): { readonly decision: Decision; readonly deliverTo: string } => {
  const charset = checkAddressCharset(address, client);
  if (!charset.ok) return { decision: charset, deliverTo: address };
  const unknownUser = { decision: refuse(550, "5.1.1 No such user here", "unknown-user"), deliverTo: address };
  // RFC 5321 §4.5.1: "postmaster" without a domain must be accepted (smtp-server lets it through as is).
  if (!address.includes("@")) {
    return isPostmaster(address) && policy.postmaster !== undefined ? { decision: accept, deliverTo: policy.postmaster } : unknownUser;
  }
  const syntax = checkDomainSyntax(address, "recipient");
  if (!syntax.ok) return { decision: syntax, deliverTo: address };
  const domain = domainOf(address);
  if (policy.localDomains.includes(domain)) {
    if (policy.isLocalUser(address)) return { decision: accept, deliverTo: address };
    const catchAll = policy.catchAll[domain];
    if (catchAll) return { decision: accept, deliverTo: catchAll };
    // …and so must postmaster@ each domain we take mail for, user of that name or not.
    if (isPostmaster(localPartOf(address)) && policy.postmaster !== undefined) return { decision: accept, deliverTo: policy.postmaster };
    return unknownUser;
  }
  if (client.user !== undefined || inNetworks(client.remoteAddress, policy.trustedNetworks)) {
    return { decision: accept, deliverTo: address };
  }
  return { decision: refuse(554, "5.7.1 Relay access denied", "relay-denied"), deliverTo: address };
};

/** An authenticated user may only send as its own address or an alias (else 553 5.7.1). */
export const decideSender = (
  address: string,
  client: ClientFacts,
  mayUseSender: (user: string, address: string) => boolean,
): Decision => {
  const charset = checkAddressCharset(address, client);
  if (!charset.ok) return charset;
  if (address === "") return accept; // the null sender (bounces)
  const syntax = checkDomainSyntax(address, "sender");
  if (!syntax.ok) return syntax;
  if (client.user === undefined) return accept;
  return mayUseSender(client.user, address)
    ? accept
    : refuse(553, `5.7.1 Sender address rejected: not owned by user ${client.user}`, "sender-not-owned");
};
