// The node's durable spool and queue in LMDB.
//
// Invariant 1: `accept` resolves only after message, body and queue entries are
// committed and flushed (lmdb-js's default: an awaited write resolves once synced;
// concurrent writes share one commit, which is the group commit).
// Invariant 2: an entry leaves the queue only through `finish`, called after the
// next hop accepted it (or it failed permanently).
// Invariant 5: due work is found through the `due` index, keyed [time, entryId],
// never by scanning all entries.
import { Effect } from "effect";
import type { Database, RootDatabase } from "lmdb";
import { StoreError } from "../../protocol/errors.ts";
import type { MessageRecord, QueueEntry, Route, WaitReason } from "./entry.ts";

type DueKey = [number, string];

export interface NewMessage {
  readonly id: string;
  readonly sender: string;
  readonly receivedAt: number;
  readonly body: Uint8Array;
  readonly routes: ReadonlyArray<{ readonly route: Route; readonly recipients: ReadonlyArray<string> }>;
}

export interface Spool {
  readonly accept: (message: NewMessage) => Effect.Effect<ReadonlyArray<QueueEntry>, StoreError>;
  /** Entries due at or before `now`, oldest first, at most `limit`, passing over ids `skip` names (read keys only). */
  readonly due: (now: number, limit: number, skip?: (entryId: string) => boolean) => ReadonlyArray<QueueEntry>;
  readonly body: (messageId: string) => Uint8Array | undefined;
  /** The entry is done (delivered or failed for good): removes it, and the message once no entry needs it. */
  readonly finish: (entry: QueueEntry) => Effect.Effect<void, StoreError>;
  /** The entry waits again for the given recipients until `nextAttemptAt`. */
  readonly reschedule: (
    entry: QueueEntry,
    change: { recipients: ReadonlyArray<string>; nextAttemptAt: number; reason: WaitReason; lastResult: string; countsAsAttempt: boolean },
  ) => Effect.Effect<QueueEntry, StoreError>;
  readonly depth: () => number;
}

export const openSpool = (root: RootDatabase): Spool => {
  const messages: Database<MessageRecord, string> = root.openDB({ name: "spool.messages" });
  const bodies: Database<Buffer, string> = root.openDB({ name: "spool.bodies", encoding: "binary" });
  const entries: Database<QueueEntry, string> = root.openDB({ name: "spool.entries" });
  const dueIndex: Database<true, DueKey> = root.openDB({ name: "spool.due" });

  const commit = <T>(operation: string, action: () => T) =>
    Effect.tryPromise({
      try: () => root.transaction(action),
      catch: (error) => new StoreError({ operation, detail: String(error) }),
    });

  const putEntry = (entry: QueueEntry) => {
    entries.put(entry.id, entry);
    dueIndex.put([entry.nextAttemptAt, entry.id], true);
  };

  const removeEntry = (entry: QueueEntry) => {
    entries.remove(entry.id);
    dueIndex.remove([entry.nextAttemptAt, entry.id]);
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
      return commit("accept", () => {
        messages.put(message.id, {
          id: message.id,
          sender: message.sender,
          receivedAt: message.receivedAt,
          size: message.body.length,
          openEntries: queued.length,
        });
        bodies.put(message.id, Buffer.from(message.body.buffer, message.body.byteOffset, message.body.byteLength));
        queued.forEach(putEntry);
      }).pipe(Effect.as(queued));
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

    body: (messageId) => bodies.get(messageId),

    finish: (entry) =>
      commit("finish", () => {
        const current = entries.get(entry.id);
        if (!current) return; // already finished: a duplicate completion is harmless
        removeEntry(current);
        const message = messages.get(entry.messageId);
        if (!message || message.openEntries <= 1) {
          messages.remove(entry.messageId);
          bodies.remove(entry.messageId);
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
  };
};
