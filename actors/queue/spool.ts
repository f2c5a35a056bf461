// The node's durable spool and queue in LMDB.
//
// Invariant 1: `accept` resolves only after message, body and queue entries are
// committed and flushed (lmdb-js's default: an awaited write resolves once synced;
// concurrent writes share one commit, which is the group commit).
// Invariant 2: an entry leaves the queue only through `finish`, called after the
// next hop accepted it (or it failed permanently).
// Invariant 5: due work is found through the `due` index, keyed [time, entryId],
// never by scanning all entries; bodies are written in chunks as they arrive, so
// a large message never sits whole in memory on its way in.
import { Effect } from "effect";
import type { Database, RootDatabase } from "lmdb";
import { StoreError } from "../../protocol/errors.ts";
import type { MessageRecord, QueueEntry, Route, WaitReason } from "./entry.ts";

type DueKey = [number, string];
type ChunkKey = [string, number];

/** Pieces are gathered up to this size before they are written to LMDB as one chunk. */
const CHUNK_BYTES = 64 * 1024;
/** Body bytes handed to LMDB but not yet committed, beyond which the sender is paused. */
const MAX_UNCOMMITTED_BYTES = 2 * 1024 * 1024;

export interface NewMessage {
  readonly id: string;
  readonly sender: string;
  readonly receivedAt: number;
  /** The body written so far through `openBody(id)`. */
  readonly body: BodyWriter;
  readonly routes: ReadonlyArray<{ readonly route: Route; readonly recipients: ReadonlyArray<string> }>;
  /** Extra data kept with the message (DSN parameters, auth user…). */
  readonly attributes?: Readonly<Record<string, unknown>> | undefined;
}

/** Streams one message body into the spool; nothing is visible until `accept` commits. */
export interface BodyWriter {
  /** Returns a promise when too much is waiting for the disk: wait for it before appending more. */
  readonly append: (chunk: Uint8Array) => Promise<void> | undefined;
  readonly size: () => number;
  /** Drops what was written (the transaction was refused or aborted). */
  readonly discard: () => void;
  /** Resolves when every chunk written so far is on disk; fails if any write failed. */
  readonly flushed: () => Promise<void>;
}

export interface Spool {
  readonly openBody: (messageId: string) => BodyWriter;
  readonly accept: (message: NewMessage) => Effect.Effect<ReadonlyArray<QueueEntry>, StoreError>;
  /** Entries due at or before `now`, oldest first, at most `limit`, passing over ids `skip` names (read keys only). */
  readonly due: (now: number, limit: number, skip?: (entryId: string) => boolean) => ReadonlyArray<QueueEntry>;
  readonly body: (messageId: string) => Uint8Array | undefined;
  readonly hasMessage: (messageId: string) => boolean;
  /** The entry is done (delivered or failed for good): removes it, and the message once no entry needs it. */
  readonly finish: (entry: QueueEntry) => Effect.Effect<void, StoreError>;
  /** The entry waits again for the given recipients until `nextAttemptAt`. */
  readonly reschedule: (
    entry: QueueEntry,
    change: { recipients: ReadonlyArray<string>; nextAttemptAt: number; reason: WaitReason; lastResult: string; countsAsAttempt: boolean },
  ) => Effect.Effect<QueueEntry, StoreError>;
  readonly depth: () => number;
  /** A small durable write, to tell whether the store can commit again after a failure. */
  readonly probe: () => Effect.Effect<void, StoreError>;
}

