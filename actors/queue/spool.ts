// The node's durable spool and queue in LMDB.
//
// Invariant 1: `accept` resolves only after message, body and queue entries are
// committed and flushed (lmdb-js's default: an awaited write resolves once synced;
// concurrent writes share one commit, which is the group commit).
// Invariant 2: an entry leaves the queue only through `settle`/`finish`, called after
// the next hop accepted it, it failed permanently or expired, or an operator removed it;
// a DSN for it is written in the same transaction.
// Events: accept, settle and finish write the events they are given to the event
// outbox (actors/queue/outbox.ts) in the same transaction, so an outcome is committed
// with its events or not at all; settle and finish write none when the entry was gone.
// Invariant 5: due work is found through indexes sorted by time, never by scanning all
// entries: each queue (destination domain, or local mailbox) keeps its entries in
// [queue, time, entryId] order, and `heads` lists each queue once at its earliest due
// time, [time, queue]. A suspended queue has no head, so it costs nothing while it waits.
// Bodies are written in chunks as they arrive, so a large message never sits whole in
// memory on its way in. A header known only once the whole body passed (a DKIM signature)
// goes into one chunk that sorts before the first (`prepend`, written by `accept`'s
// transaction), so whoever reads the body later, every delivery attempt alike, reads the
// same bytes. A body whose transaction ends without a commit is removed at once
// (`discard`, after its in-flight writes); only one a crash left behind waits for the next start.
// A body whose chunks go to disk before the commit is first marked `incoming` (so a crash
// cannot leave chunks nobody owns); the last chunk, and the whole body of a message smaller
// than a chunk (most mail), is written by `accept`'s own transaction, so such a message
// costs one LMDB write transaction to accept rather than three.
// Recipients that leave the queue are noted in `finished` (./finished.ts) in the same
// transaction, so status can still tell what became of them.
// Entries per queue are counted in memory for metrics: once at open (one walk of the
// queue index's keys, about a second per million entries), then moved by what each
// transaction put and removed, once it has committed, so a scrape reads a map and never
// walks the queue. The oldest entry is the first by id (ids sort by arrival).
// An operator's hold (`tern queue hold`) is stored with the entry (`heldAt`), and the entry
// waits in its queue's index at HELD_DUE, after any real time: the due index never reaches
// it, so a held entry costs nothing while it waits, and the hold survives a restart. An
// attempt already in flight when the hold came is recorded, and the entry stays held
// (`keepingHold`): the stored copy's hold wins over the attempt's copy.
// Idempotency records (the NATS API's idempotency keys) are written in the same
// transaction as the message they answer for, so a key is known exactly when its message
// is committed: a retry after a crash finds either both or neither.
import { Clock, Duration, Effect } from "effect";
import type { Database, RootDatabase } from "lmdb";
import { reportedStatus, type AttemptRecord } from "../../protocol/delivery.ts";
import { StoreError } from "../../protocol/errors.ts";
import type { EventDraft } from "../../protocol/events.ts";
import type { FinishedState } from "../../protocol/status.ts";
import { arrivalOf, entryIdOf, HELD_DUE, keepingHold, queueOf, type MessageRecord, type QueueEntry, type Route } from "./entry.ts";
import { openFinished, type FinishedMessage } from "./finished.ts";
import { openOutbox, type Outbox } from "./outbox.ts";

type QueueKey = [string, number, string];
type HeadKey = [number, string];
type ChunkKey = [string, number];
type IdempotencyKey = [string, string];
type ExpiryKey = [number, string, string];

/** Pieces are gathered up to this size before they are written to LMDB as one chunk. */
const CHUNK_BYTES = 64 * 1024;
/** The chunk number of what `prepend` stores: it sorts before the first appended chunk (0). */
const PREFIX_SEQ = -1;
/** Body bytes handed to LMDB but not yet committed, beyond which the sender is paused. */
const MAX_UNCOMMITTED_BYTES = 2 * 1024 * 1024;
/** Keys read per page by operations that walk a whole queue (admin), so memory stays bounded. */
const PAGE = 1_000;
/** Entries still waiting for their send-at time that `oldestArrival` passes over, at most, looking for one that is due. */
const SCHEDULED_SKIP = 1_000;

export interface NewMessage {
  readonly id: string;
  readonly sender: string;
  readonly receivedAt: number;
  /** The body written so far through `openBody(id)`. */
  readonly body: BodyWriter;
  readonly routes: ReadonlyArray<{ readonly route: Route; readonly recipients: ReadonlyArray<string> }>;
  /** Extra data kept with the message (DSN parameters, auth user…). */
  readonly attributes?: Readonly<Record<string, unknown>> | undefined;
  /** Its entries are due at this time, not before (a send-at time); their life starts then too. */
  readonly notBefore?: number | undefined;
  /** An idempotency record committed with the message: `recall(scope, key)` returns `value` until `expiresAt`. */
  readonly remember?: IdempotencyRecord | undefined;
}

export interface IdempotencyRecord {
  /** The namespace of the key (the API tenant). */
  readonly scope: string;
  readonly key: string;
  readonly value: unknown;
  readonly expiresAt: number;
}

/** A message a peer hands over: its body whole, in memory (it arrived in one frame or one pulled blob). */
export interface AdoptedMessage {
  readonly id: string;
  readonly sender: string;
  readonly receivedAt: number;
  readonly body: Uint8Array;
  readonly attributes?: Readonly<Record<string, unknown>> | undefined;
}

