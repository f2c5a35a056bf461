// The hand-off of one queued message from a draining node to a peer (protocol/drain.ts).
//
// Invariant 2 across nodes: the sender removes its copy only after the receiver answered,
// and the receiver answers only after its commit is on disk (spool.adopt, an awaited
// LMDB write: fsync). A crash of the sender between the two leaves both copies; the
// hand-off is then tried again with the same key (message id and generation), which the
// receiver recognises from the idempotency record committed with its copy: it answers
// Duplicate and writes nothing, and the sender removes its copy. So a retry costs a
// counted duplicate hand-off, not a second delivery. (If the sender restarts without
// draining and delivers its copy itself, that delivery is the duplicate a crash may cause.)
import { createHash } from "node:crypto";
import { Effect, type Scope } from "effect";
import type { Subscription } from "@nats-io/transport-node";
import { HandOffRefused, HandOffReply, HandOffRequest, HANDOFFS_ATTRIBUTE, generationOf, handOffKey, type HandOffEntry } from "../../protocol/drain.ts";
import type { MalformedMessage, RemoteBusy, RemoteUnavailable, StoreError } from "../../protocol/errors.ts";
import type { Subjects } from "../../protocol/subjects.ts";
import { HELD_DUE, type QueueEntry } from "../queue/entry.ts";
import type { Spool } from "../queue/spool.ts";
import type { BlobTransport } from "../runtime/blobs.ts";
import { callChunkedEndpoint, serveChunkedEndpoint, servedInScope, type Endpoint } from "../runtime/remote.ts";

export const handOffEndpoint: Endpoint<HandOffRequest, HandOffReply, HandOffRefused> = {
  request: HandOffRequest,
  response: HandOffReply,
  error: HandOffRefused,
};

/** The receiver's part: what it needs to take a message over. */
export interface ReceiverDeps {
  readonly nodeId: string;
  readonly spool: Pick<Spool, "adopt">;
  /** Why this node takes nothing now (it drains itself, its spool cannot commit), or undefined when it takes mail. */
  readonly refusal: () => string | undefined;
  /** How long the idempotency record of a hand-off is kept (the queue lifetime: the sender's copy expires by then). */
  readonly rememberMs: number;
  /** After the commit: entries due now go to the scheduler; duplicates are counted. */
  readonly received: (outcome: "committed" | "duplicate", request: HandOffRequest, entries: ReadonlyArray<QueueEntry>) => void;
  readonly now: () => number;
}

/** The entries as the receiver's spool keeps them: ids, recipients, attempt state and an operator's hold unchanged. */
const entriesOf = (request: HandOffRequest): ReadonlyArray<QueueEntry> =>
  request.entries.map((entry) => ({
    id: entry.id,
    messageId: request.message.id,
    route: entry.route,
    sender: request.message.sender,
    recipients: entry.recipients,
    createdAt: entry.createdAt,
    attempts: entry.attempts,
    // A held entry waits at HELD_DUE whatever the sender wrote, so the hold holds here too.
    nextAttemptAt: entry.heldAt !== undefined ? HELD_DUE : entry.nextAttemptAt,
    reason: entry.reason,
    ...optionalState(entry),
  }));

/** The optional parts of an entry's state, present only when set: the same on the wire as in the spool. */
const optionalState = (entry: Pick<QueueEntry, "history" | "delayNotified" | "heldAt" | "heldMs">) => ({
  ...(entry.history && entry.history.length > 0 ? { history: entry.history } : {}),
  ...(entry.delayNotified ? { delayNotified: true as const } : {}),
  ...(entry.heldAt !== undefined ? { heldAt: entry.heldAt } : {}),
  ...(entry.heldMs !== undefined ? { heldMs: entry.heldMs } : {}),
});

/** Entry ids must be the message's own (`<messageId>.<n>`): a forged id must not land in another message's range. */
const ownsEntries = (request: HandOffRequest) =>
  request.entries.every((entry) => entry.id.startsWith(`${request.message.id}.`) && /^\d+$/.test(entry.id.slice(request.message.id.length + 1)));

const receiveHandOff = (deps: ReceiverDeps, request: HandOffRequest, body: Uint8Array | undefined): Effect.Effect<HandOffReply, HandOffRefused | StoreError> =>
  Effect.gen(function* () {
    const refuse = (reason: string) => new HandOffRefused({ node: deps.nodeId, reason });
    const closed = deps.refusal();
    if (closed !== undefined) return yield* refuse(closed);
    if (request.from === deps.nodeId) return yield* refuse("a node does not hand mail to itself");
    if (!ownsEntries(request)) return yield* refuse("entry ids do not belong to the message");
    if (body === undefined || body.length !== request.message.size) return yield* refuse(`the body has ${body?.length ?? 0} bytes, the message says ${request.message.size}`);
    const entries = entriesOf(request);
    const outcome = yield* deps.spool.adopt(
      {
        id: request.message.id,
        sender: request.message.sender,
        receivedAt: request.message.receivedAt,
        body,
        attributes: { ...request.message.attributes, [HANDOFFS_ATTRIBUTE]: request.message.generation + 1 },
      },
      entries,
      { scope: "handoff", key: handOffKey(request.message.id, request.message.generation), value: { from: request.from }, expiresAt: deps.now() + deps.rememberMs },
    );
    deps.received(outcome, request, entries);
    return { node: deps.nodeId, outcome };
  });

