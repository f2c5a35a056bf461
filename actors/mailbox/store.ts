// Local users' mailboxes in this node's LMDB (only on the mailbox's owner node).
//
// Layout (every key sorts so a directory-style range read finds what it needs):
//   mbox.users       user                     → Usage (bytes and messages over all folders; quota)
//   mbox.folders     [user, folder]           → Folder (UIDVALIDITY, UIDNEXT, HIGHESTMODSEQ, counts)
//   mbox.messages    [user, folder, uid]      → StoredMessage (size, internal date, flags, MODSEQ, body hash)
//   mbox.bodies      [sha256, chunk]          → bytes, 256 KB chunks
//   mbox.bodyrefs    sha256                   → how many messages share the body
//   mbox.deliveries  [user, queue entry id]   → where that entry was stored
//   mbox.subscribed  user                     → the names the user subscribed to (IMAP SUBSCRIBE), sorted
//   mbox.held        user                     → since when this node holds the mailbox (holdings.ts)
//   mbox.moves.in/out user                    → a move of the mailbox under way (move-records.ts)
//
// A body is stored once, content-addressed: a message copied to another folder, or the
// same message delivered to two users of this node, shares it; the last reference
// removes it. `deliver` is idempotent by queue-entry id: a redelivery after a crash (the
// sender's entry survived, our ack was lost) finds the first copy and stores nothing.
// Writes resolve only after the commit is flushed, so an ack means the mail is safe.
// Every write is one LMDB transaction; LMDB applies them one at a time in call order, so
// concurrent writes to one mailbox stay consistent while sharing an fsync.
// CONDSTORE (RFC 7162): each folder counts modification sequences; every append, flag
// change and expunge takes the next one, and a message keeps the one of its last change,
// in the same transaction. Records written before modification sequences were kept have
// none: they count as 1, the lowest value (RFC 7162 §3.1.1 allows no 0 on a message).
// \Recent (RFC 3501 §2.3.2): each folder keeps the first UID no session has been told of
// as recent (`recentFrom`); a SELECT takes the UIDs from there to UIDNEXT as its own and
// moves the mark to UIDNEXT in one transaction (`claimRecent`), so two sessions never
// both get a message as recent. Folders written before the mark was kept have none: their
// next new message sets it to its own UID (everything older counts as announced).
// Subscriptions: a user's subscribed names are one value, written in the transaction that
// changes them. A user with no value yet (mailboxes from before subscriptions were kept)
// counts every folder as subscribed, as LSUB then answered; the value is first written
// when the user's first folder is made (INBOX alone subscribed, so a new mailbox starts
// with INBOX subscribed) or on the first SUBSCRIBE/UNSUBSCRIBE (from every folder then).
// A deleted folder keeps its subscription (RFC 3501 §6.3.4); a renamed one takes it along.
// Asks about a selected folder may name the UIDVALIDITY the session selected: the write
// tests it in its own transaction, so a folder deleted and made again (a new UIDVALIDITY,
// UIDs from 1 again) is never changed through UIDs that named the old one's messages.
// Time (UIDVALIDITY, INTERNALDATE) comes from the Clock of the fiber that writes, read once
// before each transaction, so TestClock controls it in tests.
import { createHash } from "node:crypto";
import { Clock, Effect } from "effect";
import type { Database, RootDatabase } from "lmdb";
import { StoreError } from "../../protocol/errors.ts";
import { FolderExists, NoSuchFolder, overQuota, UidValidityChanged, type OverQuota } from "../../protocol/mailbox.ts";
import type { MailboxSnapshot, MovedMessage } from "../../protocol/mailbox-move.ts";
import { markHeld, openHeldDatabase } from "./holdings.ts";

export const INBOX = "INBOX";

/** Stored bodies are split so no single LMDB value gets huge (overflow pages fragment the file). */
const BODY_CHUNK_BYTES = 256 * 1024;
const LAST_UID = Number.MAX_SAFE_INTEGER;
/**
 * Ends a key range over every folder name (and entry id) of a user. Keys are UTF-8, so
 * "\uffff" (EF BF BF) would leave out names that begin above U+FFFF (an emoji: F0 …);
 * U+10FFFF (F4 8F BF BF), the last code point, sorts after every name that does not
 * begin with it, a noncharacter no client uses.
 */
const AFTER_EVERY_NAME = "\u{10FFFF}";

export interface Folder {
  readonly uidValidity: number;
  readonly uidNext: number;
  readonly messages: number;
  readonly bytes: number;
  /** CONDSTORE: the last modification sequence given in the folder (absent on older records: 1). */
  readonly highestModSeq?: number | undefined;
  /** \Recent: the first UID no session has been told of as recent (absent on older records: none recent). */
  readonly recentFrom?: number | undefined;
}

