// Headers the session adds: the Received trace (RFC 5321 §4.4) on every message, and
// Message-ID and Date on submitted mail that lacks them (RFC 6409 §8).
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

export const receivedHeader = (facts: TraceFacts): string => {
  const client = facts.clientHostname && !facts.clientHostname.startsWith("[") ? `${facts.clientHostname} ` : "";
  const forClause = facts.recipients.length === 1 ? `\r\n\tfor <${facts.recipients[0]}>` : "";
  return (
    `Received: from ${facts.helo || "unknown"} (${client}[${facts.remoteAddress}])\r\n` +
    `\tby ${facts.hostname} (Tern) with ${protocolName(facts.secure, facts.authenticated)} id ${facts.id}${forClause};\r\n` +
    `\t${rfc5322Date(facts.at)}\r\n`
  );
};

const hasHeader = (headerSection: string, name: string) => new RegExp(`^${name}:`, "im").test(headerSection);

/** Message-ID and Date for submitted mail that has none. */
export const missingSubmissionHeaders = (headerSection: string, facts: { id: string; hostname: string; at: number }): string =>
  (hasHeader(headerSection, "message-id") ? "" : `Message-ID: <${facts.id}@${facts.hostname}>\r\n`) +
  (hasHeader(headerSection, "date") ? "" : `Date: ${rfc5322Date(facts.at)}\r\n`);
