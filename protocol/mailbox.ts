// Asks to a mailbox actor on its owner node, as they cross NATS, and the typed errors
// it answers with. Bodies travel as the frame's attachment (protocol/wire.ts), not
// inside the JSON; bodies over NATS's max payload take the chunked path.
import { Schema } from "effect";
import { StoreError } from "./errors.ts";

// ---------------------------------------------------------------------------
// Errors

/** The owner node of the mailbox cannot be reached now; mail is safe, try later. */
export class MailboxUnavailable extends Schema.TaggedError<MailboxUnavailable>()("MailboxUnavailable", {
  user: Schema.String,
  detail: Schema.String,
}) {}

export class NoSuchMessage extends Schema.TaggedError<NoSuchMessage>()("NoSuchMessage", {
  user: Schema.String,
  uid: Schema.String,
}) {}

/** The user has no mailbox on the node asked (ownership moved or misrouted). */
export class NotOwner extends Schema.TaggedError<NotOwner>()("NotOwner", {
  user: Schema.String,
  node: Schema.String,
}) {}

/** No such local user (removed from the config after the mail was accepted). */
export class UnknownUser extends Schema.TaggedError<UnknownUser>()("UnknownUser", {
  user: Schema.String,
}) {}

/**
 * Storing the message would take the user over their quota. Temporary (RFC 3463 4.2.2,
 * "mailbox full"): the queue entry waits for the user to make room, and only the queue's
 * expiry bounces it (5.2.2). `detail` is the human part of that reply.
 */
export class OverQuota extends Schema.TaggedError<OverQuota>()("OverQuota", {
  user: Schema.String,
  usedBytes: Schema.Number,
  quotaBytes: Schema.Number,
  messageBytes: Schema.Number,
  detail: Schema.String,
}) {}

/** Another session holds the maildrop's lock (POP3 `[IN-USE]`), on this node or another. */
export class MaildropInUse extends Schema.TaggedError<MaildropInUse>()("MaildropInUse", {
  user: Schema.String,
  holder: Schema.String,
}) {}

/** The lock this session held is gone (lease expired, or the owner node restarted). */
export class LockLost extends Schema.TaggedError<LockLost>()("LockLost", {
  user: Schema.String,
}) {}

export class NoSuchFolder extends Schema.TaggedError<NoSuchFolder>()("NoSuchFolder", {
  user: Schema.String,
  folder: Schema.String,
}) {}

export class FolderExists extends Schema.TaggedError<FolderExists>()("FolderExists", {
  user: Schema.String,
  folder: Schema.String,
}) {}

/**
 * An ask about a selected folder named the UIDVALIDITY the session selected, and the
 * folder has another now (deleted and made again): its UIDs name other messages, so
 * nothing was done. `uidValidity` is the folder's current one.
 */
export class UidValidityChanged extends Schema.TaggedError<UidValidityChanged>()("UidValidityChanged", {
  user: Schema.String,
  folder: Schema.String,
  uidValidity: Schema.Number,
}) {}

export const MailboxError = Schema.Union([
  StoreError,
  MailboxUnavailable,
  NoSuchMessage,
  NotOwner,
  UnknownUser,
  OverQuota,
  MaildropInUse,
  LockLost,
  NoSuchFolder,
  FolderExists,
  UidValidityChanged,
]);
export type MailboxError = typeof MailboxError.Type;

export const overQuota = (user: string, usedBytes: number, quotaBytes: number, messageBytes: number): OverQuota =>
  new OverQuota({
    user,
    usedBytes,
    quotaBytes,
    messageBytes,
    detail: `${usedBytes} of ${quotaBytes} bytes used, message is ${messageBytes}`,
  });

// ---------------------------------------------------------------------------
// Asks

/** One message as POP3 sees it: `uid` is the UIDL (`<uidvalidity>.<uid>`), stable and never reused. */
export const MaildropEntry = Schema.Struct({
  uid: Schema.String,
  /** Size in octets of the stored message (CRLF line endings). */
  size: Schema.Number,
});
export type MaildropEntry = typeof MaildropEntry.Type;

/** `folder`: where it goes (Junk for quarantined mail; created when missing); absent: INBOX. */
export const DeliverRequest = Schema.Struct({ user: Schema.String, entryId: Schema.String, folder: Schema.optional(Schema.String) });
/** `duplicate`: the entry had been stored before (a redelivery after a lost ack); nothing new was written. */
const DeliverReply = Schema.Struct({ uid: Schema.String, duplicate: Schema.optional(Schema.Boolean) });

const ListRequest = Schema.Struct({ user: Schema.String });
const ListReply = Schema.Struct({ messages: Schema.Array(MaildropEntry) });

/** With `lock`, the session's lease is checked and renewed; `topLines` asks for the header and that many body lines. */
const RetrieveRequest = Schema.Struct({
  user: Schema.String,
  uid: Schema.String,
  lock: Schema.optional(Schema.String),
  topLines: Schema.optional(Schema.Int.check(Schema.isGreaterThanOrEqualTo(0))),
});
const RetrieveReply = Schema.Struct({ size: Schema.Number });

