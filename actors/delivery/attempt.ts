// What one delivery attempt of one queue entry produced, whatever the next hop was.
import type { RecipientResult } from "../../protocol/delivery.ts";

/** What one recipient got: the next hop's reply, local storage, or a tagged failure. */
export interface RecipientAttempt {
  readonly recipient: string;
  readonly result: RecipientResult;
}

export interface Attempt {
  readonly results: ReadonlyArray<RecipientAttempt>;
  /** For logs: "mx.host[192.0.2.1]", "dns", "mailbox/<user>", "admin". */
  readonly server: string;
  /** The MX host and address that answered, or the last one tried. */
  readonly mx?: { readonly host: string; readonly ip: string } | undefined;
  /** The IP pool address the connection left from (absent: the system's default address). */
  readonly source?: string | undefined;
  /** The host announced DSN (RFC 3461), so NOTIFY went along with the mail and it reports from here on. */
  readonly peerDsn?: boolean | undefined;
}

/** The same result for every recipient (one reply to the whole transaction, or trouble before any). */
export const everyone = (recipients: ReadonlyArray<string>, result: RecipientResult): ReadonlyArray<RecipientAttempt> =>
  recipients.map((recipient) => ({ recipient, result }));