export interface FolderStatus extends Folder {
  readonly name: string;
}

export interface StoredMessage {
  readonly uid: number;
  readonly size: number;
  /** IMAP INTERNALDATE: when the message arrived here (ms since the epoch). */
  readonly internalDate: number;
  /** System flags (\Seen, \Answered, \Flagged, \Deleted, \Draft) and keywords, sorted. */
  readonly flags: ReadonlyArray<string>;
  /** SHA-256 of the body: the key of its chunks. */
  readonly body: string;
  /** CONDSTORE: modification sequence of the last change (absent on older records: 1). */
  readonly modSeq?: number | undefined;
  /** Queue entry that delivered it, when it came through the queue. */
  readonly entryId?: string | undefined;
}

interface Usage {
  readonly bytes: number;
  readonly messages: number;
  /** Last UIDVALIDITY given to any folder of the user, so a recreated folder never repeats one. */
  readonly lastUidValidity: number;
}

interface BodyRecord {
  readonly refs: number;
  readonly size: number;
  readonly chunks: number;
}

interface DeliveryRecord {
  readonly folder: string;
  readonly uid: number;
  readonly at: number;
}

export interface Stored {
  readonly folder: string;
  readonly uid: number;
  readonly uidValidity: number;
  /** True when the queue entry had been stored before: nothing was written this time. */
  readonly duplicate: boolean;
}

// The folder errors cross NATS (IMAP asks), so they are declared with the other mailbox errors.
export { FolderExists, NoSuchFolder, UidValidityChanged };

/** An ask about a selected folder fails when the folder is gone or was made anew. */
export type NotSelectable = NoSuchFolder | UidValidityChanged;

/** UIDs from `from` up to (not including) `to` are \Recent to the session that claimed them. */
export interface RecentClaim {
  readonly uidValidity: number;
  readonly from: number;
  readonly to: number;
}

export type FlagChange = "add" | "remove" | "replace";

/** What a flag change did: the UIDs it left alone because they changed after UNCHANGEDSINCE. */
export interface FlagsSet {
  readonly modified: ReadonlyArray<number>;
}

/** Modification sequences of records written before they were kept count as 1. */
export const modSeqOf = (record: { readonly modSeq?: number | undefined }): number => record.modSeq ?? 1;
export const highestModSeqOf = (folder: { readonly highestModSeq?: number | undefined }): number => folder.highestModSeq ?? 1;
/** Older folder records have no \Recent mark: nothing in them is recent. */
export const recentFromOf = (folder: Folder): number => folder.recentFrom ?? folder.uidNext;

export interface StoreOptions {
  /** Folder to store into (default INBOX; created when missing). */
  readonly folder?: string;
  readonly flags?: ReadonlyArray<string>;
  readonly internalDate?: number;
  /** Refuse with OverQuota when the user's messages would exceed this many bytes. */
  readonly quotaBytes?: number | undefined;
}

