// What the POP3 (and later IMAP) server needs from the mailbox layer.
// The retriever never touches storage itself: the owner node's mailbox actor answers,
// locally or over NATS, so a retriever on any node can serve any user.
import type { Effect } from "effect";
import { Schema } from "effect";

export const MaildropEntry = Schema.Struct({
  /** Stable unique id of the message within the user's mailbox (POP3 UIDL). */
  uid: Schema.String,
  /** Size in octets of the stored message (CRLF line endings). */
  size: Schema.Number,
});
export type MaildropEntry = typeof MaildropEntry.Type;

/** The owner node of the mailbox cannot be reached now; mail is safe, try later. */
export class MailboxUnavailable extends Schema.TaggedError<MailboxUnavailable>()("MailboxUnavailable", {
  user: Schema.String,
  detail: Schema.String,
}) {}

export class NoSuchMessage extends Schema.TaggedError<NoSuchMessage>()("NoSuchMessage", {
  user: Schema.String,
  uid: Schema.String,
}) {}

export interface MaildropAccess {
  /** Checks credentials; resolves to the canonical user address on success, null on failure. */
  readonly authenticate: (user: string, password: string) => Effect.Effect<string | null>;
  /** Messages in arrival order. */
  readonly list: (user: string) => Effect.Effect<ReadonlyArray<MaildropEntry>, MailboxUnavailable>;
  /** The full message, CRLF line endings, not byte-stuffed. */
  readonly retrieve: (user: string, uid: string) => Effect.Effect<Uint8Array, MailboxUnavailable | NoSuchMessage>;
  /** Deletes the given messages atomically (POP3 UPDATE state). */
  readonly remove: (user: string, uids: ReadonlyArray<string>) => Effect.Effect<void, MailboxUnavailable>;
}
