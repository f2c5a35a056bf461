// What one delivery attempt of one queue entry produced, whatever the next hop was.
import type { RecipientResult } from "../queue/entry.ts";

/** What went wrong when no reply from the next hop decided the outcome. */
export type Trouble =
  /** Refused, closed, reset, or a 4xx/5xx greeting on every MX host. */
  | "connection"
  /** A host stopped answering (RFC 5321 §4.5.3.2 timeouts). */
  | "timeout"
  /** TLS required and not offered, or the handshake failed. */
  | "tls"
  /** The domain could not be resolved (temporary or permanent). */
  | "dns"
  /** The host broke the protocol (unexpected reply). */
  | "protocol"
  /** Local delivery: the mailbox's node did not take it. */
  | "mailbox"
  /** 8-bit or UTF-8 mail for a host without 8BITMIME/SMTPUTF8 that could not be converted. */
  | "conversion";

export interface Attempt {
  readonly results: ReadonlyArray<RecipientResult>;
  /** For logs: "mx.host[192.0.2.1]", "dns", "mailbox/<user>". */
  readonly server: string;
  /** The MX host and address that answered, or the last one tried. */
  readonly mx?: { readonly host: string; readonly ip: string } | undefined;
  /** Set when the results were made up here because no reply decided them. */
  readonly trouble?: Trouble | undefined;
  /** The host announced DSN (RFC 3461), so NOTIFY went along with the mail and it reports from here on. */
  readonly peerDsn?: boolean | undefined;
}

export const everyone = (
  recipients: ReadonlyArray<string>,
  status: RecipientResult["status"],
  reply: string,
): ReadonlyArray<RecipientResult> => recipients.map((recipient) => ({ recipient, status, reply }) as RecipientResult);
