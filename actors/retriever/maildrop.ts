// What the POP3 (and later IMAP) server needs from the mailbox layer.
// The retriever never touches storage itself: the owner node's mailbox actor answers,
// locally or over NATS, so a retriever on any node can serve any user. The maildrop
// lock (RFC 1939 §4) lives with the owner's mailbox actor too, so it holds cluster-wide.
import type { Effect } from "effect";
import { LockLost, MailboxUnavailable, MaildropEntry, MaildropInUse, NoSuchMessage } from "../../protocol/mailbox.ts";

export { LockLost, MailboxUnavailable, MaildropEntry, MaildropInUse, NoSuchMessage };

export interface MaildropAccess {
  /** Checks credentials; resolves to the canonical user address on success, null on failure. */
  readonly authenticate: (login: string, password: string) => Effect.Effect<string | null>;
  /** Locks the user's maildrop for this session and lists it (arrival order). */
  readonly open: (user: string, holder: string) => Effect.Effect<OpenMaildrop, MailboxUnavailable | MaildropInUse>;
}

/** A maildrop locked by one session. Every call renews the lock's lease. */
export interface OpenMaildrop {
  readonly messages: ReadonlyArray<MaildropEntry>;
  /** How often an idle session must call `keepAlive` to keep the lock. */
  readonly renewEveryMs: number;
  /** The full message (or its header and `topLines` body lines), CRLF line endings, not byte-stuffed. */
  readonly retrieve: (uid: string, topLines?: number) => Effect.Effect<Uint8Array, MailboxUnavailable | NoSuchMessage | LockLost>;
  readonly keepAlive: () => Effect.Effect<void, MailboxUnavailable | LockLost>;
  /** POP3 UPDATE: deletes `remove` and marks `seen` read, atomically, and releases the lock. */
  readonly commit: (changes: { readonly remove: ReadonlyArray<string>; readonly seen: ReadonlyArray<string> }) => Effect.Effect<void, MailboxUnavailable | LockLost>;
  /** Gives the lock back without changing anything (connection dropped). Never fails. */
  readonly release: () => Effect.Effect<void>;
}
