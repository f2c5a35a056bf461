// Cluster membership: the record each node keeps in the members KV bucket
// (`tern_<cluster>_members`, key = node id), rewritten on every heartbeat; the bucket's
// TTL removes the record of a node that stopped heartbeating (killed, cut off). A node
// that stops gracefully deletes its record at once. `tern cluster status` asks any node
// for the records it reads (subject `tern.<cluster>.cluster.members`), so operators need
// no access to the bucket itself.
import { Schema } from "effect";

const Count = Schema.Int.check(Schema.isGreaterThanOrEqualTo(0));
const Port = Schema.Int.check(Schema.isGreaterThanOrEqualTo(0));

export const MemberRecord = Schema.Struct({
  node: Schema.String,
  /** Tern's version (package.json) the node runs. */
  version: Schema.String,
  /** When the node process started, ms since the epoch; a restart under the same id is a new start. */
  startedAt: Schema.Number,
  /** When this record was written. */
  heartbeatAt: Schema.Number,
  /** What /readyz says: ready when `problems` is empty. */
  ready: Schema.Boolean,
  problems: Schema.Array(Schema.String),
  /** The node is being drained (`tern node drain`): it takes no mail and hands its queue to the others. Absent: not draining. */
  draining: Schema.optional(Schema.Boolean),
  /** Queue entries in the node's spool. */
  queueDepth: Count,
  /** Outbound SMTP connections open (busy or idle). */
  outboundConnections: Count,
  host: Schema.String,
  ports: Schema.Struct({ smtp: Port, smtps: Port, pop3: Port, http: Port }),
});
export type MemberRecord = typeof MemberRecord.Type;

export const MembersRequest = Schema.Struct({});
export type MembersRequest = typeof MembersRequest.Type;

export const MembersReply = Schema.Struct({
  /** The node that answered (it read the bucket). */
  answeredBy: Schema.String,
  members: Schema.Array(MemberRecord),
});
export type MembersReply = typeof MembersReply.Type;

/** The members bucket could not be read. */
export class MembersUnavailable extends Schema.TaggedError<MembersUnavailable>()("MembersUnavailable", {
  detail: Schema.String,
}) {}

/** Why a member left the list: it deleted its record (stopped gracefully) or the record expired (no heartbeat within the TTL). */
export type LeaveReason = "left" | "expired";

export type MembershipChange =
  | { readonly _tag: "Joined"; readonly member: MemberRecord }
  | { readonly _tag: "Left"; readonly member: MemberRecord; readonly reason: LeaveReason };

/**
 * What changed between two readings of the bucket. `deleted` names the nodes whose key
 * holds a delete marker (a graceful leave); a node gone without one expired. A node whose
 * `startedAt` changed restarted in between: it left (expired, since the old process never
 * said goodbye) and joined again.
 */
export const membershipChanges = (
  before: ReadonlyMap<string, MemberRecord>,
  after: ReadonlyMap<string, MemberRecord>,
  deleted: ReadonlySet<string>,
): ReadonlyArray<MembershipChange> => {
  const changes: MembershipChange[] = [];
  for (const [node, member] of before) {
    const now = after.get(node);
    if (now === undefined) changes.push({ _tag: "Left", member, reason: deleted.has(node) ? "left" : "expired" });
    else if (now.startedAt !== member.startedAt) changes.push({ _tag: "Left", member, reason: "expired" });
  }
  for (const [node, member] of after) {
    const was = before.get(node);
    if (was === undefined || was.startedAt !== member.startedAt) changes.push({ _tag: "Joined", member });
  }
  return changes;
};
