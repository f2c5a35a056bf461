// The durable records of mailbox moves under way, in the node's LMDB beside the mailboxes
// (actors/mailbox/move.ts says what each step writes and why):
//   mbox.moves.in    user → { from, state, since }   on the target: copying, then committed
//   mbox.moves.out   user → { to, since }            on the source: frozen for the target
// A record is written in the same transaction as the mail it is about (the target's
// commit of the copy, the source's removal of its own) or before anything it guards.
import { Effect } from "effect";
import type { Database, RootDatabase } from "lmdb";
import { StoreError } from "../../protocol/errors.ts";

export interface MoveIn {
  readonly from: string;
  readonly state: "copying" | "committed";
  readonly since: number;
}

export interface MoveOut {
  readonly to: string;
  readonly since: number;
}

export interface MoveRecords {
  readonly incoming: (user: string) => MoveIn | undefined;
  readonly outgoing: (user: string) => MoveOut | undefined;
  readonly allIncoming: () => ReadonlyArray<readonly [string, MoveIn]>;
  readonly allOutgoing: () => ReadonlyArray<readonly [string, MoveOut]>;
  /** Inside a transaction (the store's `replace` / `remove`). */
  readonly putIncomingNow: (user: string, record: MoveIn) => void;
  readonly removeIncomingNow: (user: string) => void;
  readonly removeOutgoingNow: (user: string) => void;
  /** Each in a transaction of its own, resolved once flushed. */
  readonly putIncoming: (user: string, record: MoveIn) => Effect.Effect<void, StoreError>;
  readonly removeIncoming: (user: string) => Effect.Effect<void, StoreError>;
  readonly putOutgoing: (user: string, record: MoveOut) => Effect.Effect<void, StoreError>;
  readonly removeOutgoing: (user: string) => Effect.Effect<void, StoreError>;
}

export const openMoveRecords = (root: RootDatabase): MoveRecords => {
  const incoming: Database<MoveIn, string> = root.openDB({ name: "mbox.moves.in" });
  const outgoing: Database<MoveOut, string> = root.openDB({ name: "mbox.moves.out" });
  const write = (operation: string, action: () => void) =>
    Effect.tryPromise({ try: () => root.transaction(action), catch: (error) => new StoreError({ operation, detail: String(error) }) }).pipe(Effect.asVoid);
  return {
    incoming: (user) => incoming.get(user),
    outgoing: (user) => outgoing.get(user),
    allIncoming: () => [...incoming.getRange().map(({ key, value }) => [key, value] as const)],
    allOutgoing: () => [...outgoing.getRange().map(({ key, value }) => [key, value] as const)],
    putIncomingNow: (user, record) => void incoming.put(user, record),
    removeIncomingNow: (user) => void incoming.remove(user),
    removeOutgoingNow: (user) => void outgoing.remove(user),
    putIncoming: (user, record) => write("move.in.put", () => incoming.put(user, record)),
    removeIncoming: (user) => write("move.in.remove", () => incoming.remove(user)),
    putOutgoing: (user, record) => write("move.out.put", () => outgoing.put(user, record)),
    removeOutgoing: (user) => write("move.out.remove", () => outgoing.remove(user)),
  };
};
