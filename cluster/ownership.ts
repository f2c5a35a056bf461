// Which node owns each mailbox, recorded in NATS KV. Placement is sticky: the data lives
// in the owner's LMDB, so a claim never overwrites another node's claim. The only writer
// that may overwrite is a node re-asserting a mailbox its own durable record says it
// holds (actors/mailbox/placement.ts): the KV is a shared map that JetStream can lose or
// anyone with NATS access can rewrite, the record is where the mail is.
//
// JetStream can lose the bucket (a nats-server restarted with a wiped store): every KV
// call then fails (a timeout, "no responders") until the bucket exists again. So the
// bucket is checked (`checkBucket`, on a schedule and after any failed call) and created
// again when it is missing. Each creation of the bucket has its own `generation` (the
// stream's creation time), so every node can tell that the map was emptied, whoever
// recreated it, and re-assert what it holds.
import type { KV } from "@nats-io/kv";
import { JetStreamApiCodes, JetStreamApiError } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import { Clock, Data, Effect, Semaphore } from "effect";
import { openBucket } from "./kv-bucket.ts";

/** NATS KV could not answer (JetStream down, the bucket lost, the connection reconnecting). */
export class OwnershipUnavailable extends Data.TaggedError("OwnershipUnavailable")<{
  readonly user: string;
  readonly detail: string;
}> {}

export type BucketState =
  | { readonly _tag: "Present"; readonly generation: string }
  | { readonly _tag: "Recreated"; readonly generation: string }
  | { readonly _tag: "Unreachable"; readonly detail: string };

export interface MailboxOwners {
  /** The owner's node id, or undefined when nobody has claimed the mailbox yet. */
  readonly ownerOf: (user: string) => Effect.Effect<string | undefined, OwnershipUnavailable>;
  /** Claims the mailbox for `nodeId` unless someone owns it already; returns the owner. */
  readonly claim: (user: string, nodeId: string) => Effect.Effect<string, OwnershipUnavailable>;
  /**
   * Makes the KV say `nodeId` owns the mailbox, overwriting another owner: only for a node
   * whose durable record says it holds the mailbox. Returns who the KV named before.
   */
  readonly assert: (user: string, nodeId: string) => Effect.Effect<string | undefined, OwnershipUnavailable>;
  /** Checks the bucket exists and creates it again when it does not. */
  readonly checkBucket: () => Effect.Effect<BucketState>;
  /** Why the bucket cannot be used now (for /readyz), or undefined. */
  readonly problem: () => string | undefined;
}

/** KV keys allow only [-/_=.a-zA-Z0-9]; addresses have '@' and more, so keys are base64url. */
const keyOf = (user: string) => Buffer.from(user.toLowerCase(), "utf8").toString("base64url");

/** How long an owner read from KV is trusted without asking again. */
const CACHE_MS = 2_000;
/** A KV call that gets no answer in this long fails (JetStream's default is 5 s). */
const KV_TIMEOUT_MS = 2_000;
/** After a failed call, the bucket is checked at most this often. */
const RECHECK_AFTER_FAILURE_MS = 1_000;

const isStreamNotFound = (error: unknown) => error instanceof JetStreamApiError && error.code === JetStreamApiCodes.StreamNotFound;

const describe = (error: unknown) => (error instanceof Error ? `${error.name}: ${error.message}` : String(error));

