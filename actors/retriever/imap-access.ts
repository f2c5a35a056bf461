// What the IMAP server needs from the node: credentials from the user store (the same
// one SMTP AUTH and POP3 use), mailbox asks through the router (the owner node's
// mailbox actor, local or over NATS), and change notices for a user's mailbox, which
// the owner node publishes on NATS after every write, so sessions on any node hear of them.
import { Effect } from "effect";
import type { UserStore } from "../users/store.ts";
import type { MailboxRouter } from "../mailbox/router.ts";
import type { MailboxError, MailboxOperationName, RequestOf, ResponseOf } from "../../protocol/mailbox.ts";
import type { Reply } from "../runtime/remote.ts";

export interface ImapAccess {
  /** Checks credentials; resolves to the canonical user address on success, null on failure. */
  readonly authenticate: (login: string, password: string) => Effect.Effect<string | null>;
  readonly call: <K extends MailboxOperationName>(op: K, request: RequestOf<K>, attachment?: Uint8Array) => Effect.Effect<Reply<ResponseOf<K>>, MailboxError>;
  /** Calls `onChange` whenever the user's mailbox changes, on whichever node; returns the unsubscribe. */
  readonly watch: (user: string, onChange: () => void) => () => void;
}

export const makeImapAccess = (users: UserStore, mailboxes: MailboxRouter, watch: ImapAccess["watch"]): ImapAccess => ({
  authenticate: (login, password) => Effect.promise(() => users.verify(login, password)).pipe(Effect.map((user) => user ?? null)),
  call: mailboxes.call,
  watch,
});
