// Headers a node adds: the Received trace (RFC 5321 §4.4) on every message, and
// Message-ID and Date on submitted mail that lacks them (RFC 6409 §8). SMTP sessions and
// the NATS API write the same trace, each naming where the message came from.
import { rfc5322Date } from "../common/dates.ts";

export interface TraceFacts {
  readonly hostname: string;
  readonly helo: string;
  readonly clientHostname: string | undefined;
  readonly remoteAddress: string;
  readonly secure: boolean;
  readonly authenticated: boolean;
  readonly id: string;
  readonly recipients: ReadonlyArray<string>;
  readonly at: number;
}

/** RFC 3848 protocol names: ESMTP, ESMTPS (TLS), ESMTPA (auth), ESMTPSA (both). */
const protocolName = (secure: boolean, authenticated: boolean) => `ESMTP${secure ? "S" : ""}${authenticated ? "A" : ""}`;

/**
 * What the client said of itself (its EHLO name, its reverse DNS name), as printable ASCII:
 * anything else becomes "?" (as Postfix writes it). The name is the client's to choose, and
 * written as it came it could end the field and start another (a CR or LF, or a character
 * whose low byte is one).
 */
export const printable = (claimed: string) => claimed.replace(/[^\x21-\x7e]/g, "?");

/** The Received field: `from` is its from clause, `protocol` its with clause. */
const traceField = (from: string, protocol: string, facts: { hostname: string; id: string; recipients: ReadonlyArray<string>; at: number }) => {
  // A recipient may be UTF-8 (SMTPUTF8 mail, whose header fields may be: RFC 6532), never a control character.
  const forClause = facts.recipients.length === 1 ? `\r\n\tfor <${facts.recipients[0]!.replace(/[\x00-\x1f\x7f]/g, "?")}>` : "";
  return `Received: from ${from}\r\n\tby ${facts.hostname} (Tern) with ${protocol} id ${facts.id}${forClause};\r\n\t${rfc5322Date(facts.at)}\r\n`;
};

export const receivedHeader = (facts: TraceFacts): string => {
  const client = facts.clientHostname && !facts.clientHostname.startsWith("[") ? `${printable(facts.clientHostname)} ` : "";
  return traceField(`${printable(facts.helo) || "unknown"} (${client}[${facts.remoteAddress}])`, protocolName(facts.secure, facts.authenticated), facts);
};

/** The trace of a message submitted over the NATS API: from the tenant, with NATS. */
export const apiReceivedHeader = (facts: { hostname: string; tenant: string; id: string; recipients: ReadonlyArray<string>; at: number }): string =>
  traceField(`api (tenant ${facts.tenant})`, "NATS", facts);

const hasHeader = (headerSection: string, name: string) => new RegExp(`^${name}:`, "im").test(headerSection);

/** The Message-ID a submitted message without one gets: its queue id at the node's name. */
export const submissionMessageId = (id: string, hostname: string) => `<${id}@${hostname}>`;

/** Message-ID and Date for submitted mail that has none. */
export const missingSubmissionHeaders = (headerSection: string, facts: { id: string; hostname: string; at: number }): string =>
  (hasHeader(headerSection, "message-id") ? "" : `Message-ID: ${submissionMessageId(facts.id, facts.hostname)}\r\n`) +
  (hasHeader(headerSection, "date") ? "" : `Date: ${rfc5322Date(facts.at)}\r\n`);