export const openSpool = (root: RootDatabase): Spool => {
  const messages: Database<MessageRecord, string> = root.openDB({ name: "spool.messages" });
  const bodies: Database<Buffer, ChunkKey> = root.openDB({ name: "spool.bodies", encoding: "binary" });
  // Bodies being received: chunks of a message still listed here at start belong to a
  // transaction that never got its 250, and are removed.
  const incoming: Database<true, string> = root.openDB({ name: "spool.incoming" });
  const health: Database<number, string> = root.openDB({ name: "spool.health" });
  const entries: Database<QueueEntry, string> = root.openDB({ name: "spool.entries" });
  const dueIndex: Database<true, DueKey> = root.openDB({ name: "spool.due" });

  const commit = <T>(operation: string, action: () => T) =>
    Effect.tryPromise({
      try: () => root.transaction(action),
      catch: (error) => new StoreError({ operation, detail: describeStoreError(error) }),
    });

  const putEntry = (entry: QueueEntry) => {
    entries.put(entry.id, entry);
    dueIndex.put([entry.nextAttemptAt, entry.id], true);
  };

  const removeEntry = (entry: QueueEntry) => {
    entries.remove(entry.id);
    dueIndex.remove([entry.nextAttemptAt, entry.id]);
  };

  const chunkRange = (messageId: string) => ({ start: [messageId, 0] as ChunkKey, end: [messageId, Number.MAX_SAFE_INTEGER] as ChunkKey });

  const removeChunks = (messageId: string) => {
    for (const key of bodies.getKeys(chunkRange(messageId))) bodies.remove(key);
  };

  for (const messageId of incoming.getKeys()) {
    if (!messages.doesExist(messageId)) removeChunks(messageId);
    incoming.remove(messageId);
  }

  const openBody = (messageId: string): BodyWriter => {
    const writes: Array<Promise<unknown>> = [observed(incoming.put(messageId, true))];
    let pending: Uint8Array[] = [];
    let pendingBytes = 0;
    let seq = 0;
    let total = 0;
    let uncommitted = 0;
    let waiting: Promise<unknown> | undefined;
    const writePending = () => {
      if (pendingBytes === 0) return;
      const bytes = pendingBytes;
      const value = pending.length === 1 ? pending[0]! : Buffer.concat(pending, pendingBytes);
      const written = observed(bodies.put([messageId, seq++], value as Buffer));
      uncommitted += bytes;
      const settled = written.then(
        () => void (uncommitted -= bytes),
        () => void (uncommitted -= bytes),
      );
      writes.push(written);
      pending = [];
      pendingBytes = 0;
      if (uncommitted > MAX_UNCOMMITTED_BYTES) waiting = settled;
    };
    return {
      append: (chunk) => {
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
      discard: () => {
        pending = [];
        // If this fails too (disk full), the chunks stay listed as incoming and go at the next start.
        void observed(
          root.transaction(() => {
            removeChunks(messageId);
            incoming.remove(messageId);
          }),
        );
      },
      flushed: () => {
        writePending();
        return Promise.all(writes).then(() => undefined);
      },
    };
  };

  return {
    accept: (message) => {
      const queued = message.routes.map(
        ({ route, recipients }, n): QueueEntry => ({
          id: `${message.id}.${n}`,
          messageId: message.id,
          route,
          sender: message.sender,
          recipients,
          createdAt: message.receivedAt,
          attempts: 0,
          nextAttemptAt: message.receivedAt,
          reason: "received",
        }),
      );
      const chunksOnDisk = Effect.tryPromise({
        try: () => message.body.flushed(),
        catch: (error) => new StoreError({ operation: "accept.body", detail: String(error) }),
      });
      const record = commit("accept", () => {
        messages.put(message.id, {
          id: message.id,
          sender: message.sender,
          receivedAt: message.receivedAt,
          size: message.body.size(),
          openEntries: queued.length,
          ...(message.attributes ? { attributes: message.attributes } : {}),
        });
        incoming.remove(message.id);
        queued.forEach(putEntry);
      });
      return Effect.all([chunksOnDisk, record]).pipe(
        Effect.tapError(() => Effect.sync(() => message.body.discard())),
        Effect.as(queued),
      );
    },

    due: (now, limit, skip) => {
      const found: QueueEntry[] = [];
      for (const key of dueIndex.getKeys({ end: [now, "\uffff"] })) {
        if (found.length >= limit) break;
        if (skip?.(key[1])) continue;
        const entry = entries.get(key[1]);
        if (entry && entry.nextAttemptAt === key[0]) found.push(entry);
      }
      return found;
    },

    openBody,

    hasMessage: (messageId) => messages.doesExist(messageId),

    body: (messageId) => {
      const chunks = [...bodies.getRange(chunkRange(messageId)).map(({ value }) => value)];
      return chunks.length === 0 ? undefined : chunks.length === 1 ? chunks[0] : Buffer.concat(chunks);
    },

    finish: (entry) =>
      commit("finish", () => {
        const current = entries.get(entry.id);
        if (!current) return; // already finished: a duplicate completion is harmless
        removeEntry(current);
        const message = messages.get(entry.messageId);
        if (!message || message.openEntries <= 1) {
          messages.remove(entry.messageId);
          removeChunks(entry.messageId);
        } else {
          messages.put(entry.messageId, { ...message, openEntries: message.openEntries - 1 });
        }
      }),

    reschedule: (entry, change) => {
      const next: QueueEntry = {
        ...entry,
        recipients: change.recipients,
        attempts: entry.attempts + (change.countsAsAttempt ? 1 : 0),
        nextAttemptAt: change.nextAttemptAt,
        reason: change.reason,
        lastResult: change.lastResult,
      };
      return commit("reschedule", () => {
        const current = entries.get(entry.id);
        if (current) removeEntry(current);
        putEntry(next);
      }).pipe(Effect.as(next));
    },

    depth: () => entries.getCount(),

    probe: () => commit("probe", () => health.put("probe", Date.now())).pipe(Effect.asVoid),
  };
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
