// The members bucket in NATS KV (`tern_<cluster>_members`): one key per node, its
// heartbeat record (protocol/membership.ts) as the value. The bucket's TTL (max age)
// drops the record of a node that stopped heartbeating; a node that stops gracefully
// deletes its key, which leaves a delete marker until the TTL removes it too.
//
// The member list is read without a consumer (nodes' NATS permissions allow none on KV
// buckets): STREAM.INFO with a subjects filter names the keys present, and each is read
// directly. JetStream can lose the bucket (a wiped store): a failed heartbeat creates it
// again before the next one.
import type { KV } from "@nats-io/kv";
import { openBucket } from "./kv-bucket.ts";
import { jetstreamManager } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import { Effect, Exit, Schema } from "effect";
import { MemberRecord, MembersUnavailable } from "../protocol/membership.ts";

export interface MembersReading {
  /** Live members by node id. */
  readonly members: ReadonlyMap<string, MemberRecord>;
  /** Nodes whose key holds a delete marker: they left gracefully. */
  readonly deleted: ReadonlySet<string>;
}

export interface MembersBucket {
  /** Writes this node's record (creating the bucket again first when a write failed). */
  readonly put: (record: MemberRecord) => Effect.Effect<void, MembersUnavailable>;
  /** Deletes a node's record: the others see it leave at their next reading. */
  readonly remove: (node: string) => Effect.Effect<void, MembersUnavailable>;
  readonly read: () => Effect.Effect<MembersReading, MembersUnavailable>;
}

/** A KV call that gets no answer in this long fails. */
const KV_TIMEOUT_MS = 2_000;

const describe = (error: unknown) => (error instanceof Error ? `${error.name}: ${error.message}` : String(error));

const decodeRecord = Schema.decodeUnknownExit(Schema.fromJsonString(MemberRecord));

export const openMembersBucket = (
  nc: NatsConnection,
  bucket: string,
  options: { readonly ttlMs: number; readonly replicas: number },
): Effect.Effect<MembersBucket, MembersUnavailable> =>
  Effect.gen(function* () {
    const unavailable = (what: string) => (error: unknown) => new MembersUnavailable({ detail: `members bucket ${bucket}: ${what}: ${describe(error)}` });
    // Created with the cluster's replicas; an existing bucket's TTL and replicas are put right (kv-bucket.ts).
    const open = () => openBucket(nc, bucket, { history: 1, replicas: options.replicas, ttlMs: options.ttlMs }, KV_TIMEOUT_MS);
    let kv: KV = yield* Effect.tryPromise({ try: open, catch: unavailable("cannot open") });
    let writeFailed = false;

    const put = (record: MemberRecord) =>
      Effect.tryPromise({
        try: async () => {
          if (writeFailed) kv = await open();
          await kv.put(record.node, JSON.stringify(record));
          writeFailed = false;
        },
        catch: (error) => {
          writeFailed = true;
          return unavailable("heartbeat")(error);
        },
      });

    const remove = (node: string) => Effect.tryPromise({ try: () => kv.delete(node), catch: unavailable("delete") });

    const read = () =>
      Effect.tryPromise({
        try: async (): Promise<MembersReading> => {
          const jsm = await jetstreamManager(nc, { timeout: KV_TIMEOUT_MS, checkAPI: false });
          const prefix = `$KV.${bucket}.`;
          const info = await jsm.streams.info(`KV_${bucket}`, { subjects_filter: `${prefix}>` });
          const keys = Object.keys(info.state.subjects ?? {}).map((subject) => subject.slice(prefix.length));
          const members = new Map<string, MemberRecord>();
          const deleted = new Set<string>();
          await Promise.all(
            keys.map(async (key) => {
              const entry = await kv.get(key);
              if (entry === null) return; // expired between the listing and the read
              if (entry.operation !== "PUT") return void deleted.add(key);
              const record = decodeRecord(entry.string());
              // A record that does not decode (a newer node's format, or a forgery) is not a member.
              if (Exit.isSuccess(record) && record.value.node === key) members.set(key, record.value);
            }),
          );
          return { members, deleted };
        },
        catch: unavailable("read"),
      });

    return { put, remove, read };
  });