/** A message made by this node (a DSN): small, its body in memory, committed with the outcome that caused it. */
export interface GeneratedMessage {
  readonly id: string;
  readonly sender: string;
  readonly receivedAt: number;
  readonly body: Uint8Array;
  readonly routes: ReadonlyArray<{ readonly route: Route; readonly recipients: ReadonlyArray<string> }>;
  readonly attributes?: Readonly<Record<string, unknown>> | undefined;
}

/**
 * Streams one message body into the spool; nothing is visible until `accept` commits.
 * A body is receiving, then either committed (by `accept`) or discarded, once: whoever
 * ends a transaction without a commit calls `discard`, on every path, and a body that
 * `accept` is committing or has committed is left alone (a failed commit discards it).
 */
export interface BodyWriter {
  /** Returns a promise when too much is waiting for the disk: wait for it before appending more. Ignored once the body is no longer receiving. */
  readonly append: (chunk: Uint8Array) => Promise<void> | undefined;
  readonly size: () => number;
  /**
   * Puts `bytes` before everything appended, before or after this call: a header computed over
   * the whole body (a DKIM signature). At most once, before `accept`; ignored once the body is
   * no longer receiving.
   */
  readonly prepend: (bytes: Uint8Array) => void;
  /** Drops what was written (the transaction was refused or aborted); does nothing after the first call or once `accept` took the body. */
  readonly discard: () => void;
  /** Resolves when every chunk written so far is on disk; fails if any write failed. */
  readonly flushed: () => Promise<void>;
}

/** Queue entries per destination and age, like Postfix's qshape. */
export interface QueueShape {
  /** Upper bounds of the age buckets, in minutes; the last bucket is everything older. */
  readonly bucketsMinutes: ReadonlyArray<number>;
  readonly total: { readonly entries: number; readonly buckets: ReadonlyArray<number> };
  /** The largest queues first, at most `limit` of them. */
  readonly queues: ReadonlyArray<{ readonly queue: string; readonly entries: number; readonly buckets: ReadonlyArray<number>; readonly suspended: boolean }>;
  readonly queueCount: number;
}

const SHAPE_BUCKETS_MINUTES = [5, 10, 20, 40, 80, 160, 320, 640, 1280];

/** Which entries an admin operation applies to. */
export type Selection = { readonly queue?: string | undefined; readonly sender?: string | undefined };

export interface Spool {
  readonly openBody: (messageId: string) => BodyWriter;
  /** Commits the message, its entries (ids `entryIdOf(message.id, n)`, one per route) and `events`. */
  readonly accept: (message: NewMessage, events?: ReadonlyArray<EventDraft>) => Effect.Effect<ReadonlyArray<QueueEntry>, StoreError>;
  /** Queues with entries due at or before `now`, earliest first (read lazily). */
  readonly dueQueues: (now: number) => Iterable<{ readonly queue: string; readonly at: number }>;
  /** Entries of one queue due at or before `now`, oldest first, at most `limit`, passing over ids `skip` names (read keys only). */
  readonly dueIn: (queue: string, now: number, limit: number, skip?: (entryId: string) => boolean) => ReadonlyArray<QueueEntry>;
  readonly body: (messageId: string) => Uint8Array | undefined;
  /** The start of the body, at least through the blank line ending the header section when it is within `maxBytes`. */
  readonly head: (messageId: string, maxBytes: number) => Uint8Array | undefined;
  readonly hasMessage: (messageId: string) => boolean;
  readonly message: (messageId: string) => MessageRecord | undefined;
  readonly entry: (entryId: string) => QueueEntry | undefined;
  /** The queue entries of one message still in the queue (a range of ids, `<messageId>.<n>`). */
  readonly entriesOf: (messageId: string) => ReadonlyArray<QueueEntry>;
  /** What became of the message's recipients that left the queue, while kept (see `pruneFinished`). */
  readonly finished: (messageId: string) => FinishedMessage | undefined;
  /**
   * Records an attempt's outcome in one transaction: the entry waits again as `next`, or is
   * removed when `next` is undefined; `created` (DSNs) are queued with it. Recipients of the
   * entry that `next` no longer lists are noted as finished, with what `attempt` got for them.
   * Returns the created entries (none when the entry was already gone: an operator removed it,
   * and then neither DSNs nor `events` are written).
   */
  readonly settle: (
    entry: QueueEntry,
    next: QueueEntry | undefined,
    created: ReadonlyArray<GeneratedMessage>,
    outcome?: { readonly attempt?: AttemptRecord | undefined; readonly events?: ReadonlyArray<EventDraft> | undefined },
  ) => Effect.Effect<ReadonlyArray<QueueEntry>, StoreError>;
  /**
   * The entry is done without an attempt (an operator deleted it, its body is missing):
   * removes it, and the message once no entry needs it; its recipients are noted as removed,
   * and `events` are written with it unless the entry was already gone.
   */
  readonly finish: (entry: QueueEntry, events?: ReadonlyArray<EventDraft>) => Effect.Effect<void, StoreError>;
  /**
   * Forgets finished recipients of messages whose record last changed before `before`, at
   * most `limit` messages per call; returns how many were forgotten.
   */
  readonly pruneFinished: (before: number, limit: number) => Effect.Effect<number, StoreError>;
  /** Messages with finished recipients on record. */
  readonly finishedCount: () => number;
  readonly depth: () => number;
  /** Entries per queue (destination domain, or `local:<user>`), queues with none left out; kept in memory, cheap to read. */
  readonly queueDepths: () => ReadonlyMap<string, number>;
  /**
   * When the oldest queued message arrived (ms), leaving out entries whose life has not
   * started by `now` (a send-at time ahead); undefined when none is queued.
   */
  readonly oldestArrival: (now: number) => number | undefined;
  /** Bodies opened and not yet committed or discarded (being received, or being committed). */
  readonly incomingBodies: () => number;
  /** Disk space the body chunks of every message (queued or being received) take, in bytes of LMDB pages. */
  readonly bodyBytes: () => number;
  /** Resolves once every discard started so far is on disk (the node waits for it before closing LMDB). */
  readonly discardsSettled: () => Promise<void>;
  /** A small durable write, to tell whether the store can commit again after a failure. */
  readonly probe: () => Effect.Effect<void, StoreError>;

