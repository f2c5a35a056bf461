// Opens one of Tern's KV buckets, creating it when missing, and puts its replicas (and TTL,
// when it has one) right when they differ from the node's configuration. JetStream
// creates a bucket (the stream `KV_<name>`) with the limits asked for, but an existing
// bucket keeps the ones it was created with: a cluster that grew from one NATS server to
// three, or an operator raising `nats.replicas`, would otherwise keep buckets on a single
// server whose loss loses them. A stream's replicas can be changed in place on a
// clustered NATS (the server copies the data to the new peers).
import { Kvm, type KV } from "@nats-io/kv";
import { jetstream, jetstreamManager, type StreamConfig } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";

export interface BucketOptions {
  /** Values kept per key. */
  readonly history: number;
  /** Servers holding the bucket (nats.replicas). */
  readonly replicas: number;
  /** The bucket's TTL: entries older than this are dropped. */
  readonly ttlMs?: number;
}

/** The stream limits a bucket should have, as JetStream reports them. */
const limitsOf = (options: BucketOptions): Partial<StreamConfig> => ({
  num_replicas: options.replicas,
  ...(options.ttlMs === undefined ? {} : { max_age: options.ttlMs * 1_000_000 }),
});

export const differingLimits = (current: Partial<StreamConfig>, wanted: Partial<StreamConfig>): string[] =>
  Object.entries(wanted)
    .filter(([key, value]) => current[key as keyof StreamConfig] !== value)
    .map(([key]) => key);

/**
 * `watcherPrefix`: where a watch of the bucket receives its messages. nats.js puts them
 * under `_INBOX` otherwise, which a node may not subscribe to: give the node's inbox.
 */
export const openBucket = async (nc: NatsConnection, bucket: string, options: BucketOptions, timeoutMs: number, watcherPrefix?: string): Promise<KV> => {
  const js = jetstream(nc, { timeout: timeoutMs, ...(watcherPrefix !== undefined ? { watcherPrefix } : {}) });
  const kv = await new Kvm(js).create(bucket, {
    history: options.history,
    replicas: options.replicas,
    ...(options.ttlMs === undefined ? {} : { ttl: options.ttlMs }),
  });
  const { streamInfo } = await kv.status();
  const wanted = limitsOf(options);
  if (differingLimits(streamInfo.config, wanted).length > 0) {
    const jsm = await jetstreamManager(nc, { timeout: timeoutMs, checkAPI: false });
    // JetStream refuses a duplicate window longer than the max age (a bucket made without a
    // TTL has the 2-minute default): a shorter TTL shortens the window with it.
    const window = wanted.max_age !== undefined && wanted.max_age > 0 ? Math.min(streamInfo.config.duplicate_window, wanted.max_age) : streamInfo.config.duplicate_window;
    await jsm.streams.update(streamInfo.config.name, { ...streamInfo.config, ...wanted, duplicate_window: window });
  }
  return kv;
};
