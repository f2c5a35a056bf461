// The suppression list's KV bucket, `tern_<cluster>_suppressions` (protocol/suppression.ts
// names its keys and values): writes, reads, and the watch that keeps every node's
// in-memory view (actors/suppression/list.ts) up to date.
//
// nats-server 2.9 has no per-key TTL, and the bucket has none either: an entry stays
// until it is removed (by an operator, a tenant, or `tern suppress remove`). History is 1:
// a removal leaves a small delete marker per key.
//
// The watch is an ordered push consumer of the bucket's stream (nats.js `kv.watch`): the
// last value of every key, then every change. It recovers by itself from short NATS
// outages (recreating its consumer from the last sequence seen); when it ends anyway, the
// node starts it again after a backoff, reloading the whole view. Its messages arrive on
// the node's inbox, and nodes may create consumers on this bucket only
// (cluster/nats-permissions.ts).
//
// The bucket is opened on first use and again after a failure, like the idempotency keys:
// a node starts while JetStream is away, and checks what it loaded once it is back.
import { KvWatchInclude, type KV } from "@nats-io/kv";
import { JetStreamApiCodes, JetStreamApiError } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import { Data, Effect, Exit, Random, Schema, type Scope } from "effect";
import { SuppressionRecord, SuppressionReason, type SuppressionReason as Reason } from "../protocol/suppression.ts";
import type { SuppressionList } from "../actors/suppression/list.ts";
import type { SuppressionStore as AdminStore } from "../actors/suppression/admin.ts";
import { openBucket } from "./kv-bucket.ts";

/** The bucket did not answer (JetStream down, the bucket lost, the connection reconnecting). */
export class SuppressionsUnavailable extends Data.TaggedError("SuppressionsUnavailable")<{ readonly detail: string }> {}

/** The store admin and the automatic adds write to (actors/suppression/admin.ts), failing with SuppressionsUnavailable. */
export interface SuppressionStore extends AdminStore {
  readonly create: (key: string, record: SuppressionRecord) => Effect.Effect<boolean, SuppressionsUnavailable>;
  readonly remove: (key: string) => Effect.Effect<boolean, SuppressionsUnavailable>;
  readonly get: (key: string) => Effect.Effect<SuppressionRecord | undefined, SuppressionsUnavailable>;
}

export interface WatchObserver {
  /** A snapshot of the bucket is the view now (at start, and after each restart of the watch). */
  readonly loaded: (entries: number) => void;
  /** The watch ended or could not start; it is started again after `retryInMs`. */
  readonly failed: (detail: string, retryInMs: number) => void;
  /** A value that is no record (a newer node's format, or damage): the key is kept as suppressed. */
  readonly malformed: (key: string) => void;
}

/** A KV call that gets no answer in this long fails (JetStream's default is 5 s). */
const KV_TIMEOUT_MS = 2_000;
const RETRY_BASE_MS = 500;
const RETRY_MAX_MS = 30_000;

const describe = (error: unknown) => (error instanceof Error ? `${error.name}: ${error.message}` : String(error));

const isWrongLastSequence = (error: unknown) =>
  error instanceof JetStreamApiError &&
  (error.code === JetStreamApiCodes.StreamWrongLastSequence || error.code === JetStreamApiCodes.StreamWrongLastSequenceUnknown);

const decodeRecord = Schema.decodeUnknownExit(Schema.fromJsonString(SuppressionRecord));
const isReason = Schema.is(SuppressionReason);

/**
 * The reason of a stored value, read without decoding the whole record: a view of a
 * million entries is loaded at start, and only the reason is kept.
 */
const reasonOf = (text: string): Reason | undefined => {
  try {
    const reason = (JSON.parse(text) as { reason?: unknown } | null)?.reason;
    return isReason(reason) ? reason : undefined;
  } catch {
    return undefined;
  }
};

export interface SuppressionBucket {
  readonly store: SuppressionStore;
  /** Keeps `list` up to date until the scope closes. */
  readonly follow: (list: SuppressionList, observer: WatchObserver) => Effect.Effect<void, never, Scope.Scope>;
}

