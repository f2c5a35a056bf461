// The mailbox operations IMAP needs, run inside the user's mailbox actor on the owner
// node: folders, a folder's messages by UID, bodies, flags, copy/move, expunge, append
// and folder management, subscriptions. Each write is one store transaction; after it,
// `changed` tells the node, which lets IMAP sessions on every node know they should resync
// (not after a subscription or a \Recent claim: nothing a selected session shows changed).
// Asks about a session's selected folder carry its UIDVALIDITY: writes test it in their
// transaction (store.ts), reads here before reading; a folder made anew is refused.
import { Effect } from "effect";
import {
  NoSuchFolder,
  NoSuchMessage,
  UidValidityChanged,
  UnknownUser,
  type FolderInfo,
  type MailboxError,
  type RequestOf,
  type ResponseOf,
} from "../../protocol/mailbox.ts";
import type { Reply } from "../runtime/remote.ts";
import { highestModSeqOf, INBOX, modSeqOf, recentFromOf, type FolderStatus, type MailboxStore, type RecentClaim } from "./store.ts";

export interface ImapOperationsOptions {
  readonly store: MailboxStore;
  readonly user: string;
  readonly knows: (user: string) => boolean;
  readonly quotaBytes: () => number | undefined;
  readonly changed: () => void;
}

type Op<K extends keyof ImapOps> = ImapOps[K];
export interface ImapOps {
  readonly folders: () => Effect.Effect<Reply<ResponseOf<"folders">>, MailboxError>;
  readonly view: (request: RequestOf<"view">) => Effect.Effect<Reply<ResponseOf<"view">>, MailboxError>;
  readonly body: (request: RequestOf<"body">) => Effect.Effect<Reply<ResponseOf<"body">>, MailboxError>;
  readonly flags: (request: RequestOf<"flags">) => Effect.Effect<Reply<ResponseOf<"flags">>, MailboxError>;
  readonly copy: (request: RequestOf<"copy">) => Effect.Effect<Reply<ResponseOf<"copy">>, MailboxError>;
  readonly expunge: (request: RequestOf<"expunge">) => Effect.Effect<Reply<ResponseOf<"expunge">>, MailboxError>;
  readonly append: (request: RequestOf<"append">, body: Uint8Array | undefined) => Effect.Effect<Reply<ResponseOf<"append">>, MailboxError>;
  readonly folder: (request: RequestOf<"folder">) => Effect.Effect<Reply<ResponseOf<"folder">>, MailboxError>;
}