/** Locks the maildrop for one retrieval session and lists INBOX under the lock. */
const OpenRequest = Schema.Struct({
  user: Schema.String,
  /** Who holds the lock, for logs and the [IN-USE] reply: `<node>/pop3/<conn>`. */
  holder: Schema.String,
  leaseMs: Schema.Int.check(Schema.isBetween({ minimum: 1_000, maximum: 3_600_000 })),
});
const OpenReply = Schema.Struct({ lock: Schema.String, messages: Schema.Array(MaildropEntry) });

const RenewRequest = Schema.Struct({ user: Schema.String, lock: Schema.String });
const RenewReply = Schema.Struct({});

/** POP3 UPDATE: removes `remove` and marks `seen` \Seen in one transaction, then releases the lock. */
const CommitRequest = Schema.Struct({
  user: Schema.String,
  lock: Schema.String,
  remove: Schema.Array(Schema.String),
  seen: Schema.Array(Schema.String),
});
const CommitReply = Schema.Struct({ removed: Schema.Number });

const ReleaseRequest = Schema.Struct({ user: Schema.String, lock: Schema.String });
const ReleaseReply = Schema.Struct({});

// -- IMAP asks: folders and messages by UID, any folder ------------------------

export const FolderInfo = Schema.Struct({
  name: Schema.String,
  uidValidity: Schema.Number,
  uidNext: Schema.Number,
  messages: Schema.Number,
  bytes: Schema.Number,
  /** Messages without \Seen. */
  unseen: Schema.Number,
  /** CONDSTORE (RFC 7162); absent from nodes that do not keep it: 1. */
  highestModSeq: Schema.optional(Schema.Number),
  /** Messages no session has been told of as \Recent yet (STATUS RECENT); absent from older nodes: 0. */
  recent: Schema.optional(Schema.Number),
});
export type FolderInfo = typeof FolderInfo.Type;

/** One message as IMAP sees it. `body` is the SHA-256 of the stored body: a cache key for its MIME structure. */
export const MessageInfo = Schema.Struct({
  uid: Schema.Number,
  size: Schema.Number,
  internalDate: Schema.Number,
  flags: Schema.Array(Schema.String),
  body: Schema.String,
  /** CONDSTORE: modification sequence of the message's last change; absent: 1. */
  modSeq: Schema.optional(Schema.Number),
});
export type MessageInfo = typeof MessageInfo.Type;

export const FoldersRequest = Schema.Struct({ user: Schema.String });
/**
 * `subscribed`: the names the user subscribed to (IMAP SUBSCRIBE/LSUB), folders or not;
 * absent from nodes that do not keep subscriptions: every folder counts as subscribed.
 */
export const FoldersReply = Schema.Struct({ folders: Schema.Array(FolderInfo), subscribed: Schema.optional(Schema.Array(Schema.String)) });

/**
 * The UIDVALIDITY a session selected, on every ask about its selected folder: the owner
 * refuses the ask (UidValidityChanged, or NoSuchFolder once it is gone) rather than act on
 * a folder made anew whose UIDs name other messages. Absent: no check (a new selection).
 */
const SelectedUidValidity = Schema.optional(Schema.Number);

/**
 * A folder's state and every message in it, in UID order (SELECT, and resyncs of a
 * selected folder). With `claimRecent` (SELECT, not EXAMINE) the session takes the
 * messages no session was told of yet as its \Recent ones (RFC 3501 §2.3.2): the owner
 * moves the folder's mark past them in one write, so two sessions never both get one.
 */
export const ViewRequest = Schema.Struct({
  user: Schema.String,
  folder: Schema.String,
  uidValidity: SelectedUidValidity,
  claimRecent: Schema.optional(Schema.Boolean),
});
/**
 * `recent`: UIDs from `from` up to (not including) `to` are \Recent to the session: the
 * ones it claimed, or without `claimRecent` the ones nobody claimed yet. Absent from older
 * nodes: none.
 */
export const ViewReply = Schema.Struct({
  folder: FolderInfo,
  messages: Schema.Array(MessageInfo),
  recent: Schema.optional(Schema.Struct({ from: Schema.Number, to: Schema.Number })),
});

/** One message's body, as the attachment. */
export const BodyRequest = Schema.Struct({ user: Schema.String, folder: Schema.String, uid: Schema.Number, uidValidity: SelectedUidValidity });
export const BodyReply = Schema.Struct({ size: Schema.Number });

const FlagsRequest = Schema.Struct({
  user: Schema.String,
  folder: Schema.String,
  uids: Schema.Array(Schema.Number),
  flags: Schema.Array(Schema.String),
  change: Schema.Literals(["add", "remove", "replace"]),
  /** CONDSTORE STORE (UNCHANGEDSINCE n): leave messages changed after n alone. */
  unchangedSince: Schema.optional(Schema.Number),
  uidValidity: SelectedUidValidity,
});
/**
 * The messages' flags after the change (messages gone meanwhile are left out), and the
 * UIDs left alone because they changed after UNCHANGEDSINCE.
 */
