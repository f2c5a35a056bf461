// The cluster-wide record of idempotency keys in NATS KV: `<tenant>.<key>` → the node that
// took the key and commits (or committed) its message. The bucket's TTL is the key's
// lifetime (`api.idempotencyTtlMs`): nats-server 2.9 has no per-key TTL. Only what the
// claim protocol needs (actors/api/idempotency.ts): create if absent, read, and
// compare-and-set on a revision read, each telling "someone else wrote first" apart from
// "the bucket did not answer".
//
// The bucket is opened on first use and opened again after a failure: a node starts and
// serves unkeyed submits while JetStream is away, and keyed ones as soon as it is back.
import type { KV } from "@nats-io/kv";
import { JetStreamApiCodes, JetStreamApiError } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import { Data, Effect } from "effect";
import { openBucket } from "./kv-bucket.ts";

/** The bucket did not answer (JetStream down, the bucket lost, the connection reconnecting). */
export class KeysUnavailable extends Data.TaggedError("KeysUnavailable")<{ readonly detail: string }> {}

export interface KeyEntry {
  readonly owner: string;
  readonly revision: number;
}

export interface ApiKeys {
  /** Writes `owner` unless the key exists; false when it does. */
  readonly create: (key: string, owner: string) => Effect.Effect<boolean, KeysUnavailable>;
  readonly read: (key: string) => Effect.Effect<KeyEntry | undefined, KeysUnavailable>;
  /** Writes `owner` only over `revision`; false when the key was written since. */
  readonly update: (key: string, owner: string, revision: number) => Effect.Effect<boolean, KeysUnavailable>;
}

/** KV keys allow only [-/_=.a-zA-Z0-9]; an idempotency key is any printable ASCII, so it is base64url. */
export const keyOf = (tenant: string, idempotencyKey: string): string => `${tenant}.${Buffer.from(idempotencyKey, "utf8").toString("base64url")}`;

/** A KV call that gets no answer in this long fails (JetStream's default is 5 s). */
const KV_TIMEOUT_MS = 2_000;

const isWrongLastSequence = (error: unknown) =>
  error instanceof JetStreamApiError &&
  (error.code === JetStreamApiCodes.StreamWrongLastSequence || error.code === JetStreamApiCodes.StreamWrongLastSequenceUnknown);

const describe = (error: unknown) => (error instanceof Error ? `${error.name}: ${error.message}` : String(error));

export const openApiKeys = (nc: NatsConnection, bucket: string, ttlMs: number, replicas = 1): ApiKeys => {
  let opened: Promise<KV> | undefined;

  /** Opens (creating when missing) the bucket, and puts its TTL and replicas right when the configuration changed them. */
  const open = (): Promise<KV> => openBucket(nc, bucket, { history: 1, replicas, ttlMs }, KV_TIMEOUT_MS);

  const bucketCall = <A>(what: string, call: (kv: KV) => Promise<A>): Effect.Effect<A, KeysUnavailable> =>
    Effect.tryPromise({
      try: () => {
        opened ??= open();
        return opened.then(call);
      },
      catch: (error) => new KeysUnavailable({ detail: `${what} in ${bucket}: ${describe(error)}` }),
    }).pipe(Effect.tapError(() => Effect.sync(() => void (opened = undefined))));

  /** A write refused because the key moved is an answer (false), anything else a failure. */
  const conditionalPut = (what: string, put: (kv: KV) => Promise<number>) =>
    bucketCall(what, (kv) => put(kv).then(() => true, (error) => (isWrongLastSequence(error) ? false : Promise.reject(error))));

  return {
    create: (key, owner) => conditionalPut("claim", (kv) => kv.create(key, owner)),
    read: (key) =>
      bucketCall("read", async (kv) => {
        const entry = await kv.get(key);
        return entry && entry.operation === "PUT" ? { owner: entry.string(), revision: entry.revision } : undefined;
      }),
    update: (key, owner, revision) => conditionalPut("take over", (kv) => kv.update(key, owner, revision)),
  };
};
