// Local users' mailboxes in this node's LMDB (only on the mailbox's owner node).
//
// `deliver` is idempotent by queue-entry id: a redelivery after a crash (the sender's
// queue entry survived, our ack was lost) finds the first copy and returns its uid.
// It resolves only after the commit is flushed, so an ack means the mail is safe.
import { Effect } from "effect";
import type { Database, RootDatabase } from "lmdb";
import { StoreError } from "../../protocol/errors.ts";

export interface StoredMessageInfo {
  readonly uid: number;
  readonly size: number;
  readonly internalDate: number;
  readonly entryId: string;
}

interface MailboxMeta {
  readonly uidValidity: number;
  readonly uidNext: number;
}

type MessageKey = [string, number];

export interface MailboxStore {
  readonly deliver: (user: string, entryId: string, body: Uint8Array) => Effect.Effect<number, StoreError>;
  readonly list: (user: string) => ReadonlyArray<StoredMessageInfo>;
  readonly body: (user: string, uid: number) => Uint8Array | undefined;
  readonly remove: (user: string, uids: ReadonlyArray<number>) => Effect.Effect<void, StoreError>;
}

export const openMailboxStore = (root: RootDatabase): MailboxStore => {
  const meta: Database<MailboxMeta, string> = root.openDB({ name: "mailbox.meta" });
  const infos: Database<StoredMessageInfo, MessageKey> = root.openDB({ name: "mailbox.messages" });
  const bodies: Database<Buffer, MessageKey> = root.openDB({ name: "mailbox.bodies", encoding: "binary" });
  const delivered: Database<number, string> = root.openDB({ name: "mailbox.delivered" });

  const commit = <T>(operation: string, action: () => T) =>
    Effect.tryPromise({
      try: () => root.transaction(action),
      catch: (error) => new StoreError({ operation, detail: String(error) }),
    });

  return {
    deliver: (user, entryId, body) =>
      commit("mailbox.deliver", () => {
        const deliveryKey = `${user}\n${entryId}`;
        const earlier = delivered.get(deliveryKey);
        if (earlier !== undefined) return earlier;
        const current = meta.get(user) ?? { uidValidity: Math.floor(Date.now() / 1000), uidNext: 1 };
        const uid = current.uidNext;
        meta.put(user, { ...current, uidNext: uid + 1 });
        infos.put([user, uid], { uid, size: body.length, internalDate: Date.now(), entryId });
        bodies.put([user, uid], Buffer.from(body.buffer, body.byteOffset, body.byteLength));
        delivered.put(deliveryKey, uid);
        return uid;
      }),

    list: (user) => [...infos.getRange({ start: [user, 0], end: [user, Number.MAX_SAFE_INTEGER] }).map(({ value }) => value)],

    body: (user, uid) => bodies.get([user, uid]),

    remove: (user, uids) =>
      commit("mailbox.remove", () => {
        for (const uid of uids) {
          infos.remove([user, uid]);
          bodies.remove([user, uid]);
        }
      }),
  };
};
