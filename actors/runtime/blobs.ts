// The chunked path for frames larger than NATS's max payload (mail bodies up to 50 MB
// against NATS's 1 MB default). The side holding the bytes *offers* them on a fresh inbox
// and sends only a BlobRef; the other side *pulls* the chunks with a few requests in
// flight, checks the SHA-256, and says when it is done. Pulling (rather than pushing)
// gives flow control for free: nothing arrives faster than the receiver asks, so no
// slow-consumer drops. Nothing is written to JetStream: a blob lives only as long as
// the transfer, and a sender that dies simply makes the pull fail (the caller defers).
// An offer nobody finishes is withdrawn after its TTL by a fiber sleeping on the Clock of
// the fiber that made the offer (so TestClock drives it in tests).
//
// A BlobRef comes from whoever sent the request, so the puller trusts none of it blindly:
// - it only pulls from a node's inbox of this cluster (`tern.<cluster>.inbox.<node>.<token>`,
//   where every node makes its offers); a reference to any other subject is refused before
//   anything is published, so nobody can make a node send requests where they choose;
// - the declared size is reserved in the node's pull budget (actors/runtime/pull-budget.ts)
//   before anything is allocated, per offering node and overall; over a cap: RemoteBusy;
// - the buffer is allocated only once the offer has answered with a first chunk of the
//   right size, and the whole pull has a deadline, so a lying offer holds its reservation
//   for a bounded time; however the pull ends, its chunk requests stop and its buffer is
//   dropped.
import { createHash } from "node:crypto";
import { Effect, Exit, Schema, type Scope } from "effect";
import { createInbox, type NatsConnection, type Subscription } from "@nats-io/transport-node";
import { MalformedMessage, type RemoteBusy, RemoteUnavailable } from "../../protocol/errors.ts";
import { isSafeToken, type Subjects } from "../../protocol/subjects.ts";
import { BlobRef } from "../../protocol/wire.ts";
import type { PullBudget } from "./pull-budget.ts";

/** Room left under the max payload for the frame head, subject and NATS headers. */
const PAYLOAD_HEADROOM = 4 * 1024;
/** Bigger chunks only add latency per request; 1 MB is NATS's default ceiling anyway. */
const MAX_CHUNK_BYTES = 1024 * 1024 - PAYLOAD_HEADROOM;
/** Chunk requests in flight per transfer. */
const PULL_WINDOW = 4;
/** Pulled blobs above this size are refused: a bad ref must not make us allocate gigabytes. */
export const MAX_BLOB_BYTES = 256 * 1024 * 1024;
/** A chunk request of this sequence number (published, not asked) ends the offer early. */
const DONE = 0xffff_ffff;

/** Largest payload this connection may publish (the server's max_payload). */
export const maxPayloadOf = (nc: NatsConnection): number => nc.info?.max_payload ?? 1024 * 1024;

/** Frames at or below this size go as they are; larger ones as blobs. */
export const inlineLimitOf = (nc: NatsConnection): number => maxPayloadOf(nc) - PAYLOAD_HEADROOM;

/** Extra time a request may take because its payload of `bytes` is pulled first (1 s per MB). */
export const transferAllowanceMs = (bytes: number): number => Math.ceil(bytes / (1024 * 1024)) * 1_000;

/** A node's connection as the chunked path uses it: one per node, shared by every endpoint. */
export interface BlobTransport {
  readonly nc: NatsConnection;
  /** This node's inbox prefix (Subjects.nodeInbox): its offers are inboxes under it. */
  readonly inboxPrefix: string;
  /** Every node's inbox (Subjects.nodeInboxes): references to subjects outside it are refused. */
  readonly peerInboxes: string;
  /** What this node may pull at once. */
  readonly budget: PullBudget;
}

export const makeBlobTransport = (nc: NatsConnection, subjects: Subjects, nodeId: string, budget: PullBudget): BlobTransport => ({
  nc,
  inboxPrefix: subjects.nodeInbox(nodeId),
  peerInboxes: subjects.nodeInboxes,
  budget,
});

