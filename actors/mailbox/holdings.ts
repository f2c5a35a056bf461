// This node's own durable record of the mailboxes it holds, in its LMDB next to the
// mailbox store:
//   mbox.held   user → { since }
//
// The NATS KV map of owners (cluster/ownership.ts) is shared and can be lost or rewritten;
// this record is written where the mail is, so it says where the mail is:
// - the store marks a user held in the same transaction that creates the user's first
//   folder (so before, or with, the first message: never a message without the mark);
// - a node that claims a mailbox in KV records it before storing anything;
// - records kept before this one existed are derived from the store's `mbox.users` when
//   the record is opened.
// A mark is removed only when the mailbox moves to another node (actors/mailbox/move.ts),
// in the transaction that removes the mail, after the new holder committed its copy (the
// UIDVALIDITY history moves with it); a mailbox emptied by POP3 stays marked.
import { Effect } from "effect";
import type { Database, RootDatabase } from "lmdb";
import { StoreError } from "../../protocol/errors.ts";

export const HELD_DB = "mbox.held";
/** The store's per-user usage records (actors/mailbox/store.ts): every user with a folder has one. */
const USERS_DB = "mbox.users";

export interface Held {
  /** When this node first held the mailbox (ms since the epoch). */
  readonly since: number;
}

export type HeldDatabase = Database<Held, string>;

export const openHeldDatabase = (root: RootDatabase): HeldDatabase => root.openDB({ name: HELD_DB });

/** Marks `user` held; call inside a write transaction. */
export const markHeld = (held: HeldDatabase, user: string, now: number): void => {
  if (held.get(user) === undefined) held.put(user, { since: now });
};

export interface Holdings {
  readonly holds: (user: string) => boolean;
  /** Records that this node holds `user`; resolves once flushed to disk. */
  readonly record: (user: string, now: number) => Effect.Effect<void, StoreError>;
  /** Every mailbox this node holds, in key order. */
  readonly users: () => ReadonlyArray<string>;
}

export const openHoldings = (root: RootDatabase, now: number): Effect.Effect<Holdings, StoreError> =>
  Effect.gen(function* () {
    const held = openHeldDatabase(root);
    const usages: Database<unknown, string> = root.openDB({ name: USERS_DB });
    const write = (operation: string, action: () => void) =>
      Effect.tryPromise({ try: () => root.transaction(action), catch: (error) => new StoreError({ operation, detail: String(error) }) });

    yield* write("holdings.derive", () => {
      for (const user of usages.getKeys()) markHeld(held, user, now);
    });

    return {
      holds: (user) => held.get(user) !== undefined,
      record: (user, at) => (held.get(user) !== undefined ? Effect.void : Effect.asVoid(write("holdings.record", () => markHeld(held, user, at)))),
      users: () => [...held.getKeys()],
    };
  });