export const imapOperations = (options: ImapOperationsOptions): ImapOps => {
  const { store, user } = options;

  const known = <A>(effect: () => Effect.Effect<A, MailboxError>): Effect.Effect<A, MailboxError> =>
    Effect.suspend(() => (options.knows(user) ? effect() : Effect.fail(new UnknownUser({ user }))));

  const info = (status: FolderStatus): FolderInfo => {
    const recentFrom = recentFromOf(status);
    let [unseen, recent] = [0, 0];
    for (const message of store.list(user, status.name)) {
      if (!message.flags.includes("\\Seen")) unseen++;
      if (message.uid >= recentFrom) recent++;
    }
    const { recentFrom: _mark, ...folder } = status;
    return { ...folder, highestModSeq: highestModSeqOf(status), unseen, recent };
  };

  /** The selected folder as it is now, unless it is gone or was made anew since the session selected it. */
  const selectedStatus = (folder: string, uidValidity: number | undefined): Effect.Effect<FolderStatus, NoSuchFolder | UidValidityChanged> => {
    const status = store.status(user, folder);
    if (status === undefined) return Effect.fail(new NoSuchFolder({ user, folder }));
    if (uidValidity !== undefined && status.uidValidity !== uidValidity)
      return Effect.fail(new UidValidityChanged({ user, folder: status.name, uidValidity: status.uidValidity }));
    return Effect.succeed(status);
  };

  /**
   * A user who never received mail has no INBOX yet: it is made when a session first looks,
   * so the UIDVALIDITY a session saw on an empty INBOX still holds when the first message
   * arrives (a placeholder replaced by the real folder would force every client to resync).
   */
  const withInbox = <A>(then: () => Effect.Effect<A, MailboxError>): Effect.Effect<A, MailboxError> =>
    Effect.suspend(() =>
      store.status(user, INBOX) !== undefined
        ? then()
        : store.createFolder(user, INBOX).pipe(Effect.catchTag("FolderExists", () => Effect.void), Effect.flatMap(then)));

  const changing = <A, E>(effect: Effect.Effect<A, E>) => Effect.tap(effect, () => Effect.sync(options.changed));

  const folders: Op<"folders"> = () =>
    known(() => withInbox(() => Effect.sync(() => ({ value: { folders: store.folders(user).map(info), subscribed: store.subscriptions(user) } })))),

  /**
   * With `claimRecent` the claim is written first, then the folder is read: every message
   * the claim passed is in the listing (unless expunged meanwhile). One that arrives in
   * between is listed but not claimed: the session's next resync claims it (or another
   * session's SELECT does).
   */
  view: Op<"view"> = (request) =>
    known(() => withInbox(() =>
      Effect.gen(function* () {
        const claim: RecentClaim | undefined = request.claimRecent === true ? yield* store.claimRecent(user, request.folder, request.uidValidity) : undefined;
        const status = yield* selectedStatus(request.folder, request.uidValidity);
        const messages = store.list(user, status.name).map((m) => ({ uid: m.uid, size: m.size, internalDate: m.internalDate, flags: m.flags, body: m.body, modSeq: modSeqOf(m) }));
        // Without a claim (EXAMINE): what nobody has claimed yet, shown as recent without taking it.
        const recent = claim === undefined ? { from: recentFromOf(status), to: status.uidNext }
          : claim.uidValidity === status.uidValidity ? { from: claim.from, to: claim.to }
          : { from: status.uidNext, to: status.uidNext }; // made anew between the claim and the read: nothing
        return { value: { folder: info(status), messages, recent } };
      }))),

  body: Op<"body"> = (request) =>
    known(() =>
      Effect.flatMap(selectedStatus(request.folder, request.uidValidity), () => {
        const body = store.body(user, request.folder, request.uid);
        if (body === undefined) return Effect.fail(new NoSuchMessage({ user, uid: String(request.uid) }));
        return Effect.succeed({ value: { size: body.length }, attachment: body });
      })),

  flags: Op<"flags"> = (request) =>
    known(() =>
      changing(store.setFlags(user, request.folder, request.uids, request.flags, request.change, request.unchangedSince, request.uidValidity)).pipe(
        Effect.map(({ modified }) => ({
          value: {
            messages: request.uids.flatMap((uid) => {
              const m = store.message(user, request.folder, uid);
              return m ? [{ uid, flags: m.flags, modSeq: modSeqOf(m) }] : [];
            }),
            modified,
          },
        })),
      )),

  copy: Op<"copy"> = (request) =>
    known(() =>
      Effect.gen(function* () {
        const present = request.uids.filter((uid) => store.message(user, request.from, uid) !== undefined);
        // A move is one transaction: the copies and the removal of the originals commit together.
        const target = yield* store.copy(user, request.from, present, request.to, options.quotaBytes(), { move: request.move === true, uidValidity: request.uidValidity });
        options.changed();
        const uidValidity = store.status(user, request.to)?.uidValidity ?? 0;
        return { value: { uidValidity, source: present, target } };
      })),

  expunge: Op<"expunge"> = (request) =>
    // Only what carries \Deleted now: the session chose the UIDs from flags it saw earlier.
    known(() => changing(store.expungeDeleted(user, request.folder, request.uids, request.uidValidity)).pipe(Effect.map((removed) => ({ value: { removed: removed.length } })))),

  append: Op<"append"> = (request, body) =>
    known(() =>
      Effect.gen(function* () {
        if (request.folder.toUpperCase() !== INBOX && store.status(user, request.folder) === undefined)
          return yield* new NoSuchFolder({ user, folder: request.folder });
        const stored = yield* store.append(user, body ?? new Uint8Array(), {
          folder: request.folder,
          flags: request.flags,
          quotaBytes: options.quotaBytes(),
          ...(request.internalDate !== undefined && { internalDate: request.internalDate }),
        });
        options.changed();
        return { value: { uidValidity: stored.uidValidity, uid: stored.uid } };
      })),

  folder: Op<"folder"> = (request) =>
    known(() => {
      switch (request.action) {
        case "create":
          return changing(store.createFolder(user, request.folder)).pipe(Effect.as({ value: {} }));
        case "delete":
          return changing(store.deleteFolder(user, request.folder)).pipe(Effect.as({ value: {} }));
        case "rename":
          return changing(store.renameFolder(user, request.folder, request.to ?? request.folder)).pipe(Effect.as({ value: {} }));
        // After INBOX exists: a mailbox's first write makes a folder, which marks the mailbox held here (store.ts).
        case "subscribe":
          return withInbox(() => store.subscribe(user, request.folder)).pipe(Effect.as({ value: {} }));
        case "unsubscribe":
          return withInbox(() => store.unsubscribe(user, request.folder)).pipe(Effect.as({ value: {} }));
      }
    });

  return { folders, view, body, flags, copy, expunge, append, folder };
};
