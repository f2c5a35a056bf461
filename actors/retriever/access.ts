// The retriever's view of mailboxes: credentials from the node's user list, mail
// through the mailbox router (the owner node's mailbox actor, local or over NATS).
import { timingSafeEqual, createHash } from "node:crypto";
import { Effect } from "effect";
import type { MailboxRouter } from "../mailbox/router.ts";
import { MailboxUnavailable, type MaildropAccess } from "./maildrop.ts";
import type { MailboxError } from "../../protocol/mailbox.ts";

const digest = (text: string) => createHash("sha256").update(text, "utf8").digest();

/** Equal-time comparison of two secrets of any length. */
const sameSecret = (a: string, b: string) => timingSafeEqual(digest(a), digest(b));

const asMaildropError = (user: string) => (error: MailboxError) =>
  error._tag === "NoSuchMessage" || error._tag === "MailboxUnavailable"
    ? error
    : new MailboxUnavailable({ user, detail: error._tag === "StoreError" ? error.detail : `${error._tag} ${error.node}` });

/** A login is the full address, or the bare local part when exactly one user has it. */
const canonicalUser = (passwords: ReadonlyMap<string, string>, login: string): string => {
  const lower = login.toLowerCase();
  if (lower.includes("@")) return lower;
  const matches = [...passwords.keys()].filter((address) => address.slice(0, address.lastIndexOf("@")) === lower);
  return matches.length === 1 ? matches[0]! : lower;
};

export const makeMaildropAccess = (
  passwords: ReadonlyMap<string, string>,
  mailboxes: MailboxRouter,
): MaildropAccess => ({
  authenticate: (user, password) =>
    Effect.sync(() => {
      const address = canonicalUser(passwords, user);
      const expected = passwords.get(address);
      return expected !== undefined && sameSecret(expected, password) ? address : null;
    }),
  list: (user) => mailboxes.list(user).pipe(Effect.mapError((e) => asMaildropError(user)(e) as MailboxUnavailable)),
  retrieve: (user, uid) => mailboxes.retrieve(user, uid).pipe(Effect.mapError(asMaildropError(user))),
  remove: (user, uids) => mailboxes.remove(user, uids).pipe(Effect.mapError((e) => asMaildropError(user)(e) as MailboxUnavailable)),
});