  // Administration (`tern queue`). Walks go page by page, so memory stays bounded.
  readonly isSuspended: (queue: string) => boolean;
  readonly suspended: () => ReadonlyArray<string>;
  /** Takes the queue out of the due order until `resume`; its entries stay (and do not expire meanwhile). */
  readonly suspend: (queue: string) => Effect.Effect<void, StoreError>;
  readonly resume: (queue: string) => Effect.Effect<void, StoreError>;
  readonly shape: (now: number, limit: number) => Promise<QueueShape>;
  /** Entries matching the selection, in queue order, after the entry id `after`, at most `limit`. */
  readonly list: (selection: Selection, limit: number, after?: string) => Promise<ReadonlyArray<QueueEntry>>;
  /** Runs `each` for every entry matching the selection, a page at a time, one page after the other. */
  readonly walk: <E>(selection: Selection, each: (entries: ReadonlyArray<QueueEntry>) => Effect.Effect<void, E>) => Effect.Effect<void, E>;
  /**
   * Makes the entries due at `now` (retry now), held ones left as they are; returns how many
   * entries (and their recipients) moved.
   */
  readonly redate: (entries: ReadonlyArray<QueueEntry>, now: number) => Effect.Effect<{ entries: number; recipients: number }, StoreError>;
  /** Puts the entries on hold at `now` (those not held already); returns the ids it held. */
  readonly hold: (entries: ReadonlyArray<QueueEntry>, now: number) => Effect.Effect<ReadonlyArray<string>, StoreError>;
  /**
   * Releases the held entries among these: due at `now`, the time they spent on hold added
   * to `heldMs`; returns the ids it released.
   */
  readonly release: (entries: ReadonlyArray<QueueEntry>, now: number) => Effect.Effect<ReadonlyArray<string>, StoreError>;

  // Draining (nodes/services/drain.ts): a message moves to a peer whole, committed there before it leaves here.
  /**
   * Takes over a message a draining peer hands off: record, body and the given entries (ids,
   * recipients and attempt state as they were), and the idempotency record `remember`, in one
   * transaction. "duplicate" when that record exists (a retried hand-off) or the message is
   * here already: then nothing is written.
   */
  readonly adopt: (message: AdoptedMessage, entries: ReadonlyArray<QueueEntry>, remember: IdempotencyRecord) => Effect.Effect<"committed" | "duplicate", StoreError>;
  /**
   * The entries were committed by the peer `to`: removes them (and the message with its last
   * entry), noting their recipients as handed off to `to`. Returns how many were still here.
   */
  readonly handOver: (entries: ReadonlyArray<QueueEntry>, to: string) => Effect.Effect<number, StoreError>;

  /** The value committed with `remember` for this key, unless it has expired by `now`. */
  readonly recall: (scope: string, key: string, now: number) => unknown;
  /** Removes idempotency records expired by `now`, at most `limit`; returns how many went. */
  readonly forgetExpired: (now: number, limit: number) => Effect.Effect<number, StoreError>;
}

export interface SpoolObserver {
  /** A write transaction committed: which operation (accept, settle…) and how long it took to reach the disk. */
  readonly committed?: ((operation: string, seconds: number) => void) | undefined;
}