const FlagsReply = Schema.Struct({
  messages: Schema.Array(Schema.Struct({ uid: Schema.Number, flags: Schema.Array(Schema.String), modSeq: Schema.optional(Schema.Number) })),
  modified: Schema.optional(Schema.Array(Schema.Number)),
});

/** COPY, or with `move` MOVE (RFC 6851): copied and removed from the source in one transaction. */
const CopyRequest = Schema.Struct({
  user: Schema.String,
  from: Schema.String,
  uids: Schema.Array(Schema.Number),
  to: Schema.String,
  move: Schema.Boolean,
  /** Of `from`, the selected folder. */
  uidValidity: SelectedUidValidity,
});
/** UIDPLUS (RFC 4315): the target's UIDVALIDITY and each source UID with its new UID. */
const CopyReply = Schema.Struct({ uidValidity: Schema.Number, source: Schema.Array(Schema.Number), target: Schema.Array(Schema.Number) });

export const ExpungeRequest = Schema.Struct({ user: Schema.String, folder: Schema.String, uids: Schema.Array(Schema.Number), uidValidity: SelectedUidValidity });
export const ExpungeReply = Schema.Struct({ removed: Schema.Number });

/** APPEND: the message is the attachment. */
const AppendRequest = Schema.Struct({
  user: Schema.String,
  folder: Schema.String,
  flags: Schema.Array(Schema.String),
  internalDate: Schema.optional(Schema.Number),
});
const AppendReply = Schema.Struct({ uidValidity: Schema.Number, uid: Schema.Number });

/**
 * CREATE, DELETE and RENAME (`to`) of a folder; SUBSCRIBE and UNSUBSCRIBE of a name. A
 * folder that does not exist cannot be subscribed to (NoSuchFolder; RFC 3501 §6.3.6 lets
 * a server refuse); any name can be unsubscribed, so a deleted folder's subscription can go.
 */
export const FolderRequest = Schema.Struct({
  user: Schema.String,
  folder: Schema.String,
  action: Schema.Literals(["create", "delete", "rename", "subscribe", "unsubscribe"]),
  to: Schema.optional(Schema.String),
});
const FolderReply = Schema.Struct({});

export const mailboxEndpoints = {
  deliver: { request: DeliverRequest, response: DeliverReply, error: MailboxError },
  list: { request: ListRequest, response: ListReply, error: MailboxError },
  retrieve: { request: RetrieveRequest, response: RetrieveReply, error: MailboxError },
  open: { request: OpenRequest, response: OpenReply, error: MailboxError },
  renew: { request: RenewRequest, response: RenewReply, error: MailboxError },
  commit: { request: CommitRequest, response: CommitReply, error: MailboxError },
  release: { request: ReleaseRequest, response: ReleaseReply, error: MailboxError },
  folders: { request: FoldersRequest, response: FoldersReply, error: MailboxError },
  view: { request: ViewRequest, response: ViewReply, error: MailboxError },
  body: { request: BodyRequest, response: BodyReply, error: MailboxError },
  flags: { request: FlagsRequest, response: FlagsReply, error: MailboxError },
  copy: { request: CopyRequest, response: CopyReply, error: MailboxError },
  expunge: { request: ExpungeRequest, response: ExpungeReply, error: MailboxError },
  append: { request: AppendRequest, response: AppendReply, error: MailboxError },
  folder: { request: FolderRequest, response: FolderReply, error: MailboxError },
} as const;

/** Every mailbox operation, in the order they are served. */
export const MAILBOX_OPERATIONS = Object.keys(mailboxEndpoints) as ReadonlyArray<keyof typeof mailboxEndpoints>;

export type MailboxEndpoints = typeof mailboxEndpoints;

/** Does any node hold this mailbox? Asked of every node at once (`Subjects.mailboxHolders`). */
const HoldersRequest = Schema.Struct({ user: Schema.String });
/** One node's answer, from its own durable record of the mailboxes it holds. */
export const HoldersReply = Schema.Struct({ node: Schema.String, holds: Schema.Boolean });
export type HoldersReply = typeof HoldersReply.Type;
const HoldersError = Schema.Never;
export const holdersEndpoint = { request: HoldersRequest, response: HoldersReply, error: HoldersError } as const;
export type MailboxOperationName = keyof MailboxEndpoints;
export type RequestOf<K extends MailboxOperationName> = MailboxEndpoints[K]["request"]["Type"];
export type ResponseOf<K extends MailboxOperationName> = MailboxEndpoints[K]["response"]["Type"];

/** UIDL of message `uid` in a folder of `uidValidity`: unique for the mailbox's whole life. */
export const uidlOf = (uidValidity: number, uid: number): string => `${uidValidity}.${uid}`;

export const parseUidl = (uidl: string): { readonly uidValidity: number; readonly uid: number } | undefined => {
  const match = /^(\d{1,15})\.(\d{1,15})$/.exec(uidl);
  return match ? { uidValidity: Number(match[1]), uid: Number(match[2]) } : undefined;
};