export interface MailboxStore {
  /** Stores a body that came through the queue, once per (user, entry id). */
  readonly deliver: (user: string, entryId: string, body: Uint8Array, options?: StoreOptions) => Effect.Effect<Stored, StoreError | OverQuota>;
  /** Stores a body with no queue entry (IMAP APPEND): every call adds a message. */
  readonly append: (user: string, body: Uint8Array, options?: StoreOptions) => Effect.Effect<Stored, StoreError | OverQuota>;
  readonly folders: (user: string) => ReadonlyArray<FolderStatus>;
  readonly status: (user: string, folder: string) => FolderStatus | undefined;
  readonly createFolder: (user: string, folder: string) => Effect.Effect<FolderStatus, StoreError | FolderExists>;
  /**
   * Renames a folder, keeping its UIDVALIDITY and UIDs (RFC 3501 §6.3.5). Renaming INBOX
   * moves its messages to the new folder and leaves an empty INBOX with a new UIDVALIDITY.
   */
  readonly renameFolder: (user: string, from: string, to: string) => Effect.Effect<void, StoreError | NoSuchFolder | FolderExists>;
  /** Removes a folder and its messages (INBOX cannot be removed, only emptied); its subscription stays. */
  readonly deleteFolder: (user: string, folder: string) => Effect.Effect<void, StoreError | NoSuchFolder>;
  /** The names the user subscribed to, sorted (folders or not: a deleted folder's stays). */
  readonly subscriptions: (user: string) => ReadonlyArray<string>;
  /** Subscribes to a folder; one that does not exist is refused (RFC 3501 §6.3.6 allows it). INBOX always exists. */
  readonly subscribe: (user: string, folder: string) => Effect.Effect<void, StoreError | NoSuchFolder>;
  /** Unsubscribes from a name, folder or not; a name not subscribed is left as it is. */
  readonly unsubscribe: (user: string, folder: string) => Effect.Effect<void, StoreError>;
  /**
   * Takes the folder's messages no session was told of yet as \Recent to the caller:
   * moves the folder's mark to UIDNEXT and returns the range it passed, in one
   * transaction (none when there is nothing to take). With `uidValidity`, a folder made
   * anew since is refused.
   */
  readonly claimRecent: (user: string, folder: string, uidValidity?: number) => Effect.Effect<RecentClaim, StoreError | NotSelectable>;
  /** Messages of a folder in UID order. */
  readonly list: (user: string, folder: string) => ReadonlyArray<StoredMessage>;
  readonly message: (user: string, folder: string, uid: number) => StoredMessage | undefined;
  readonly body: (user: string, folder: string, uid: number) => Uint8Array | undefined;
  /**
   * Changes flags; with `unchangedSince` (CONDSTORE STORE), a message whose modification
   * sequence is above it is left alone and reported as modified, tested in the same transaction.
   */
  readonly setFlags: (
    user: string,
    folder: string,
    uids: ReadonlyArray<number>,
    flags: ReadonlyArray<string>,
    change: FlagChange,
    unchangedSince?: number,
    uidValidity?: number,
  ) => Effect.Effect<FlagsSet, StoreError | NotSelectable>;
  /**
   * Copies messages (sharing their bodies); returns the new UIDs in order. With `move`
   * (IMAP MOVE) the originals are removed in the same transaction: a crash leaves the
   * messages in one folder or the other, never in both or neither. With `uidValidity`
   * (of `from`), a source folder made anew since is refused.
   */
  readonly copy: (
    user: string,
    from: string,
    uids: ReadonlyArray<number>,
    to: string,
    quotaBytes?: number,
    options?: { readonly move?: boolean; readonly uidValidity?: number | undefined },
  ) => Effect.Effect<ReadonlyArray<number>, StoreError | NotSelectable | OverQuota>;
  /**
   * IMAP EXPUNGE: removes those of `uids` that carry \Deleted now, in one transaction
   * (a session's view of the flags may be stale: another session may have taken
   * \Deleted off meanwhile). Returns the UIDs removed. With `uidValidity`, a folder made
   * anew since is refused.
   */
  readonly expungeDeleted: (user: string, folder: string, uids: ReadonlyArray<number>, uidValidity?: number) => Effect.Effect<ReadonlyArray<number>, StoreError | NotSelectable>;
  /** Removes messages and, atomically with it, sets flags on others (POP3 UPDATE). Returns how many were removed. */
  readonly expunge: (user: string, folder: string, uids: ReadonlyArray<number>, markSeen?: ReadonlyArray<number>) => Effect.Effect<number, StoreError>;
  readonly usage: (user: string) => { readonly bytes: number; readonly messages: number };

  // -- moving a mailbox between nodes (actors/mailbox/move.ts) --------------------
  /** Every record of the user's mailbox but the bodies. */
  readonly snapshot: (user: string) => MailboxSnapshot;
  /** A stored body by its hash (any user's: bodies are shared). */
  readonly bodyByHash: (hash: string) => Uint8Array | undefined;
  readonly hasBody: (hash: string) => boolean;
  /**
   * Copies messages in ahead of `replace` (their bodies counted as referenced), leaving
   * the user's folders and usage alone: staged rows nobody serves, so a big mailbox is
   * copied in bounded batches while it still takes mail. Rows already there are kept.
   */
  readonly stage: (user: string, messages: ReadonlyArray<MovedMessage>, bodies: ReadonlyMap<string, Uint8Array>) => Effect.Effect<void, StoreError>;
  /**
   * Makes the user's mailbox exactly `snapshot` (staged rows not in it are dropped), in one
   * transaction that also runs `within` (the move's own records) and marks the user held.
   * A body neither stored yet nor in `bodies` fails the whole transaction.
   */
  readonly replace: (snapshot: MailboxSnapshot, bodies: ReadonlyMap<string, Uint8Array>, within: () => void) => Effect.Effect<void, StoreError>;
  /** Removes every record of the user (staged or not), in one transaction that also runs `within`. */
  readonly remove: (user: string, within: () => void) => Effect.Effect<void, StoreError>;
}

/** IMAP: INBOX is case-insensitive, every other name is taken as given. */
const folderName = (name: string): string => (name.toUpperCase() === INBOX ? INBOX : name);

const sortedFlags = (flags: Iterable<string>): ReadonlyArray<string> => [...new Set(flags)].sort();
const sortedNames = (names: Iterable<string>): ReadonlyArray<string> => [...new Set(names)].sort();