/** The event outbox is opened with the spool when none is given (tests). */
export const openSpool = (root: RootDatabase, outbox: Outbox = openOutbox(root, "local"), observer: SpoolObserver = {}): Spool => {
  const messages: Database<MessageRecord, string> = root.openDB({ name: "spool.messages" });
  const bodies: Database<Buffer, ChunkKey> = root.openDB({ name: "spool.bodies", encoding: "binary" });
  // Bodies being received: chunks of a message still listed here at start belong to a
  // transaction that never got its 250, and are removed.
  const incoming: Database<true, string> = root.openDB({ name: "spool.incoming" });
  const health: Database<number, string> = root.openDB({ name: "spool.health" });
  const entries: Database<QueueEntry, string> = root.openDB({ name: "spool.entries" });
  const queued: Database<true, QueueKey> = root.openDB({ name: "spool.queues" });
  const heads: Database<true, HeadKey> = root.openDB({ name: "spool.heads" });
  const headOf: Database<number, string> = root.openDB({ name: "spool.head-of" });
  const suspendedQueues: Database<{ readonly at: number }, string> = root.openDB({ name: "spool.suspended" });
  const suspendedSet = new Set<string>(suspendedQueues.getKeys());
  const finishedRecords = openFinished(root);
  const idempotency: Database<{ readonly value: unknown; readonly expiresAt: number }, IdempotencyKey> = root.openDB({ name: "spool.idempotency" });
  // Idempotency records by expiry time, [expiresAt, scope, key], so pruning reads only the expired.
  const idempotencyExpiry: Database<true, ExpiryKey> = root.openDB({ name: "spool.idempotency-by-expiry" });

  const depths = new Map<string, number>();
  for (const [queue] of queued.getKeys()) depths.set(queue, (depths.get(queue) ?? 0) + 1);
  /** What the transaction callback running now adds to each queue's count (set only while one runs). */
  let moving: Map<string, number> | undefined;
  const countEntry = (queue: string, by: 1 | -1) => {
    if (moving) moving.set(queue, (moving.get(queue) ?? 0) + by);
  };
  const applyDepths = (moved: ReadonlyMap<string, number>) => {
    for (const [queue, by] of moved) {
      const count = (depths.get(queue) ?? 0) + by;
      if (count > 0) depths.set(queue, count);
      else depths.delete(queue);
    }
  };

  // Every write of queue entries goes through here. The counts move only once the
  // transaction committed, and only by what its last run did (LMDB may run a callback again).
  const commit = <T>(operation: string, action: () => T) =>
    Effect.tryPromise({
      try: () => {
        let moved = new Map<string, number>();
        return root
          .transaction(() => {
            moving = moved = new Map();
            try {
              return action();
            } finally {
              moving = undefined;
            }
          })
          .then((value) => {
            applyDepths(moved);
            return value;
          });
      },
      catch: (error) => new StoreError({ operation, detail: describeStoreError(error) }),
    }).pipe(
      Effect.timed,
      Effect.map(([took, value]) => {
        observer.committed?.(operation, Duration.toMillis(took) / 1000);
        return value;
      }),
    );

  /** A commit that may write events: the publisher hears of them once they are on disk. */
  const commitWithEvents = <T>(operation: string, events: ReadonlyArray<EventDraft>, action: () => T) =>
    events.length === 0 ? commit(operation, action) : Effect.tap(commit(operation, action), () => Effect.sync(outbox.written));

  const queueRange = (queue: string, until = Number.MAX_VALUE) => ({
    start: [queue] as unknown as QueueKey,
    end: [queue, until, "\uffff"] as QueueKey,
  });

  /** Keeps `heads` listing the queue at its earliest entry's time (none when empty or suspended). Inside a transaction. */
  const refreshHead = (queue: string) => {
    const first = suspendedSet.has(queue) ? undefined : [...queued.getKeys({ ...queueRange(queue), limit: 1 })][0];
    moveHead(queue, headOf.get(queue), first?.[1]);
  };

  /** Lists the queue in `heads` at `time` instead of `previous` (undefined: not listed). Inside a transaction. */
  const moveHead = (queue: string, previous: number | undefined, time: number | undefined) => {
    if (previous === time) return;
    if (previous !== undefined) heads.remove([previous, queue]);
    if (time !== undefined) {
      heads.put([time, queue], true);
      headOf.put(queue, time);
    } else {
      headOf.remove(queue);
    }
  };

  // putEntry and removeEntry keep the head without a range read when they can: the head is
  // the queue's earliest time, so a new entry moves it only when earlier (or the queue was
  // empty), and a removed one only when it was at the head.
  const putEntry = (entry: QueueEntry) => {
    const queue = queueOf(entry.route);
    entries.put(entry.id, entry);
    queued.put([queue, entry.nextAttemptAt, entry.id], true);
    countEntry(queue, 1);
    if (suspendedSet.has(queue)) return;
    const head = headOf.get(queue);
    if (head === undefined || entry.nextAttemptAt < head) moveHead(queue, head, entry.nextAttemptAt);
  };

  const removeEntry = (entry: QueueEntry) => {
    const queue = queueOf(entry.route);
    entries.remove(entry.id);
    queued.remove([queue, entry.nextAttemptAt, entry.id]);
    countEntry(queue, -1);
    const head = headOf.get(queue);
    if (head === undefined || entry.nextAttemptAt > head) return;
    refreshHead(queue);
  };

  const chunkRange = (messageId: string) => ({ start: [messageId, PREFIX_SEQ] as ChunkKey, end: [messageId, Number.MAX_SAFE_INTEGER] as ChunkKey });

  /**
   * Notes the recipients of `entry` that `next` no longer lists as finished: as `attempt`
   * reported them, or removed when no attempt decided. Inside a transaction, before `retire`
   * (which may remove the message record this reads).
   */
  const noteFinished = (
    entry: QueueEntry,
    next: QueueEntry | undefined,
    attempt: AttemptRecord | undefined,
    now: number,
    message: MessageRecord | undefined = messages.get(entry.messageId),
  ) => {
    const waiting = new Set(next?.recipients ?? []);
    const done = entry.recipients.filter((rcpt) => !waiting.has(rcpt));
    if (done.length === 0) return;
    const stateOf = (rcpt: string): FinishedState => {
      const status = attempt?.results.find((r) => r.rcpt === rcpt)?.status;
      // Done without a final status from this attempt: an operator removed it.
      return status === undefined || status === "deferred" ? "removed" : reportedStatus[status];
    };
    const history = next?.history ?? (attempt ? [...(entry.history ?? []), attempt] : entry.history);
    finishedRecords.note(
      message,
      entry,
      { attempts: next?.attempts ?? entry.attempts + (attempt ? 1 : 0), history, recipients: done.map((rcpt) => ({ rcpt, state: stateOf(rcpt), at: now })) },
      now,
    );
  };

  const removeChunks = (messageId: string) => {
    for (const key of bodies.getKeys(chunkRange(messageId))) bodies.remove(key);
  };

  /** Removes a finished entry, and its message once no other entry needs it. Inside a transaction. */
  const retire = (entry: QueueEntry): boolean => {
    const current = entries.get(entry.id);
    if (!current) return false; // already finished: a duplicate completion is harmless
    retireCurrent(current, messages.get(entry.messageId));
    return true;
  };

  /** `retire` of an entry read in this transaction, with its message record as read there too (each record decoded once). */
  const retireCurrent = (current: QueueEntry, message: MessageRecord | undefined) => {
    removeEntry(current);
    if (!message || message.openEntries <= 1) {
      messages.remove(current.messageId);
      removeChunks(current.messageId);
    } else {
      messages.put(current.messageId, { ...message, openEntries: message.openEntries - 1 });
    }
  };

  const entriesFor = (message: { id: string; sender: string; receivedAt: number; routes: NewMessage["routes"]; notBefore?: number | undefined }) =>
    message.routes.map(
      ({ route, recipients }, n): QueueEntry => ({
        id: entryIdOf(message.id, n),
        messageId: message.id,
        route,
        sender: message.sender,
        recipients,
        // A scheduled message's queue life (expiry, delay notice) starts when it is due.
        createdAt: Math.max(message.receivedAt, message.notBefore ?? 0),
        attempts: 0,
        nextAttemptAt: Math.max(message.receivedAt, message.notBefore ?? 0),
        reason: message.notBefore !== undefined && message.notBefore > message.receivedAt ? "scheduled" : "received",
      }),
    );

  /** Writes a message whose body is in memory: record, body chunks and `fresh` entries. Inside a transaction. */
  const writeWhole = (message: GeneratedMessage | AdoptedMessage, fresh: ReadonlyArray<QueueEntry>) => {
    messages.put(message.id, {
      id: message.id,
      sender: message.sender,
      receivedAt: message.receivedAt,
      size: message.body.length,
      openEntries: fresh.length,
      ...(message.attributes ? { attributes: message.attributes } : {}),
    });
    for (let offset = 0, seq = 0; offset < message.body.length; offset += CHUNK_BYTES, seq++) {
      bodies.put([message.id, seq], Buffer.from(message.body.subarray(offset, offset + CHUNK_BYTES)));
    }
    fresh.forEach(putEntry);
  };

  /** Writes a generated message whole. Inside a transaction. */
  const writeGenerated = (message: GeneratedMessage, created: QueueEntry[]) => {
    const fresh = entriesFor(message);
    writeWhole(message, fresh);
    created.push(...fresh);
  };

  /** Writes an idempotency record, replacing an older one of the same key. Inside a transaction. */
  const remember = ({ scope, key, value, expiresAt }: IdempotencyRecord) => {
    const previous = idempotency.get([scope, key]);
    if (previous) idempotencyExpiry.remove([previous.expiresAt, scope, key]);
    idempotency.put([scope, key], { value, expiresAt });
    idempotencyExpiry.put([expiresAt, scope, key], true);
  };

  for (const messageId of incoming.getKeys()) {
    if (!messages.doesExist(messageId)) removeChunks(messageId);
    incoming.remove(messageId);
  }

  /** The commit side of each body this spool opened: `accept` takes a body through it. */
  const commits = new WeakMap<BodyWriter, BodyCommit>();
  const discarding = new Set<Promise<unknown>>();
  /** Bodies receiving or committing: counted in memory, since a small one has nothing on disk yet. */
  let openBodies = 0;

  const openBody = (messageId: string): BodyWriter => {
    const writes: Array<Promise<unknown>> = [];
    let state: "receiving" | "committing" | "committed" | "discarded" = "receiving";
    openBodies++;
    /** Whether `incoming` lists this body: from its first chunk written before the commit. */
    let marked = false;
    /** The last chunk, written by `accept`'s transaction (null: nothing was left over). */
    let rest: { readonly seq: number; readonly value: Buffer } | null | undefined;
    /** What `prepend` put before the body (DKIM signatures), written by `accept`'s transaction. */
    let prefix: Buffer | undefined;
    let pending: Uint8Array[] = [];
    let pendingBytes = 0;
    let seq = 0;
    let total = 0;
    let uncommitted = 0;
    let waiting: Promise<unknown> | undefined;
    const takePending = () => {
      const value = pending.length === 1 ? pending[0]! : Buffer.concat(pending, pendingBytes);
      pending = [];
      pendingBytes = 0;
      return value as Buffer;
    };
    /** Writes the gathered pieces as a chunk of their own, ahead of the commit. */
    const writePending = () => {
      if (pendingBytes === 0) return;
      if (!marked) {
        // Issued before the chunk, so it is committed no later than the chunk is.
        writes.push(observed(incoming.put(messageId, true)));
        marked = true;
      }
      const bytes = pendingBytes;
      const written = observed(bodies.put([messageId, seq++], takePending()));
      uncommitted += bytes;
      const settled = written.then(
        () => void (uncommitted -= bytes),
        () => void (uncommitted -= bytes),
      );
      writes.push(written);
      if (uncommitted > MAX_UNCOMMITTED_BYTES) waiting = settled;
    };
    const drop = () => {
      state = "discarded";
      openBodies--;
      pending = [];
      pendingBytes = 0;
      // After every write this body started has settled, so no chunk lands after the removal.
      // If the removal fails too (disk full), the chunks stay listed as incoming and go at the next start.
      const removal = Promise.allSettled(writes)
        .then(() =>
          root.transaction(() => {
            removeChunks(messageId);
            incoming.remove(messageId);
          }),
        )
        .catch(silence)
        .finally(() => discarding.delete(removal));
      discarding.add(removal);
    };
    const writer: BodyWriter = {
      append: (chunk) => {
        if (state !== "receiving") return undefined;
        pending.push(chunk);
        pendingBytes += chunk.length;
        total += chunk.length;
        if (pendingBytes >= CHUNK_BYTES) writePending();
        if (!waiting) return undefined;
        const wait = waiting.then(() => undefined);
        waiting = undefined;
        return wait;
      },
      size: () => total,
      // Held in memory (a few signature fields) and written by `accept`'s transaction.
      prepend: (bytes) => {
        if (state !== "receiving" || bytes.length === 0) return;
        prefix = prefix ? Buffer.concat([Buffer.from(bytes), prefix]) : Buffer.from(bytes);
        total += bytes.length;
      },
      discard: () => {
        if (state === "receiving") drop();
      },
      // While committing, the pieces still gathered belong to `accept`'s transaction.
      flushed: () => {
        if (state === "receiving") writePending();
        return Promise.all(writes).then(() => undefined);
      },
    };
    commits.set(writer, {
      begin: () => {
        if (state !== "receiving") return false;
        state = "committing";
        return true;
      },
      // Takes the pieces once and writes the same chunk however often it runs, should
      // LMDB run the transaction's callback again.
      writeRest: () => {
        rest ??= pendingBytes > 0 ? { seq: seq++, value: takePending() } : null;
        if (rest) bodies.put([messageId, rest.seq], rest.value);
        if (prefix) bodies.put([messageId, PREFIX_SEQ], prefix);
        if (marked) incoming.remove(messageId);
      },
      committed: () => {
        state = "committed";
        openBodies--;
      },
      failed: drop,
    });
    return writer;
  };

  /** Pages of entries matching a selection: one queue's range, or every queue when none is named. */
  async function* pages(selection: Selection, after?: string): AsyncGenerator<QueueEntry[]> {
    const sender = selection.sender?.toLowerCase();
    let cursor: QueueKey | undefined;
    if (after) {
      const from = entries.get(after);
      if (from) cursor = [queueOf(from.route), from.nextAttemptAt, from.id];
    }
    for (;;) {
      const range = selection.queue !== undefined ? queueRange(selection.queue) : {};
      const keys = [...queued.getKeys({ ...range, ...(cursor ? { start: cursor, exclusiveStart: true } : {}), limit: PAGE })];
      if (keys.length === 0) return;
      cursor = keys[keys.length - 1];
      const page = keys
        .map((key) => entries.get(key[2]))
        .filter((entry): entry is QueueEntry => entry !== undefined && (sender === undefined || entry.sender.toLowerCase() === sender));
      if (page.length > 0) yield page;
      await new Promise((resolve) => setImmediate(resolve)); // let delivery run between pages
    }
  }

  return {
    accept: (message, events = []) => {
      const body = commits.get(message.body);
      if (!body?.begin()) return Effect.fail(new StoreError({ operation: "accept", detail: `the body of ${message.id} was discarded or taken already` }));
      const fresh = entriesFor(message);
      const chunksOnDisk = Effect.tryPromise({
        try: () => message.body.flushed(),
        catch: (error) => new StoreError({ operation: "accept.body", detail: String(error) }),
      });
      const record = commitWithEvents("accept", events, () => {
        messages.put(message.id, {
          id: message.id,
          sender: message.sender,
          receivedAt: message.receivedAt,
          size: message.body.size(),
          openEntries: fresh.length,
          ...(message.attributes ? { attributes: message.attributes } : {}),
        });
        body.writeRest();
        fresh.forEach(putEntry);
        outbox.write(events);
        if (message.remember) remember(message.remember);
      });
      return Effect.all([chunksOnDisk, record]).pipe(
        Effect.tapError(() => Effect.sync(body.failed)),
        Effect.tap(() => Effect.sync(body.committed)),
        Effect.as(fresh),
      );
    },

    dueQueues: (now) => ({
      *[Symbol.iterator]() {
        for (const [at, queue] of heads.getKeys({ end: [now, "\uffff"] })) yield { queue, at };
      },
    }),

    dueIn: (queue, now, limit, skip) => {
      const found: QueueEntry[] = [];
      for (const key of queued.getKeys(queueRange(queue, now))) {
        if (found.length >= limit) break;
        if (skip?.(key[2])) continue;
        const entry = entries.get(key[2]);
        if (entry && entry.nextAttemptAt === key[1]) found.push(entry);
      }
      return found;
    },

    openBody,

    hasMessage: (messageId) => messages.doesExist(messageId),

    message: (messageId) => messages.get(messageId),

    entry: (entryId) => entries.get(entryId),

    // Entry ids are `<messageId>.<n>`: "/" sorts right after ".", so the range holds exactly them.
    entriesOf: (messageId) =>
      [...entries.getRange({ start: `${messageId}.`, end: `${messageId}/` }).map(({ value }) => value)].sort(
        (a, b) => Number(a.id.slice(messageId.length + 1)) - Number(b.id.slice(messageId.length + 1)),
      ),

    finished: (messageId) => finishedRecords.get(messageId),

    // Read by key, not through a cursor (cheaper): a committed body is its prefix chunk, if
    // any, then chunks numbered from 0 without a gap.
    body: (messageId) => {
      const chunks: Buffer[] = [];
      const prefix = bodies.get([messageId, PREFIX_SEQ]);
      if (prefix !== undefined) chunks.push(prefix);
      for (let n = 0, chunk = bodies.get([messageId, 0]); chunk !== undefined; chunk = bodies.get([messageId, ++n])) chunks.push(chunk);
      return chunks.length === 0 ? undefined : chunks.length === 1 ? chunks[0] : Buffer.concat(chunks);
    },

    head: (messageId, maxBytes) => {
      const chunks: Buffer[] = [];
      let size = 0;
      for (const { value } of bodies.getRange(chunkRange(messageId))) {
        chunks.push(value);
        size += value.length;
        if (size >= maxBytes || value.indexOf("\r\n\r\n") !== -1) break;
      }
      return chunks.length === 0 ? undefined : Buffer.concat(chunks, size);
    },

    settle: (entry, next, created, outcome = {}) =>
      Effect.flatMap(Clock.currentTimeMillis, (now) =>
        commitWithEvents("settle", outcome.events ?? [], () => {
          const fresh: QueueEntry[] = [];
          const current = entries.get(entry.id);
          if (!current) return fresh; // removed meanwhile (an operator): nothing to record
          const message = messages.get(current.messageId);
          noteFinished(current, next, outcome.attempt, outcome.attempt?.at ?? now, message);
          if (next) {
            removeEntry(current);
            putEntry(keepingHold(next, current));
          } else {
            retireCurrent(current, message);
          }
          for (const message of created) writeGenerated(message, fresh);
          outbox.write(outcome.events ?? []);
          return fresh;
        }),
      ),

    finish: (entry, events = []) =>
      Effect.flatMap(Clock.currentTimeMillis, (now) =>
        commitWithEvents("finish", events, () => {
          const current = entries.get(entry.id);
          if (current) noteFinished(current, undefined, undefined, now);
          if (retire(entry)) outbox.write(events);
        }),
      ),

    pruneFinished: (before, limit) =>
      Effect.flatMap(Clock.currentTimeMillis, (now) =>
        commit("prune-finished", () => finishedRecords.prune(before, now, limit, (messageId) => messages.doesExist(messageId))),
      ),

    finishedCount: finishedRecords.count,

    // LMDB's own count (mdb_stat): getCount() would walk every entry, 150 ms a call at a million.
    depth: () => (entries.getStats() as { entryCount: number }).entryCount,

    queueDepths: () => depths,

    oldestArrival: (now) => {
      for (const { value } of entries.getRange({ limit: SCHEDULED_SKIP })) if (value.createdAt <= now) return arrivalOf(value.id);
      return undefined;
    },

    incomingBodies: () => openBodies,

    bodyBytes: () => {
      const stats = bodies.getStats() as { pageSize: number; treeBranchPageCount: number; treeLeafPageCount: number; overflowPages: number };
      return (stats.treeBranchPageCount + stats.treeLeafPageCount + stats.overflowPages) * stats.pageSize;
    },

    discardsSettled: () => Promise.all(discarding).then(() => undefined),

    probe: () => Effect.flatMap(Clock.currentTimeMillis, (now) => commit("probe", () => health.put("probe", now))).pipe(Effect.asVoid),

    isSuspended: (queue) => suspendedSet.has(queue),

    suspended: () => [...suspendedSet],

    suspend: (queue) =>
      Effect.flatMap(Clock.currentTimeMillis, (now) =>
        commit("suspend", () => {
          suspendedQueues.put(queue, { at: now });
          suspendedSet.add(queue);
          refreshHead(queue);
        }),
      ).pipe(Effect.tapError(() => Effect.sync(() => suspendedSet.delete(queue)))),

    resume: (queue) =>
      commit("resume", () => {
        suspendedQueues.remove(queue);
        suspendedSet.delete(queue);
        refreshHead(queue);
      }),

    shape: async (now, limit) => {
      const byQueue = new Map<string, number[]>();
      const total = new Array<number>(SHAPE_BUCKETS_MINUTES.length + 1).fill(0);
      let cursor: QueueKey | undefined;
      for (;;) {
        const keys = [...queued.getKeys({ ...(cursor ? { start: cursor, exclusiveStart: true } : {}), limit: PAGE * 10 })];
        if (keys.length === 0) break;
        cursor = keys[keys.length - 1];
        for (const [queue, , id] of keys) {
          const bucket = bucketOf(now - arrivalOf(id));
          const counts = byQueue.get(queue) ?? new Array<number>(SHAPE_BUCKETS_MINUTES.length + 1).fill(0);
          counts[bucket]!++;
          total[bucket]!++;
          byQueue.set(queue, counts);
        }
        await new Promise((resolve) => setImmediate(resolve));
      }
      const sum = (counts: number[]) => counts.reduce((a, b) => a + b, 0);
      const queues = [...byQueue.entries()]
        .map(([queue, buckets]) => ({ queue, entries: sum(buckets), buckets, suspended: suspendedSet.has(queue) }))
        .sort((a, b) => b.entries - a.entries || a.queue.localeCompare(b.queue));
      for (const queue of suspendedSet) {
        if (!byQueue.has(queue)) queues.push({ queue, entries: 0, buckets: total.map(() => 0), suspended: true });
      }
      return { bucketsMinutes: SHAPE_BUCKETS_MINUTES, total: { entries: sum(total), buckets: total }, queues: queues.slice(0, limit), queueCount: queues.length };
    },

    list: async (selection, limit, after) => {
      const found: QueueEntry[] = [];
      for await (const page of pages(selection, after)) {
        found.push(...page.slice(0, limit - found.length));
        if (found.length >= limit) break;
      }
      return found;
    },

    walk: (selection, each) =>
      Effect.gen(function* () {
        const walker = pages(selection);
        for (;;) {
          const page = yield* Effect.promise(() => walker.next());
          if (page.done) return;
          yield* each(page.value);
        }
      }),

    redate: (list, now) =>
      commit("redate", () => {
        const moved = { entries: 0, recipients: 0 };
        for (const entry of list) {
          const current = entries.get(entry.id);
          if (!current || current.heldAt !== undefined || current.nextAttemptAt <= now) continue;
          removeEntry(current);
          putEntry({ ...current, nextAttemptAt: now, reason: "retry-now" });
          moved.entries++;
          moved.recipients += current.recipients.length;
        }
        return moved;
      }),

    hold: (list, now) =>
      commit("hold", () => {
        const held: string[] = [];
        for (const entry of list) {
          const current = entries.get(entry.id);
          if (!current || current.heldAt !== undefined) continue;
          removeEntry(current);
          putEntry({ ...current, heldAt: now, nextAttemptAt: HELD_DUE, reason: "held" });
          held.push(current.id);
        }
        return held;
      }),

    release: (list, now) =>
      commit("release", () => {
        const released: string[] = [];
        for (const entry of list) {
          const current = entries.get(entry.id);
          if (!current || current.heldAt === undefined) continue;
          const { heldAt, ...rest } = current;
          removeEntry(current);
          putEntry({ ...rest, heldMs: (current.heldMs ?? 0) + Math.max(0, now - heldAt), nextAttemptAt: now, reason: "released" });
          released.push(current.id);
        }
        return released;
      }),

    adopt: (message, list, record) =>
      Effect.flatMap(Clock.currentTimeMillis, (now) =>
        commit("adopt", (): "committed" | "duplicate" => {
          const known = idempotency.get([record.scope, record.key]);
          if ((known && known.expiresAt > now) || messages.doesExist(message.id)) return "duplicate";
          writeWhole(message, list);
          remember(record);
          return "committed";
        }),
      ),

    handOver: (list, to) =>
      Effect.flatMap(Clock.currentTimeMillis, (now) =>
        commit("hand-over", () => {
          let removed = 0;
          for (const entry of list) {
            const current = entries.get(entry.id);
            if (!current) continue; // an operator removed it meanwhile
            finishedRecords.note(
              messages.get(current.messageId),
              current,
              { attempts: current.attempts, history: current.history, recipients: current.recipients.map((rcpt) => ({ rcpt, state: "handed-off", at: now, to })) },
              now,
            );
            retire(current);
            removed++;
          }
          return removed;
        }),
      ),

    recall: (scope, key, now) => {
      const record = idempotency.get([scope, key]);
      return record && record.expiresAt > now ? record.value : undefined;
    },

    forgetExpired: (now, limit) =>
      commit("forget-expired", () => {
        let removed = 0;
        for (const [expiresAt, scope, key] of idempotencyExpiry.getKeys({ end: [now, "\uffff", "\uffff"], limit })) {
          idempotencyExpiry.remove([expiresAt, scope, key]);
          if (idempotency.get([scope, key])?.expiresAt === expiresAt) idempotency.remove([scope, key]);
          removed++;
        }
        return removed;
      }),
  };
};

