// The frame every actor message uses on NATS: JSON metadata plus an optional raw
// attachment (a mail body), so bodies are not inflated by base64.
//
//   [u32 big-endian JSON length][JSON (UTF-8)][attachment bytes…]

export interface Frame {
  readonly json: unknown;
  readonly attachment: Uint8Array | undefined;
}

export const encodeFrame = (json: unknown, attachment?: Uint8Array): Uint8Array => {
  const head = Buffer.from(JSON.stringify(json), "utf8");
  const frame = Buffer.allocUnsafe(4 + head.length + (attachment?.length ?? 0));
  frame.writeUInt32BE(head.length, 0);
  head.copy(frame, 4);
  if (attachment) frame.set(attachment, 4 + head.length);
  return frame;
};

/** Returns a string describing what is wrong instead of throwing. */
export const decodeFrame = (data: Uint8Array): Frame | string => {
  if (data.length < 4) return "frame shorter than its length prefix";
  const bytes = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  const jsonLength = bytes.readUInt32BE(0);
  if (4 + jsonLength > bytes.length) return "frame JSON length exceeds the frame";
  let json: unknown;
  try {
    json = JSON.parse(bytes.subarray(4, 4 + jsonLength).toString("utf8"));
  } catch (error) {
    return `frame JSON does not parse: ${(error as Error).message}`;
  }
  const rest = bytes.subarray(4 + jsonLength);
  return { json, attachment: rest.length > 0 ? rest : undefined };
};