type Done<T> = { readonly _tag: "Done"; readonly value: T };
type Refused<E> = { readonly _tag: "Refused"; readonly error: E };
type CommitOutcome<T, E> = Done<T> | Refused<E>;

const done = <T>(value: T): Done<T> => ({ _tag: "Done", value });
const refused = <E>(error: E): Refused<E> => ({ _tag: "Refused", error });

export const openMailboxStore = (root: RootDatabase): MailboxStore => {
  const usages: Database<Usage, string> = root.openDB({ name: "mbox.users" });
  const folders: Database<Folder, [string, string]> = root.openDB({ name: "mbox.folders" });
  const messages: Database<StoredMessage, [string, string, number]> = root.openDB({ name: "mbox.messages" });
  const bodies: Database<Buffer, [string, number]> = root.openDB({ name: "mbox.bodies", encoding: "binary" });
  const bodyRefs: Database<BodyRecord, string> = root.openDB({ name: "mbox.bodyrefs" });
  const deliveries: Database<DeliveryRecord, [string, string]> = root.openDB({ name: "mbox.deliveries" });
  const subscribed: Database<ReadonlyArray<string>, string> = root.openDB({ name: "mbox.subscribed" });
  const held = openHeldDatabase(root);

  /** Runs `action` as one transaction at the current time; a refusal it returns becomes a typed failure. */
  const commit = <T, E = never>(operation: string, action: (now: number) => CommitOutcome<T, E>): Effect.Effect<T, StoreError | E> =>
    Effect.flatMap(Clock.currentTimeMillis, (now) =>
      Effect.tryPromise({
        try: () => root.transaction(() => action(now)),
        catch: (error) => new StoreError({ operation, detail: String(error) }),
      })).pipe(Effect.flatMap((outcome) => (outcome._tag === "Done" ? Effect.succeed(outcome.value) : Effect.fail(outcome.error))));

  // -- pieces used inside transactions ---------------------------------------

  const usageOf = (user: string): Usage => usages.get(user) ?? { bytes: 0, messages: 0, lastUidValidity: 0 };

  const adjustUsage = (user: string, bytes: number, count: number) => {
    const usage = usageOf(user);
    usages.put(user, { ...usage, bytes: usage.bytes + bytes, messages: usage.messages + count });
  };

  /**
   * A new folder's UIDVALIDITY: the time in seconds, but always above any the user had.
   * Every folder (the first one too) is created here, so the user is marked held in the
   * same transaction as anything stored for them.
   */
  const newFolder = (user: string, now: number): Folder => {
    markHeld(held, user, now);
    // Before the new folder is written: a user's first folder starts the list with INBOX alone.
    if (subscribed.get(user) === undefined) subscribed.put(user, subscriptionsOf(user));
    const usage = usageOf(user);
    const uidValidity = Math.max(Math.floor(now / 1000), usage.lastUidValidity + 1);
    usages.put(user, { ...usage, lastUidValidity: uidValidity });
    return { uidValidity, uidNext: 1, messages: 0, bytes: 0, highestModSeq: 1, recentFrom: 1 };
  };

  /** The user's subscribed names; with none recorded yet, INBOX and every folder (what LSUB answered before they were kept). */
  const subscriptionsOf = (user: string): ReadonlyArray<string> =>
    subscribed.get(user) ?? sortedNames([INBOX, ...folderNames(user)]);

  const folderNames = (user: string) => [...folders.getKeys({ start: [user, ""], end: [user, AFTER_EVERY_NAME] })].map((key) => key[1]);

  const changeSubscriptions = (user: string, change: (names: Set<string>) => void) => {
    const names = new Set(subscriptionsOf(user));
    change(names);
    subscribed.put(user, sortedNames(names));
  };

  /** Is the selected folder still the one the session selected? */
  const selectable = (user: string, folder: string, uidValidity: number | undefined): NotSelectable | undefined => {
    if (uidValidity === undefined) return undefined;
    const current = folders.get([user, folder]);
    if (current === undefined) return new NoSuchFolder({ user, folder });
    return current.uidValidity === uidValidity ? undefined : new UidValidityChanged({ user, folder, uidValidity: current.uidValidity });
  };

  /** Takes the folder's next modification sequence (the folder must exist). */
  const nextModSeq = (user: string, folder: string): number => {
    const current = folders.get([user, folder])!;
    const modSeq = highestModSeqOf(current) + 1;
    folders.put([user, folder], { ...current, highestModSeq: modSeq });
    return modSeq;
  };

  const addBodyRef = (hash: string, body: Uint8Array) => {
    const existing = bodyRefs.get(hash);
    if (existing) return bodyRefs.put(hash, { ...existing, refs: existing.refs + 1 });
    const chunks = Math.max(1, Math.ceil(body.length / BODY_CHUNK_BYTES));
    const bytes = Buffer.from(body.buffer, body.byteOffset, body.byteLength);
    for (let n = 0; n < chunks; n++) bodies.put([hash, n], bytes.subarray(n * BODY_CHUNK_BYTES, (n + 1) * BODY_CHUNK_BYTES));
    return bodyRefs.put(hash, { refs: 1, size: body.length, chunks });
  };

  const dropBodyRef = (hash: string) => {
    const existing = bodyRefs.get(hash);
    if (!existing) return;
    if (existing.refs > 1) return bodyRefs.put(hash, { ...existing, refs: existing.refs - 1 });
    for (let n = 0; n < existing.chunks; n++) bodies.remove([hash, n]);
    return bodyRefs.remove(hash);
  };

  /** Adds one message record to `folder` (created if missing); bodies and usage are the caller's. */
  const addMessage = (user: string, folder: string, record: Omit<StoredMessage, "uid">, now: number): { uid: number; uidValidity: number } => {
    const current = folders.get([user, folder]) ?? newFolder(user, now);
    const uid = current.uidNext;
    const modSeq = highestModSeqOf(current) + 1;
    messages.put([user, folder, uid], { ...record, uid, modSeq });
    folders.put([user, folder], {
      ...current,
      uidNext: uid + 1,
      messages: current.messages + 1,
      bytes: current.bytes + record.size,
      highestModSeq: modSeq,
      recentFrom: recentFromOf(current),
    });
    return { uid, uidValidity: current.uidValidity };
  };

  const removeMessage = (user: string, folder: string, uid: number): boolean => {
    const record = messages.get([user, folder, uid]);
    const current = folders.get([user, folder]);
    if (!record || !current) return false;
    messages.remove([user, folder, uid]);
    dropBodyRef(record.body);
    // An expunge is a change too: HIGHESTMODSEQ moves so a client resyncing by it looks again.
    folders.put([user, folder], { ...current, messages: current.messages - 1, bytes: current.bytes - record.size, highestModSeq: highestModSeqOf(current) + 1 });
    adjustUsage(user, -record.size, -1);
    return true;
  };

  const wouldExceed = (user: string, bytes: number, quotaBytes: number | undefined): OverQuota | undefined => {
    if (quotaBytes === undefined) return undefined;
    const used = usageOf(user).bytes;
    return used + bytes > quotaBytes ? overQuota(user, used, quotaBytes, bytes) : undefined;
  };

  const storeNew = (
    user: string,
    body: Uint8Array,
    hash: string,
    entryId: string | undefined,
    options: StoreOptions,
    now: number,
  ): CommitOutcome<Stored, OverQuota> => {
    const exceeded = wouldExceed(user, body.length, options.quotaBytes);
    if (exceeded) return refused(exceeded);
    const folder = folderName(options.folder ?? INBOX);
    // A folder the queue makes (Junk, for quarantined mail) is subscribed, so clients that list subscribed folders show it.
    const subscribe = entryId !== undefined && folder !== INBOX && folders.get([user, folder]) === undefined;
    addBodyRef(hash, body);
    const { uid, uidValidity } = addMessage(user, folder, {
      size: body.length,
      internalDate: options.internalDate ?? now,
      flags: sortedFlags(options.flags ?? []),
      body: hash,
      entryId,
    }, now);
    adjustUsage(user, body.length, 1);
    if (subscribe) changeSubscriptions(user, (names) => names.add(folder));
    if (entryId !== undefined) deliveries.put([user, entryId], { folder, uid, at: now });
    return done({ folder, uid, uidValidity, duplicate: false });
  };

  const sha256 = (body: Uint8Array) => createHash("sha256").update(body).digest("hex");

  const statusOf = (user: string, name: string): FolderStatus | undefined => {
    const folder = folders.get([user, name]);
    return folder ? { name, ...folder } : undefined;
  };

  const list = (user: string, folder: string) =>
    [...messages.getRange({ start: [user, folder, 0], end: [user, folder, LAST_UID] }).map(({ value }) => value)];

  // -- moving ------------------------------------------------------------------

  const userMessages = (user: string) =>
    [...messages.getRange({ start: [user, "", 0], end: [user, AFTER_EVERY_NAME, LAST_UID] }).map(({ value, key }) => ({ folder: key[1], message: value }))];

  /** Drops every row of the user; bodies go when their last reference does. */
  const clearUser = (user: string) => {
    for (const { folder, message } of userMessages(user)) {
      messages.remove([user, folder, message.uid]);
      dropBodyRef(message.body);
    }
    for (const { key } of folders.getRange({ start: [user, ""], end: [user, AFTER_EVERY_NAME] })) folders.remove(key);
    for (const { key } of deliveries.getRange({ start: [user, ""], end: [user, AFTER_EVERY_NAME] })) deliveries.remove(key);
    subscribed.remove(user);
    usages.remove(user);
  };

  /** References a body for a moved message: stored already, or in `bodies`; else the transaction fails. */
  const referenceBody = (hash: string, bodies: ReadonlyMap<string, Uint8Array>) => {
    const body = bodies.get(hash);
    if (bodyRefs.get(hash) === undefined && body === undefined) throw new Error(`body ${hash} missing`);
    addBodyRef(hash, body ?? new Uint8Array());
  };

  const movedRecord = (message: MovedMessage): StoredMessage => ({
    uid: message.uid,
    size: message.size,
    internalDate: message.internalDate,
    flags: [...message.flags],
    body: message.body,
    modSeq: message.modSeq,
    entryId: message.entryId,
  });

  const transaction = (operation: string, action: () => void): Effect.Effect<void, StoreError> =>
    Effect.tryPromise({ try: () => root.transaction(action), catch: (error) => new StoreError({ operation, detail: String(error) }) }).pipe(Effect.asVoid);

  const moving = {
    snapshot: (user: string): MailboxSnapshot => ({
      user,
      lastUidValidity: usageOf(user).lastUidValidity,
      folders: [...folders.getRange({ start: [user, ""], end: [user, AFTER_EVERY_NAME] }).map(({ key, value }) => ({
        name: key[1],
        uidValidity: value.uidValidity,
        uidNext: value.uidNext,
        highestModSeq: highestModSeqOf(value),
        recentFrom: recentFromOf(value),
      }))],
      messages: userMessages(user).map(({ folder, message }) => ({
        folder,
        uid: message.uid,
        size: message.size,
        internalDate: message.internalDate,
        flags: message.flags,
        body: message.body,
        modSeq: modSeqOf(message),
        ...(message.entryId !== undefined ? { entryId: message.entryId } : {}),
      })),
      deliveries: [...deliveries.getRange({ start: [user, ""], end: [user, AFTER_EVERY_NAME] }).map(({ key, value }) => ({ entryId: key[1], ...value }))],
      ...(subscribed.get(user) !== undefined && { subscribed: [...subscribed.get(user)!] }),
    }),

    bodyByHash: (hash: string) => {
      const stored = bodyRefs.get(hash);
      if (!stored) return undefined;
      const chunks: Buffer[] = [];
      for (let n = 0; n < stored.chunks; n++) {
        const chunk = bodies.get([hash, n]);
        if (chunk === undefined) return undefined;
        chunks.push(chunk);
      }
      return chunks.length === 1 ? chunks[0] : Buffer.concat(chunks, stored.size);
    },

    hasBody: (hash: string) => bodyRefs.get(hash) !== undefined,

    stage: (user: string, staged: ReadonlyArray<MovedMessage>, bodies: ReadonlyMap<string, Uint8Array>) =>
      transaction("mailbox.move.stage", () => {
        for (const message of staged) {
          const existing = messages.get([user, message.folder, message.uid]);
          if (existing?.body === message.body) continue;
          referenceBody(message.body, bodies);
          // A folder deleted and made again reuses UIDs (under a new UIDVALIDITY): the newer row wins.
          if (existing !== undefined) dropBodyRef(existing.body);
          messages.put([user, message.folder, message.uid], movedRecord(message));
        }
      }),

    replace: (snapshot: MailboxSnapshot, bodies: ReadonlyMap<string, Uint8Array>, within: () => void) =>
      Effect.flatMap(Clock.currentTimeMillis, (now) =>
        transaction("mailbox.move.replace", () => {
          const user = snapshot.user;
          // New references first: a body the old rows and the snapshot share must not be dropped in between.
          for (const message of snapshot.messages) referenceBody(message.body, bodies);
          clearUser(user);
          const totals = new Map<string, { messages: number; bytes: number }>();
          for (const message of snapshot.messages) {
            messages.put([user, message.folder, message.uid], movedRecord(message));
            const total = totals.get(message.folder) ?? { messages: 0, bytes: 0 };
            totals.set(message.folder, { messages: total.messages + 1, bytes: total.bytes + message.size });
          }
          for (const folder of snapshot.folders) {
            const total = totals.get(folder.name) ?? { messages: 0, bytes: 0 };
            folders.put([user, folder.name], {
              uidValidity: folder.uidValidity,
              uidNext: folder.uidNext,
              highestModSeq: folder.highestModSeq,
              ...(folder.recentFrom !== undefined && { recentFrom: folder.recentFrom }),
              ...total,
            });
          }
          if (snapshot.subscribed !== undefined) subscribed.put(user, sortedNames(snapshot.subscribed));
          for (const { entryId, ...where } of snapshot.deliveries) deliveries.put([user, entryId], where);
          usages.put(user, {
            bytes: snapshot.messages.reduce((sum, m) => sum + m.size, 0),
            messages: snapshot.messages.length,
            lastUidValidity: snapshot.lastUidValidity,
          });
          markHeld(held, user, now);
          within();
        })),

    remove: (user: string, within: () => void) =>
      transaction("mailbox.move.remove", () => {
        clearUser(user);
        held.remove(user);
        within();
      }),
  };

  return {
    ...moving,
    deliver: (user, entryId, body, options = {}) => {
      // Hashing a 50 MB body takes a while: do it before the write transaction, not in it.
      const hash = sha256(body);
      return commit("mailbox.deliver", (now): CommitOutcome<Stored, OverQuota> => {
        const earlier = deliveries.get([user, entryId]);
        if (earlier === undefined) return storeNew(user, body, hash, entryId, options, now);
        const uidValidity = folders.get([user, earlier.folder])?.uidValidity ?? 0;
        return done({ folder: earlier.folder, uid: earlier.uid, uidValidity, duplicate: true });
      });
    },

    append: (user, body, options = {}) => {
      const hash = sha256(body);
      return commit("mailbox.append", (now) => storeNew(user, body, hash, undefined, options, now));
    },

    folders: (user) =>
      [...folders.getRange({ start: [user, ""], end: [user, AFTER_EVERY_NAME] }).map(({ key, value }) => ({ name: key[1], ...value }))],

    status: (user, folder) => statusOf(user, folderName(folder)),

    createFolder: (user, name) => {
      const folder = folderName(name);
      return commit("mailbox.createFolder", (now): CommitOutcome<FolderStatus, FolderExists> => {
        if (folders.get([user, folder])) return refused(new FolderExists({ user, folder }));
        const created = newFolder(user, now);
        folders.put([user, folder], created);
        return done({ name: folder, ...created });
      });
    },

    deleteFolder: (user, name) => {
      const folder = folderName(name);
      return commit("mailbox.deleteFolder", (): CommitOutcome<void, NoSuchFolder> => {
        if (!folders.get([user, folder])) return refused(new NoSuchFolder({ user, folder }));
        for (const message of list(user, folder)) removeMessage(user, folder, message.uid);
        if (folder !== INBOX) folders.remove([user, folder]);
        return done(undefined);
      });
    },

    renameFolder: (user, fromName, toName) => {
      const [from, to] = [folderName(fromName), folderName(toName)];
      return commit("mailbox.renameFolder", (now): CommitOutcome<void, NoSuchFolder | FolderExists> => {
        const current = folders.get([user, from]);
        if (!current) return refused(new NoSuchFolder({ user, folder: from }));
        if (folders.get([user, to])) return refused(new FolderExists({ user, folder: to }));
        for (const message of list(user, from)) {
          messages.remove([user, from, message.uid]);
          messages.put([user, to, message.uid], message);
        }
        folders.put([user, to], current);
        if (from === INBOX) folders.put([user, INBOX], newFolder(user, now));
        else folders.remove([user, from]);
        // The subscription goes with the folder; INBOX, which stays, keeps its own.
        if (subscriptionsOf(user).includes(from))
          changeSubscriptions(user, (names) => {
            names.add(to);
            if (from !== INBOX) names.delete(from);
          });
        return done(undefined);
      });
    },

    subscriptions: (user) => subscriptionsOf(user),

    subscribe: (user, name) => {
      const folder = folderName(name);
      return commit("mailbox.subscribe", (): CommitOutcome<void, NoSuchFolder> => {
        if (folder !== INBOX && !folders.get([user, folder])) return refused(new NoSuchFolder({ user, folder }));
        changeSubscriptions(user, (names) => names.add(folder));
        return done(undefined);
      });
    },

    unsubscribe: (user, name) => {
      const folder = folderName(name);
      return commit("mailbox.unsubscribe", () => {
        changeSubscriptions(user, (names) => names.delete(folder));
        return done(undefined);
      });
    },

    claimRecent: (user, name, uidValidity) => {
      const folder = folderName(name);
      const take = (current: Folder): RecentClaim => ({ uidValidity: current.uidValidity, from: recentFromOf(current), to: current.uidNext });
      // Nothing to take (the usual case on a resync): no write, no fsync.
      const seen = folders.get([user, folder]);
      if (seen !== undefined && selectable(user, folder, uidValidity) === undefined && recentFromOf(seen) >= seen.uidNext)
        return Effect.succeed({ uidValidity: seen.uidValidity, from: seen.uidNext, to: seen.uidNext });
      return commit("mailbox.claimRecent", (): CommitOutcome<RecentClaim, NotSelectable> => {
        const current = folders.get([user, folder]);
        if (current === undefined) return refused(new NoSuchFolder({ user, folder }));
        const stale = selectable(user, folder, uidValidity);
        if (stale) return refused(stale);
        const claim = take(current);
        if (claim.from < claim.to) folders.put([user, folder], { ...current, recentFrom: claim.to });
        return done(claim);
      });
    },

    list: (user, folder) => list(user, folderName(folder)),

    message: (user, folder, uid) => messages.get([user, folderName(folder), uid]),

    body: (user, folder, uid) => {
      const record = messages.get([user, folderName(folder), uid]);
      const stored = record && bodyRefs.get(record.body);
      if (!record || !stored) return undefined;
      const chunks: Buffer[] = [];
      for (let n = 0; n < stored.chunks; n++) {
        const chunk = bodies.get([record.body, n]);
        if (chunk === undefined) return undefined;
        chunks.push(chunk);
      }
      return chunks.length === 1 ? chunks[0] : Buffer.concat(chunks, stored.size);
    },

    setFlags: (user, name, uids, flags, change, unchangedSince, uidValidity) => {
      const folder = folderName(name);
      return commit("mailbox.setFlags", (): CommitOutcome<FlagsSet, NotSelectable> => {
        const stale = selectable(user, folder, uidValidity);
        if (stale) return refused(stale);
        const modified: number[] = [];
        for (const uid of uids) {
          const record = messages.get([user, folder, uid]);
          if (!record) continue;
          if (unchangedSince !== undefined && modSeqOf(record) > unchangedSince) {
            modified.push(uid);
            continue;
          }
          const next = sortedFlags(
            change === "replace" ? flags : change === "add" ? [...record.flags, ...flags] : record.flags.filter((flag) => !flags.includes(flag)),
          );
          // A change that changes nothing keeps the modification sequence (RFC 7162 §3.1).
          if (next.join(" ") === record.flags.join(" ")) continue;
          messages.put([user, folder, uid], { ...record, flags: next, modSeq: nextModSeq(user, folder) });
        }
        return done({ modified });
      });
    },

    copy: (user, fromName, uids, toName, quotaBytes, options = {}) => {
      const [from, to] = [folderName(fromName), folderName(toName)];
      return commit(options.move ? "mailbox.move" : "mailbox.copy", (now): CommitOutcome<ReadonlyArray<number>, NotSelectable | OverQuota> => {
        if (!folders.get([user, from])) return refused(new NoSuchFolder({ user, folder: from }));
        const stale = selectable(user, from, options.uidValidity);
        if (stale) return refused(stale);
        if (!folders.get([user, to])) return refused(new NoSuchFolder({ user, folder: to }));
        const present = uids.filter((uid) => messages.get([user, from, uid]) !== undefined);
        const sources = present.map((uid) => messages.get([user, from, uid])!);
        // A move frees what it takes: only a copy can go over the quota.
        const exceeded = options.move ? undefined : wouldExceed(user, sources.reduce((sum, m) => sum + m.size, 0), quotaBytes);
        if (exceeded) return refused(exceeded);
        const target = sources.map((source) => {
          const existing = bodyRefs.get(source.body)!;
          bodyRefs.put(source.body, { ...existing, refs: existing.refs + 1 });
          adjustUsage(user, source.size, 1);
          return addMessage(user, to, { ...source, entryId: undefined }, now).uid;
        });
        if (options.move) for (const uid of present) removeMessage(user, from, uid);
        return done(target);
      });
    },

    expungeDeleted: (user, name, uids, uidValidity) => {
      const folder = folderName(name);
      return commit("mailbox.expunge", (): CommitOutcome<ReadonlyArray<number>, NotSelectable> => {
        const stale = selectable(user, folder, uidValidity);
        if (stale) return refused(stale);
        return done(uids.filter((uid) => messages.get([user, folder, uid])?.flags.includes("\\Deleted") === true && removeMessage(user, folder, uid)));
      });
    },

    expunge: (user, name, uids, markSeen = []) => {
      const folder = folderName(name);
      return commit("mailbox.expunge", () => {
        for (const uid of markSeen) {
          const record = messages.get([user, folder, uid]);
          if (record && !record.flags.includes("\\Seen"))
            messages.put([user, folder, uid], { ...record, flags: sortedFlags([...record.flags, "\\Seen"]), modSeq: nextModSeq(user, folder) });
        }
        return done(uids.filter((uid) => removeMessage(user, folder, uid)).length);
      });
    },

    usage: (user) => {
      const { bytes, messages: count } = usageOf(user);
      return { bytes, messages: count };
    },
  };
};