/** How `accept` takes a body: `begin` is false when it was discarded or taken already. */
interface BodyCommit {
  readonly begin: () => boolean;
  /** Inside `accept`'s transaction: writes the pieces not yet on disk and drops the incoming mark. */
  readonly writeRest: () => void;
  readonly committed: () => void;
  readonly failed: () => void;
}

const bucketOf = (ageMs: number): number => {
  const minutes = ageMs / 60_000;
  const index = SHAPE_BUCKETS_MINUTES.findIndex((limit) => minutes < limit);
  return index === -1 ? SHAPE_BUCKETS_MINUTES.length : index;
};

/**
 * Marks a write whose failure is reported elsewhere (through `flushed` or the commit it
 * precedes) as handled, so a failed write never becomes an unhandled rejection.
 */
const observed = <T>(promise: Promise<T>): Promise<T> => {
  promise.catch(silence);
  return promise;
};

const silence = (error: unknown) => {
  // lmdb-js attaches the underlying failure as a second, separately rejected promise.
  const inner = (error as { commitError?: Promise<unknown> } | null)?.commitError;
  if (inner && typeof inner.catch === "function") inner.catch(() => undefined);
};

const describeStoreError = (error: unknown): string => {
  silence(error);
  return error instanceof Error ? `${error.message}${"code" in error ? ` (code ${String(error.code)})` : ""}` : String(error);
};
