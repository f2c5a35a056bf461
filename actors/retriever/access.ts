// The retriever's view of mailboxes: credentials from the node's user store (the same
// one SMTP AUTH uses), mail through the mailbox router (the owner node's mailbox actor,
// local or over NATS), the maildrop lock held by that actor for the whole cluster.
import { Effect } from "effect";
import type { UserStore } from "../users/store.ts";
import { UNOWNED_LOCK, type MailboxRouter } from "../mailbox/router.ts";
import { MailboxUnavailable, NoSuchMessage, type LockLost, type MailboxError, type MaildropInUse } from "../../protocol/mailbox.ts";
import type { MaildropAccess, OpenMaildrop } from "./maildrop.ts";

export interface MaildropAccessOptions {
  /** The lock's lease: a session that neither asks nor renews for this long loses it. */
  readonly leaseMs: number;
}

/** Anything unexpected means the mailbox cannot be served right now: mail is safe, try later. */
const unavailable = (user: string, error: MailboxError): MailboxUnavailable => {
  switch (error._tag) {
    case "MailboxUnavailable":
      return error;
    case "StoreError":
      return new MailboxUnavailable({ user, detail: `${error.operation}: ${error.detail}` });
    case "NotOwner":
      return new MailboxUnavailable({ user, detail: `not owner: ${error.node}` });
    default:
      return new MailboxUnavailable({ user, detail: error._tag });
  }
};

const inUseOrUnavailable = (user: string, error: MailboxError): MaildropInUse | MailboxUnavailable =>
  error._tag === "MaildropInUse" ? error : unavailable(user, error);

const lostOrUnavailable = (user: string, error: MailboxError): LockLost | MailboxUnavailable =>
  error._tag === "LockLost" ? error : unavailable(user, error);

const missingLostOrUnavailable = (user: string, error: MailboxError): NoSuchMessage | LockLost | MailboxUnavailable =>
  error._tag === "NoSuchMessage" ? error : lostOrUnavailable(user, error);

const openMaildrop = (
  mailboxes: MailboxRouter,
  user: string,
  lock: string,
  messages: OpenMaildrop["messages"],
  leaseMs: number,
): OpenMaildrop => ({
  messages,
  renewEveryMs: Math.floor(leaseMs / 3),
  retrieve: (uid, topLines) =>
    mailboxes.call("retrieve", { user, uid, lock, ...(topLines !== undefined && { topLines }) }).pipe(
      Effect.map((reply) => reply.attachment ?? new Uint8Array()),
      Effect.mapError((error) => missingLostOrUnavailable(user, error)),
    ),
  keepAlive: () => mailboxes.call("renew", { user, lock }).pipe(Effect.asVoid, Effect.mapError((error) => lostOrUnavailable(user, error))),
  commit: ({ remove, seen }) =>
    mailboxes.call("commit", { user, lock, remove, seen }).pipe(Effect.asVoid, Effect.mapError((error) => lostOrUnavailable(user, error))),
  // Best effort: if the owner cannot be told, the lease runs out on its own.
  release: () => mailboxes.call("release", { user, lock }).pipe(Effect.ignore),
});

/**
 * The maildrop of a mailbox that had never received mail when the session opened it: no
 * node owns it, so no lock guards it, and the session sees no message to read or delete.
 * Mail that arrives meanwhile gives the mailbox an owner whose lock this session never
 * held; the session keeps its empty view to the end (RFC 1939), and its QUIT changes nothing.
 */
const emptyMaildrop = (user: string, leaseMs: number): OpenMaildrop => ({
  messages: [],
  renewEveryMs: Math.floor(leaseMs / 3),
  retrieve: (uid) => Effect.fail(new NoSuchMessage({ user, uid })),
  keepAlive: () => Effect.void,
  commit: () => Effect.void,
  release: () => Effect.void,
});

export const makeMaildropAccess = (users: UserStore, mailboxes: MailboxRouter, options: MaildropAccessOptions): MaildropAccess => ({
  authenticate: (login, password) => Effect.promise(() => users.verify(login, password)).pipe(Effect.map((user) => user ?? null)),
  open: (user, holder) =>
    mailboxes.call("open", { user, holder, leaseMs: options.leaseMs }).pipe(
      Effect.map((reply) =>
        reply.value.lock === UNOWNED_LOCK ? emptyMaildrop(user, options.leaseMs) : openMaildrop(mailboxes, user, reply.value.lock, reply.value.messages, options.leaseMs),
      ),
      Effect.mapError((error) => inUseOrUnavailable(user, error)),
    ),
});

