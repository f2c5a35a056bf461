// The event outbox: events waiting to be published to JetStream, in the node's LMDB.
//
// An event is written by the same transaction that records the outcome it reports (the
// spool's accept, settle and finish call `write` inside theirs), so an outcome is never
// committed without its event, nor an event without its outcome. The publisher
// (actors/events/publisher.ts) reads the outbox in key order and removes each event once
// JetStream has acknowledged it.
//
// Keys are a sequence given inside the transaction, so key order is commit order; it
// continues after the last key left by an earlier run. Ids name the node and this run
// (`<node>.<boot>.<sequence>`), so an id is never reused, even after the outbox emptied
// and the sequence started again, and JetStream's deduplication never drops a new event.
import { randomBytes } from "node:crypto";
import type { Database, RootDatabase } from "lmdb";
import type { EventDraft, TernEvent } from "../../protocol/events.ts";

export interface OutboxItem {
  readonly key: number;
  readonly event: TernEvent;
}

export interface Outbox {
  /** Inside a write transaction: gives each draft its id and stores it. */
  readonly write: (drafts: ReadonlyArray<EventDraft>) => void;
  /** Tells the publisher that a transaction with events has committed. */
  readonly written: () => void;
  /**
   * Events that report no stored outcome (a recipient refused at submission): written in a
   * transaction of their own, then the publisher is told.
   */
  readonly record: (drafts: ReadonlyArray<EventDraft>) => Promise<void>;
  /** Registers the publisher's wake-up; returns how to unregister it. */
  readonly onWritten: (listener: () => void) => () => void;
  /** The oldest events, at most `limit`, in the order they were committed. */
  readonly oldest: (limit: number) => ReadonlyArray<OutboxItem>;
  /** Removes published events (one durable transaction). */
  readonly remove: (keys: ReadonlyArray<number>) => Promise<void>;
  readonly size: () => number;
  /** When the oldest waiting event was recorded (ms), or undefined when the outbox is empty. */
  readonly oldestTime: () => number | undefined;
}

export const openOutbox = (root: RootDatabase, nodeId: string): Outbox => {
  const events: Database<TernEvent, number> = root.openDB({ name: "events.outbox" });
  const boot = randomBytes(4).toString("hex");
  let last = [...events.getKeys({ reverse: true, limit: 1 })][0] ?? 0;
  let issued = 0;
  const listeners = new Set<() => void>();

  const write = (drafts: ReadonlyArray<EventDraft>) => {
    for (const draft of drafts) {
      const key = ++last;
      events.put(key, { ...draft, id: `${nodeId}.${boot}.${(++issued).toString(36)}` } as TernEvent);
    }
  };
  const written = () => listeners.forEach((listener) => listener());

  return {
    write,
    written,
    record: (drafts) => root.transaction(() => write(drafts)).then(written),
    onWritten: (listener) => {
      listeners.add(listener);
      return () => void listeners.delete(listener);
    },
    oldest: (limit) => [...events.getRange({ limit }).map(({ key, value }) => ({ key, event: value }))],
    remove: (keys) =>
      root.transaction(() => {
        for (const key of keys) events.remove(key);
      }),
    size: () => (events.getStats() as { entryCount: number }).entryCount,
    oldestTime: () => [...events.getRange({ limit: 1 })][0]?.value.time,
  };
};