export const openSuppressions = (
  nc: NatsConnection,
  options: { readonly bucket: string; readonly replicas: number; readonly watcherPrefix: string },
): SuppressionBucket => {
  const { bucket } = options;
  let opened: Promise<KV> | undefined;
  const open = () => openBucket(nc, bucket, { history: 1, replicas: options.replicas }, KV_TIMEOUT_MS, options.watcherPrefix);
  const kvOf = (): Promise<KV> => {
    opened ??= open();
    return opened;
  };

  const call = <A>(what: string, run: (kv: KV) => Promise<A>): Effect.Effect<A, SuppressionsUnavailable> =>
    Effect.tryPromise({
      try: () => kvOf().then(run),
      catch: (error) => new SuppressionsUnavailable({ detail: `${what} in ${bucket}: ${describe(error)}` }),
    }).pipe(Effect.tapError(() => Effect.sync(() => void (opened = undefined))));

  const store: SuppressionStore = {
    create: (key, record) =>
      call("add", (kv) => kv.create(key, JSON.stringify(record)).then(() => true, (error) => (isWrongLastSequence(error) ? false : Promise.reject(error)))),
    remove: (key) =>
      call("remove", async (kv) => {
        const entry = await kv.get(key);
        if (entry === null || entry.operation !== "PUT") return false;
        await kv.delete(key);
        return true;
      }),
    get: (key) =>
      call("read", async (kv) => {
        const entry = await kv.get(key);
        if (entry === null || entry.operation !== "PUT") return undefined;
        const record = decodeRecord(entry.string());
        return Exit.isSuccess(record) ? record.value : undefined;
      }),
  };

  /**
   * One watch, until it ends: a fresh map is filled from the snapshot (the last value of
   * every key) and becomes the view once the snapshot is in; later changes go straight to
   * the view. It ends when its consumer could not be kept (or the scope closes).
   */
  const watchOnce = (list: SuppressionList, observer: WatchObserver, progress: { loads: number }) =>
    Effect.tryPromise({
      try: async (signal) => {
        const kv = await kvOf();
        const reload = list.reload();
        let loading = true;
        const finish = () => {
          reload.finish();
          loading = false;
          progress.loads++;
          observer.loaded(list.size());
        };
        // An empty bucket sends no snapshot to wait for.
        if ((await kv.status()).values === 0) finish();
        const changes = await kv.watch({ include: KvWatchInclude.LastValue });
        const stop = () => changes.stop();
        signal.addEventListener("abort", stop);
        try {
          for await (const change of changes) {
            const target = loading ? reload : list;
            if (change.operation !== "PUT") target.remove(change.key);
            else {
              const reason = reasonOf(change.string());
              if (reason === undefined) observer.malformed(change.key);
              target.put(change.key, reason ?? "manual");
            }
            // Nothing pending after this one: the snapshot is complete.
            if (loading && change.delta === 0) finish();
          }
        } finally {
          signal.removeEventListener("abort", stop);
        }
        throw new Error("the watch ended");
      },
      catch: (error) => new SuppressionsUnavailable({ detail: `watch of ${bucket}: ${describe(error)}` }),
    });

  const follow = (list: SuppressionList, observer: WatchObserver): Effect.Effect<void, never, Scope.Scope> =>
    Effect.gen(function* () {
      let failures = 0;
      const progress = { loads: 0 };
      const loop = Effect.gen(function* () {
        for (;;) {
          const loadsBefore = progress.loads;
          const result = yield* Effect.result(watchOnce(list, observer, progress));
          opened = undefined;
          // A watch that loaded its snapshot worked for a while: the backoff starts over.
          failures = progress.loads > loadsBefore ? 1 : failures + 1;
          const full = Math.min(RETRY_MAX_MS, RETRY_BASE_MS * 2 ** Math.min(failures - 1, 16));
          const delay = Math.round(full / 2 + (full / 2) * (yield* Random.next));
          observer.failed(result._tag === "Failure" ? result.failure.detail : "the watch ended", delay);
          yield* Effect.sleep(delay);
        }
      });
      yield* Effect.forkScoped(loop);
    });

  return { store, follow };
};