/**
 * The node offering a blob on `subject`, when the subject is one of the inboxes nodes offer
 * on (`<peerInboxes>.<node>.<token>`); undefined for any other subject.
 */
const offeringPeer = (peerInboxes: string, subject: string): string | undefined => {
  if (!subject.startsWith(`${peerInboxes}.`)) return undefined;
  const tokens = subject.slice(peerInboxes.length + 1).split(".");
  return tokens.length === 2 && tokens.every(isSafeToken) ? tokens[0] : undefined;
};

export interface BlobOffer {
  readonly ref: BlobRef;
  /** Stops serving chunks (idempotent). */
  readonly close: () => void;
}

/**
 * Serves `bytes` on a fresh inbox under `inboxPrefix` (this node's, so pullers accept it)
 * until the puller says it is done, `close` is called, or `ttlMs` passes (a puller that
 * vanished must not pin the bytes in memory).
 */
export const offerBlob = (nc: NatsConnection, inboxPrefix: string, bytes: Uint8Array, ttlMs: number): Effect.Effect<BlobOffer> =>
  Effect.gen(function* () {
    const chunkSize = Math.min(MAX_CHUNK_BYTES, inlineLimitOf(nc));
    const subject = createInbox(inboxPrefix);
    let subscription: Subscription | undefined;
    const withdraw = () => {
      subscription?.unsubscribe();
      subscription = undefined;
    };
    // Detached: the offer outlives the fiber that made it (a reply is pulled after its handler returned).
    const expiry = yield* Effect.forkDetach(Effect.sleep(ttlMs).pipe(Effect.andThen(Effect.sync(withdraw))));
    const close = () => {
      withdraw();
      expiry.interruptUnsafe();
    };
    subscription = nc.subscribe(subject, {
      callback: (error, msg) => {
        if (error || msg.data.length !== 4) return;
        const seq = Buffer.from(msg.data.buffer, msg.data.byteOffset, 4).readUInt32BE(0);
        if (seq === DONE) return close();
        const start = seq * chunkSize;
        // A request past the end gets an empty reply, which the puller reports as malformed.
        if (msg.reply) msg.respond(start < bytes.length ? bytes.subarray(start, start + chunkSize) : new Uint8Array());
      },
    });
    // However the subscription ends (closed, expired, or the connection closed), the timer goes
    // with it: a pending sleep would otherwise hold the bytes, and the process, until the TTL.
    void subscription.closed.then(() => expiry.interruptUnsafe());
    const sha256 = createHash("sha256").update(bytes).digest("hex");
    return { ref: { subject, size: bytes.length, chunkSize, sha256 }, close };
  });

const seqPayload = (seq: number) => {
  const payload = Buffer.allocUnsafe(4);
  payload.writeUInt32BE(seq, 0);
  return payload;
};

/** Tells the offer the puller is done with it, so the offering side lets go of the bytes now. */
const sayDone = (nc: NatsConnection, offer: string) =>
  Effect.sync(() => {
    try {
      nc.publish(offer, seqPayload(DONE));
    } catch {
      // closed or draining connection: the offer ends on its own TTL
    }
  });

/**
 * Pulls every chunk with PULL_WINDOW requests in flight into one buffer. Interrupting it
 * (a failed chunk interrupts the others, as does the deadline) stops every worker: no
 * further chunk is asked for, and replies still on their way are dropped on arrival.
 */
