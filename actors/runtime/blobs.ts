// The chunked path for frames larger than NATS's max payload (mail bodies up to 50 MB
// against NATS's 1 MB default). The side holding the bytes *offers* them on a fresh inbox
// and sends only a BlobRef; the other side *pulls* the chunks with a few requests in
// flight, checks the SHA-256, and says when it is done. Pulling (rather than pushing)
// gives flow control for free: nothing arrives faster than the receiver asks, so no
// slow-consumer drops. Nothing is written to JetStream: a blob lives only as long as
// the transfer, and a sender that dies simply makes the pull fail (the caller defers).
// An offer nobody finishes is withdrawn after its TTL by a fiber sleeping on the Clock of
// the fiber that made the offer (so TestClock drives it in tests).
import { createHash } from "node:crypto";
import { Effect, Exit, Schema } from "effect";
import { createInbox, type NatsConnection, type Subscription } from "@nats-io/transport-node";
import { MalformedMessage, RemoteUnavailable } from "../../protocol/errors.ts";
import { BlobRef } from "../../protocol/wire.ts";

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

export interface BlobOffer {
  readonly ref: BlobRef;
  /** Stops serving chunks (idempotent). */
  readonly close: () => void;
}

/**
 * Serves `bytes` on a fresh inbox until the puller says it is done, `close` is called,
 * or `ttlMs` passes (a puller that vanished must not pin the bytes in memory).
 */
export const offerBlob = (nc: NatsConnection, bytes: Uint8Array, ttlMs: number): Effect.Effect<BlobOffer> =>
  Effect.gen(function* () {
    const chunkSize = Math.min(MAX_CHUNK_BYTES, inlineLimitOf(nc));
    const subject = createInbox();
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

class PullFailed extends Error {
  constructor(readonly kind: "unavailable" | "malformed", detail: string) {
    super(detail);
  }
}

/** Pulls every chunk with PULL_WINDOW requests in flight into one buffer. */
const pull = async (nc: NatsConnection, ref: BlobRef, timeoutMs: number): Promise<Buffer> => {
  const out = Buffer.allocUnsafe(ref.size);
  const chunks = Math.ceil(ref.size / ref.chunkSize);
  let next = 0;
  const worker = async () => {
    while (next < chunks) {
      const seq = next++;
      const expected = Math.min(ref.chunkSize, ref.size - seq * ref.chunkSize);
      const reply = await nc.request(ref.subject, seqPayload(seq), { timeout: timeoutMs }).catch((error: unknown) => {
        throw new PullFailed("unavailable", `chunk ${seq} of ${chunks}: ${error instanceof Error ? error.message : String(error)}`);
      });
      if (reply.data.length !== expected) throw new PullFailed("malformed", `chunk ${seq} has ${reply.data.length} bytes, expected ${expected}`);
      out.set(reply.data, seq * ref.chunkSize);
    }
  };
  await Promise.all(Array.from({ length: Math.min(PULL_WINDOW, chunks) }, worker));
  const sha256 = createHash("sha256").update(out).digest("hex");
  if (sha256 !== ref.sha256) throw new PullFailed("malformed", `blob checksum mismatch (${ref.size} bytes)`);
  return out;
};

/**
 * Pulls the blob `rawRef` names (as found in a blob frame, not yet validated).
 * `subject` names the conversation in errors. The offer is told to stop either way.
 */
export const fetchBlob = (
  nc: NatsConnection,
  subject: string,
  rawRef: unknown,
  timeoutMs: number,
): Effect.Effect<Buffer, RemoteUnavailable | MalformedMessage> =>
  Effect.gen(function* () {
    const decoded = Schema.decodeUnknownExit(BlobRef)(rawRef);
    if (Exit.isFailure(decoded)) return yield* new MalformedMessage({ subject, detail: "blob frame without a valid BlobRef" });
    const ref = decoded.value;
    if (ref.size > MAX_BLOB_BYTES) return yield* new MalformedMessage({ subject, detail: `blob of ${ref.size} bytes is over the limit` });
    return yield* Effect.tryPromise({
      try: () => pull(nc, ref, timeoutMs),
      catch: (error) =>
        error instanceof PullFailed && error.kind === "malformed"
          ? new MalformedMessage({ subject, detail: error.message })
          : new RemoteUnavailable({ subject, detail: `blob transfer failed: ${error instanceof Error ? error.message : String(error)}` }),
    }).pipe(
      Effect.ensuring(
        Effect.sync(() => {
          try {
            nc.publish(ref.subject, seqPayload(DONE));
          } catch {
            // closed or draining connection: the offer ends on its own TTL
          }
        }),
      ),
    );
  });
