// Idempotency keys across the cluster. Every node serves the API in one queue group, so a
// retried submit may land on another node than the first: before a node commits a keyed
// submit, it claims the key in the cluster's KV bucket (cluster/api-keys.ts). The node
// that holds the claim commits, and its spool's record (written in the same transaction
// as the message) stays the durable answer; any other node asks it for that answer.
//
// The rule that keeps a key from queueing twice: a node commits under a key only after it
// wrote its own name over the revision of the claim it read (create, or compare-and-set),
// and only after the node named there said it queued nothing under the key. The node
// answering that question first waits for its own commit of the key still under way
// (actors/api/submit.ts keeps one per key per node). So:
// - the owner answers with its record: that is the reply, nothing is queued here;
// - the owner answers it has none (it stopped between claim and commit, its commit
//   failed, or its record aged out): the key is taken over and committed here;
// - the owner does not answer: Unavailable. The first copy may exist; the client retries;
// - the bucket does not answer: Unavailable (unkeyed submits do not use it).
import { Data, Effect, type Scope } from "effect";
import type { NatsConnection } from "@nats-io/transport-node";
import { keyOf, type ApiKeys } from "../../cluster/api-keys.ts";
import { ApiError, type SubmitReply } from "../../protocol/api.ts";
import { recordedEndpoint } from "../../protocol/idempotency.ts";
import type { Subjects } from "../../protocol/subjects.ts";
import { callEndpoint, serveEndpoint, servedInScope } from "../runtime/remote.ts";

/** What a claim decided: commit here, or the reply the key already has. */
export type Claim = { readonly _tag: "Mine" } | { readonly _tag: "Answered"; readonly reply: SubmitReply };

export interface Idempotency {
  readonly claim: (tenant: string, key: string) => Effect.Effect<Claim, ApiError>;
}

/** The owner of a key did not answer: it is down, or slower than the ask's timeout. */
export class OwnerUnreachable extends Data.TaggedError("OwnerUnreachable")<{ readonly owner: string; readonly detail: string }> {}

export interface IdempotencyDeps {
  readonly nodeId: string;
  readonly keys: ApiKeys;
  /** The owner's recorded reply of a key; undefined when it queued nothing under it. */
  readonly askOwner: (owner: string, tenant: string, key: string) => Effect.Effect<SubmitReply | undefined, OwnerUnreachable>;
}

/** How often a claim may change hands under one submit before it answers Unavailable (contention, not a loop). */
const MAX_ROUNDS = 5;

const unavailable = (message: string) => new ApiError({ code: "Unavailable", message });

export const makeIdempotency = (deps: IdempotencyDeps): Idempotency => {
  const { nodeId, keys } = deps;
  const bucketDown = (error: { readonly detail: string }) => unavailable(`idempotency keys cannot be checked now (${error.detail}); retry with the same key`);

  const round = (tenant: string, key: string, kvKey: string): Effect.Effect<Claim | "again", ApiError> =>
    Effect.gen(function* () {
      if (yield* keys.create(kvKey, nodeId)) return { _tag: "Mine" } as const;
      const entry = yield* keys.read(kvKey);
      if (entry === undefined) return "again"; // aged out between the two calls
      // A claim naming this node, which has neither a record nor a commit under way (the
      // caller checked both), was left by an earlier attempt here: it is written again
      // below like a takeover, so the revision others read moves on.
      if (entry.owner !== nodeId) {
        const recorded = yield* deps.askOwner(entry.owner, tenant, key).pipe(
          Effect.mapError((error) => unavailable(`node ${entry.owner} took this idempotency key first and does not answer (${error.detail}); retry later with the same key`)),
        );
        if (recorded) return { _tag: "Answered", reply: recorded } as const;
      }
      return (yield* keys.update(kvKey, nodeId, entry.revision)) ? ({ _tag: "Mine" } as const) : "again";
    }).pipe(Effect.catchTag("KeysUnavailable", (error) => Effect.fail(bucketDown(error))));

  const claim: Idempotency["claim"] = (tenant, key) =>
    Effect.gen(function* () {
      const kvKey = keyOf(tenant, key);
      for (let n = 0; n < MAX_ROUNDS; n++) {
        const outcome = yield* round(tenant, key, kvKey);
        if (outcome !== "again") return outcome;
      }
      return yield* unavailable("this idempotency key is being taken over by other nodes right now; retry later with the same key");
    });

  return { claim };
};

// ---------------------------------------------------------------------------
// Over NATS: asking a key's owner, and answering as one.

export const askOwnerOverNats =
  (nc: NatsConnection, subjects: Subjects, timeoutMs: number): IdempotencyDeps["askOwner"] =>
  (owner, tenant, key) =>
    callEndpoint(nc, subjects.idempotencyOf(owner), recordedEndpoint, { tenant, key }, { timeoutMs }).pipe(
      Effect.map(({ value }) => value.reply),
      Effect.mapError((error) => new OwnerUnreachable({ owner, detail: error.detail })),
    );

/** Answers other nodes asking for the reply recorded under a key, until the scope closes. */
export const serveRecorded = (
  nc: NatsConnection,
  subjects: Subjects,
  nodeId: string,
  recorded: (tenant: string, key: string) => Effect.Effect<SubmitReply | undefined>,
): Effect.Effect<void, never, Scope.Scope> =>
  Effect.asVoid(
    servedInScope((run) =>
      serveEndpoint(nc, subjects.idempotencyOf(nodeId), recordedEndpoint, (request) => Effect.map(recorded(request.tenant, request.key), (reply) => ({ value: reply ? { reply } : {} })), { run }),
    ),
  );
