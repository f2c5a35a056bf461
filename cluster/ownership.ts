// Which node owns each mailbox, recorded in NATS KV. Placement is sticky: the data
// lives in the owner's LMDB, so a claim never overwrites another node's claim.
import { Kvm, type KV } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";

export interface MailboxOwners {
  /** The owner's node id, or undefined when nobody has claimed the mailbox yet. */
  readonly ownerOf: (user: string) => Promise<string | undefined>;
  /** Claims the mailbox for `nodeId` unless someone owns it already; returns the owner. */
  readonly claim: (user: string, nodeId: string) => Promise<string>;
}

/** KV keys allow only [-/_=.a-zA-Z0-9]; addresses have '@' and more, so keys are base64url. */
const keyOf = (user: string) => Buffer.from(user.toLowerCase(), "utf8").toString("base64url");

const CACHE_MS = 2_000;

export const openMailboxOwners = async (nc: NatsConnection, bucket: string): Promise<MailboxOwners> => {
  const kv: KV = await new Kvm(nc).create(bucket, { history: 1 });
  const cache = new Map<string, { owner: string; at: number }>();

  const ownerOf = async (user: string) => {
    const cached = cache.get(user);
    if (cached && Date.now() - cached.at < CACHE_MS) return cached.owner;
    const entry = await kv.get(keyOf(user));
    if (!entry || entry.operation !== "PUT") return undefined;
    const owner = entry.string();
    cache.set(user, { owner, at: Date.now() });
    return owner;
  };

  const claim = async (user: string, nodeId: string) => {
    try {
      await kv.create(keyOf(user), nodeId);
      cache.set(user, { owner: nodeId, at: Date.now() });
      return nodeId;
    } catch {
      // Someone claimed it first (or between our read and write): theirs stands.
      const owner = await ownerOf(user);
      if (owner === undefined) throw new Error(`could not claim or read the owner of mailbox ${user}`);
      return owner;
    }
  };

  return { ownerOf, claim };
};