export const openMailboxOwners = (nc: NatsConnection, bucket: string, replicas = 1): Effect.Effect<MailboxOwners, OwnershipUnavailable> =>
  Effect.gen(function* () {
    const createBucket = () => openBucket(nc, bucket, { history: 1, replicas }, KV_TIMEOUT_MS);
    const kv: KV = yield* Effect.tryPromise({
      try: createBucket,
      catch: (error) => new OwnershipUnavailable({ user: "", detail: `cannot open bucket ${bucket}: ${describe(error)}` }),
    });
    const cache = new Map<string, { owner: string; at: number }>();
    const checking = yield* Semaphore.make(1);
    let problem: string | undefined;
    let generation: string | undefined;
    let lastCheckAt = Number.NEGATIVE_INFINITY;

    const streamCreated = () => kv.status().then((status) => status.streamInfo.created);

    const check = Effect.gen(function* () {
      lastCheckAt = yield* Clock.currentTimeMillis;
      const present = yield* Effect.tryPromise(streamCreated).pipe(Effect.result);
      if (present._tag === "Success") {
        const recreated = generation !== undefined && generation !== present.success;
        generation = present.success;
        problem = undefined;
        if (recreated) cache.clear();
        return recreated ? { _tag: "Recreated", generation } as const : { _tag: "Present", generation } as const;
      }
      const cause = present.failure.cause;
      if (!isStreamNotFound(cause)) {
        problem = `nats: mailbox owners bucket ${bucket} unreachable (${describe(cause)})`;
        return { _tag: "Unreachable", detail: problem } as const;
      }
      problem = `nats: mailbox owners bucket ${bucket} missing`;
      const created = yield* Effect.tryPromise(() => createBucket().then(streamCreated)).pipe(Effect.result);
      if (created._tag === "Failure") {
        problem = `nats: mailbox owners bucket ${bucket} missing and not recreated (${describe(created.failure.cause)})`;
        return { _tag: "Unreachable", detail: problem } as const;
      }
      generation = created.success;
      problem = undefined;
      cache.clear();
      return { _tag: "Recreated", generation } as const;
    });

    const checkBucket = () => checking.withPermits(1)(check);

    /** A failed call may mean the bucket is gone: check it (not more than once a second) before failing. */
    const kvCall = <A>(user: string, what: string, call: () => Promise<A>): Effect.Effect<A, OwnershipUnavailable> =>
      Effect.tryPromise({ try: call, catch: (error) => new OwnershipUnavailable({ user, detail: `${what}: ${describe(error)}` }) }).pipe(
        Effect.tapError(() =>
          Effect.flatMap(Clock.currentTimeMillis, (now) => (now - lastCheckAt >= RECHECK_AFTER_FAILURE_MS ? Effect.asVoid(checkBucket()) : Effect.void))),
      );

    const readOwner = (user: string) =>
      kvCall(user, "owner lookup", async () => {
        const entry = await kv.get(keyOf(user));
        return entry && entry.operation === "PUT" ? { owner: entry.string(), revision: entry.revision } : undefined;
      });

    const remember = (user: string, owner: string) => Effect.flatMap(Clock.currentTimeMillis, (at) => Effect.sync(() => cache.set(user, { owner, at })));

    const ownerOf = (user: string) =>
      Effect.gen(function* () {
        const cached = cache.get(user);
        if (cached && (yield* Clock.currentTimeMillis) - cached.at < CACHE_MS) return cached.owner;
        const entry = yield* readOwner(user);
        if (entry) yield* remember(user, entry.owner);
        return entry?.owner;
      });

    const claim = (user: string, nodeId: string) =>
      Effect.gen(function* () {
        const created = yield* Effect.tryPromise(() => kv.create(keyOf(user), nodeId)).pipe(Effect.result);
        // A refused create means someone claimed it first (or between our read and write): theirs stands.
        const owner = created._tag === "Success" ? nodeId : (yield* readOwner(user))?.owner;
        if (owner === undefined) return yield* new OwnershipUnavailable({ user, detail: "could not claim or read the owner" });
        yield* remember(user, owner);
        return owner;
      });

    const assert = (user: string, nodeId: string) =>
      Effect.gen(function* () {
        const entry = yield* readOwner(user);
        if (entry?.owner !== nodeId) {
          // Only over the entry just read: two nodes re-asserting at once do not loop.
          yield* kvCall(user, "re-assert", () => (entry ? kv.update(keyOf(user), nodeId, entry.revision) : kv.create(keyOf(user), nodeId)));
        }
        yield* remember(user, nodeId);
        return entry?.owner;
      });

    yield* checkBucket();
    return { ownerOf, claim, assert, checkBucket, problem: () => problem };
  });