const pullChunks = (
  nc: NatsConnection,
  subject: string,
  ref: BlobRef,
  timeoutMs: number,
): Effect.Effect<Buffer, RemoteUnavailable | MalformedMessage> => {
  const chunks = Math.ceil(ref.size / ref.chunkSize);
  // Only `held` references the buffer, and it is emptied however the pull ends: a chunk
  // request left pending in the NATS client after an interruption holds an empty box until
  // its own timeout, not the bytes. Allocated on the first good chunk, not on the ref's word.
  const held: { buffer: Buffer | undefined } = { buffer: undefined };
  let next = 0;
  const pullOne = (seq: number) =>
    Effect.tryPromise({
      try: () => nc.request(ref.subject, seqPayload(seq), { timeout: timeoutMs }),
      catch: (error) =>
        new RemoteUnavailable({ subject, detail: `blob transfer failed: chunk ${seq} of ${chunks}: ${error instanceof Error ? error.message : String(error)}` }),
    }).pipe(
      Effect.flatMap((reply) => {
        const expected = Math.min(ref.chunkSize, ref.size - seq * ref.chunkSize);
        if (reply.data.length !== expected) {
          return Effect.fail(new MalformedMessage({ subject, detail: `chunk ${seq} has ${reply.data.length} bytes, expected ${expected}` }));
        }
        held.buffer ??= Buffer.allocUnsafe(ref.size);
        held.buffer.set(reply.data, seq * ref.chunkSize);
        return Effect.void;
      }),
    );
  const worker = Effect.gen(function* () {
    while (next < chunks) yield* pullOne(next++);
  });
  return Effect.all(Array.from({ length: Math.min(PULL_WINDOW, chunks) }, () => worker), { concurrency: "unbounded", discard: true }).pipe(
    Effect.flatMap(() => {
      const out = held.buffer ?? Buffer.alloc(0);
      const sha256 = createHash("sha256").update(out).digest("hex");
      if (sha256 !== ref.sha256) return Effect.fail(new MalformedMessage({ subject, detail: `blob checksum mismatch (${ref.size} bytes)` }));
      return Effect.succeed(out);
    }),
    Effect.ensuring(Effect.sync(() => (held.buffer = undefined))),
  );
};

/**
 * Pulls the blob `rawRef` names (as found in a blob frame, not yet validated). Its size is
 * reserved in the node's pull budget for as long as the caller's scope is open (close it
 * when done with the bytes); `subject` names the conversation in errors. The offer is told
 * to stop however the pull ends, unless the reference was refused: nothing is ever sent to
 * a subject that is not a node's inbox.
 */
export const fetchBlob = (
  transport: BlobTransport,
  subject: string,
  rawRef: unknown,
  timeoutMs: number,
): Effect.Effect<Buffer, RemoteUnavailable | RemoteBusy | MalformedMessage, Scope.Scope> =>
  Effect.gen(function* () {
    const decoded = Schema.decodeUnknownExit(BlobRef)(rawRef);
    if (Exit.isFailure(decoded)) return yield* new MalformedMessage({ subject, detail: "blob frame without a valid BlobRef" });
    const ref = decoded.value;
    const peer = offeringPeer(transport.peerInboxes, ref.subject);
    if (peer === undefined) {
      return yield* new MalformedMessage({ subject, detail: `blob reference to ${JSON.stringify(ref.subject)}, not a node inbox of this cluster` });
    }
    const { limits } = transport.budget;
    const largest = Math.min(MAX_BLOB_BYTES, limits.maxBytes, limits.maxBytesPerPeer);
    // Waiting would not help a blob larger than a cap: refused, not busy.
    if (ref.size > largest) return yield* new MalformedMessage({ subject, detail: `blob of ${ref.size} bytes is over the limit of ${largest}` });
    const deadline = timeoutMs + transferAllowanceMs(ref.size);
    return yield* transport.budget.reserve(peer, ref.size, subject).pipe(
      Effect.andThen(pullChunks(transport.nc, subject, ref, timeoutMs)),
      Effect.timeoutOrElse({
        duration: deadline,
        orElse: () => Effect.fail(new RemoteUnavailable({ subject, detail: `blob transfer of ${ref.size} bytes from ${peer} took over ${deadline} ms` })),
      }),
      Effect.ensuring(sayDone(transport.nc, ref.subject)),
    );
  });