/** Serves hand-offs to this node for as long as the scope lasts. */
export const serveHandOff = (transport: BlobTransport, subjects: Subjects, deps: ReceiverDeps, timeoutMs: number): Effect.Effect<Subscription, never, Scope.Scope> =>
  servedInScope((run) =>
    serveChunkedEndpoint(
      transport,
      subjects.handOff(deps.nodeId),
      handOffEndpoint,
      (request, body) =>
        receiveHandOff(deps, request, body).pipe(
          // A store failure is a refusal the sender retries: nothing was committed.
          Effect.catchTag("StoreError", (error) => Effect.fail(new HandOffRefused({ node: deps.nodeId, reason: `storage: ${error.detail}` }))),
          Effect.map((value) => ({ value })),
        ),
      { timeoutMs, run },
    ));

/**
 * What a message still queued here amounts to for a hand-off: nothing (its entries left
 * meanwhile), entries without a message or body to hand (the scheduler would finish such
 * an entry: "queue.body.missing"), or the request with the entries it covers.
 */
export type Prepared =
  | { readonly _tag: "Gone" }
  | { readonly _tag: "Missing"; readonly entries: ReadonlyArray<QueueEntry> }
  | { readonly _tag: "Ready"; readonly request: HandOffRequest; readonly entries: ReadonlyArray<QueueEntry>; readonly body: Uint8Array };

export const prepareHandOff = (spool: Pick<Spool, "message" | "entriesOf" | "body">, from: string, messageId: string): Prepared => {
  const message = spool.message(messageId);
  const entries = spool.entriesOf(messageId);
  if (entries.length === 0) return { _tag: "Gone" };
  const body = message ? spool.body(messageId) : undefined;
  if (!message || body === undefined) return { _tag: "Missing", entries };
  const wire = entries.map(
    (entry): HandOffEntry => ({
      id: entry.id,
      route: entry.route,
      recipients: entry.recipients,
      createdAt: entry.createdAt,
      attempts: entry.attempts,
      nextAttemptAt: entry.nextAttemptAt,
      reason: entry.reason,
      ...optionalState(entry),
    }),
  );
  // Attributes are whatever the session or API stored; only what JSON can carry crosses.
  const attributes = message.attributes ? (JSON.parse(JSON.stringify(message.attributes)) as Record<string, unknown>) : undefined;
  return {
    _tag: "Ready",
    request: {
      from,
      message: { id: message.id, sender: message.sender, receivedAt: message.receivedAt, size: body.length, ...(attributes ? { attributes } : {}), generation: generationOf(message.attributes) },
      entries: wire,
    },
    entries,
    body,
  };
};

export type HandOffFailure = HandOffRefused | RemoteUnavailable | RemoteBusy | MalformedMessage | StoreError;

/**
 * Hands one prepared message to `peer` and, once the peer committed it (or already held it),
 * removes it here. Returns what the peer answered, and how many entries left this spool.
 */
export const handOff = (
  transport: BlobTransport,
  subjects: Subjects,
  spool: Pick<Spool, "handOver">,
  prepared: Extract<Prepared, { _tag: "Ready" }>,
  peer: string,
  timeoutMs: number,
): Effect.Effect<{ readonly outcome: "committed" | "duplicate"; readonly entries: number }, HandOffFailure> =>
  Effect.gen(function* () {
    const reply = yield* callChunkedEndpoint(transport, subjects.handOff(peer), handOffEndpoint, prepared.request, { timeoutMs, attachment: prepared.body });
    if (reply.value.node !== peer) return yield* new HandOffRefused({ node: peer, reason: `answered by ${reply.value.node}` });
    const removed = yield* spool.handOver(prepared.entries, peer);
    return { outcome: reply.value.outcome, entries: removed };
  });

/**
 * The peer a message goes to: highest random weight (rendezvous) over the peers, so a
 * retried hand-off goes to the same peer while the peer set stays the same (and is
 * recognised there as a duplicate), and messages spread evenly.
 */
export const peerFor = (messageId: string, peers: ReadonlyArray<string>): string | undefined => {
  let best: string | undefined;
  let bestWeight = -1n;
  for (const peer of peers) {
    const weight = createHash("sha256").update(`${peer}\u0000${messageId}`).digest().readBigUInt64BE(0);
    if (weight > bestWeight || (weight === bestWeight && best !== undefined && peer < best)) {
      best = peer;
      bestWeight = weight;
    }
  }
  return best;
};
