// What the spool remembers of recipients it is done with. An entry leaves the spool when
// its recipients are delivered, bounced, expired or removed, and the message with its
// last entry; without this record `tern status` could not say "delivered at T by mx X"
// once that happened. The spool writes it in the same transaction as the outcome
// (`settle`, `finish`), so a status never disagrees with what was committed, and prunes
// it after the configured time.
//
// One record per message, with what status shows of it (sender, size, labels) and each
// finished entry's last attempts; `finished.by-time` orders records by their last change,
// so pruning reads only what is old (invariant 5), never every record.
import type { Database, RootDatabase } from "lmdb";
import type { AttemptRecord } from "../../protocol/delivery.ts";
import type { FinishedState } from "../../protocol/status.ts";
import { HISTORY_LIMIT, type MessageRecord, type QueueEntry, type Route } from "./entry.ts";

export interface FinishedRecipient {
  readonly rcpt: string;
  readonly state: FinishedState;
  readonly at: number;
  /** The peer that took it over (state `handed-off`). */
  readonly to?: string;
}

export interface FinishedEntry {
  readonly id: string;
  readonly route: Route;
  readonly attempts: number;
  /** The entry's most recent attempts, the final one included (at most HISTORY_LIMIT). */
  readonly history?: ReadonlyArray<AttemptRecord>;
  readonly recipients: ReadonlyArray<FinishedRecipient>;
}

export interface FinishedMessage {
  readonly id: string;
  readonly sender: string;
  readonly receivedAt: number;
  readonly size: number;
  /** The message's labels (tags, metadata, tenant); not its DSN parameters or auth user. */
  readonly labels?: Readonly<Record<string, unknown>>;
  readonly entries: ReadonlyArray<FinishedEntry>;
  /** Last change: the record is pruned this long after it (by-time key). */
  readonly updatedAt: number;
}

/** Attributes status shows, carried into the record; the rest stays with the message. */
const LABELS = ["tags", "metadata", "tenant"] as const;

const labelsOf = (attributes: MessageRecord["attributes"]): Record<string, unknown> | undefined => {
  const kept = Object.fromEntries(LABELS.filter((key) => attributes?.[key] !== undefined).map((key) => [key, attributes![key]]));
  return Object.keys(kept).length > 0 ? kept : undefined;
};

/** The message fields a record needs: the spool's record, or what the entry says when it is gone. */
type MessageSummary = Pick<MessageRecord, "id" | "sender" | "receivedAt" | "size" | "attributes">;

export interface FinishedRecords {
  readonly get: (messageId: string) => FinishedMessage | undefined;
  /**
   * Notes recipients of `entry` that finished, with the entry's history as it now stands.
   * Inside the spool's transaction.
   */
  readonly note: (
    message: MessageSummary | undefined,
    entry: QueueEntry,
    update: { readonly attempts: number; readonly history: ReadonlyArray<AttemptRecord> | undefined; readonly recipients: ReadonlyArray<FinishedRecipient> },
    now: number,
  ) => void;
  /**
   * Removes records last changed before `before`, at most `limit` of them; a record whose
   * message is still queued (some recipients finished, some wait) is kept and dated `now`.
   * Inside a transaction; returns how many were removed.
   */
  readonly prune: (before: number, now: number, limit: number, stillQueued: (messageId: string) => boolean) => number;
  readonly count: () => number;
}

export const openFinished = (root: RootDatabase): FinishedRecords => {
  const records: Database<FinishedMessage, string> = root.openDB({ name: "finished.messages" });
  const byTime: Database<true, [number, string]> = root.openDB({ name: "finished.by-time" });

  const put = (record: FinishedMessage, previous: FinishedMessage | undefined) => {
    if (previous) byTime.remove([previous.updatedAt, previous.id]);
    records.put(record.id, record);
    byTime.put([record.updatedAt, record.id], true);
  };

  return {
    get: (messageId) => records.get(messageId),

    note: (message, entry, update, now) => {
      const previous = records.get(entry.messageId);
      const before = previous?.entries.find((e) => e.id === entry.id);
      const noted: FinishedEntry = {
        id: entry.id,
        route: entry.route,
        attempts: update.attempts,
        ...(update.history && update.history.length > 0 ? { history: update.history.slice(-HISTORY_LIMIT) } : {}),
        recipients: [...(before?.recipients ?? []), ...update.recipients],
      };
      const labels = labelsOf(message?.attributes);
      put(
        {
          id: entry.messageId,
          sender: previous?.sender ?? message?.sender ?? entry.sender,
          receivedAt: previous?.receivedAt ?? message?.receivedAt ?? entry.createdAt,
          size: previous?.size ?? message?.size ?? 0,
          ...(previous?.labels ? { labels: previous.labels } : labels ? { labels } : {}),
          entries: [...(previous?.entries.filter((e) => e.id !== entry.id) ?? []), noted],
          updatedAt: now,
        },
        previous,
      );
    },

    prune: (before, now, limit, stillQueued) => {
      let removed = 0;
      for (const key of [...byTime.getKeys({ end: [before, "\uffff"], limit })]) {
        const record = records.get(key[1]);
        byTime.remove(key);
        if (!record || record.updatedAt !== key[0]) continue; // a stale key: the record moved on
        if (stillQueued(record.id)) {
          put({ ...record, updatedAt: now }, undefined);
          continue;
        }
        records.remove(record.id);
        removed++;
      }
      return removed;
    },

    count: () => (records.getStats() as { entryCount: number }).entryCount,
  };
};
