// The frame every actor message uses on NATS: JSON metadata plus an optional raw
// attachment (a mail body), so bodies are not inflated by base64.
//
//   [u32 big-endian JSON length][JSON (UTF-8)][attachment bytes…]
//
// NATS refuses payloads above its max payload (1 MB by default) and mail can be 50 MB,
// so a frame that is too large travels by reference: a *blob frame* carries only a
// BlobRef, and the receiver pulls the real frame in chunks from the sender
// (actors/runtime/blobs.ts). A blob frame sets the top bit of the length prefix, which a
// JSON length can never have (payloads are far below 2 GB); a decoder that does not know
// blob frames sees a length beyond the frame and reports it malformed, never misreads it.
import { Schema } from "effect";

export interface Frame {
  readonly json: unknown;
  readonly attachment: Uint8Array | undefined;
  /** Set on a blob frame: the JSON is a BlobRef naming where the real frame can be pulled. */
  readonly blob?: true;
}

const BLOB_FLAG = 0x8000_0000;

/** Where a large frame can be pulled from, chunk by chunk, and how to check it arrived whole. */
export const BlobRef = Schema.Struct({
  /** Subject answering chunk requests (an inbox of the sender, alive while the transfer lasts). */
  subject: Schema.String.check(Schema.isMinLength(1)),
  size: Schema.Int.check(Schema.isGreaterThanOrEqualTo(0)),
  chunkSize: Schema.Int.check(Schema.isGreaterThanOrEqualTo(1)),
  /** Hex SHA-256 of the whole frame. */
  sha256: Schema.String.check(Schema.isPattern(/^[0-9a-f]{64}$/)),
});
export type BlobRef = typeof BlobRef.Type;

export const encodeFrame = (json: unknown, attachment?: Uint8Array): Uint8Array => {
  const head = Buffer.from(JSON.stringify(json), "utf8");
  const frame = Buffer.allocUnsafe(4 + head.length + (attachment?.length ?? 0));
  frame.writeUInt32BE(head.length, 0);
  head.copy(frame, 4);
  if (attachment) frame.set(attachment, 4 + head.length);
  return frame;
};

export const encodeBlobFrame = (ref: BlobRef): Uint8Array => {
  const frame = Buffer.from(encodeFrame(ref));
  frame.writeUInt32BE((frame.readUInt32BE(0) | BLOB_FLAG) >>> 0, 0);
  return frame;
};

/** Returns a string describing what is wrong instead of throwing. */
export const decodeFrame = (data: Uint8Array): Frame | string => {
  if (data.length < 4) return "frame shorter than its length prefix";
  const bytes = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  const prefix = bytes.readUInt32BE(0);
  const blob = (prefix & BLOB_FLAG) !== 0;
  const jsonLength = blob ? prefix & ~BLOB_FLAG : prefix;
  if (4 + jsonLength > bytes.length) return "frame JSON length exceeds the frame";
  let json: unknown;
  try {
    json = JSON.parse(bytes.subarray(4, 4 + jsonLength).toString("utf8"));
  } catch (error) {
    return `frame JSON does not parse: ${(error as Error).message}`;
  }
  const rest = bytes.subarray(4 + jsonLength);
  if (blob) return rest.length > 0 ? "blob frame with an attachment" : { json, attachment: undefined, blob: true };
  return { json, attachment: rest.length > 0 ? rest : undefined };
};
