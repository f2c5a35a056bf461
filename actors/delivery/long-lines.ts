// RFC 5321 §4.5.3.1.6: a line of text is at most 1000 octets with its CRLF. A message with
// a longer line is refused at DATA (`smtp.longLines: "reject"`, the default), or accepted
// and folded before it is relayed (`"encode"`): no line over 998 octets ever leaves a node.
//
// Folding is what Postfix does (`smtp_line_length_limit`): CRLF and a space go in after
// every 998 octets of a line, so a header line becomes a continuation and body text
// keeps every character, with a line break and a space in it. It changes the body, so a
// DKIM signature made at acceptance no longer verifies on such a message; use "reject"
// where mail is signed.

export const MAX_LINE_OCTETS = 998;

export type LongLines = "reject" | "encode";

const CR = 0x0d;
const LF = 0x0a;

/** Whether some line is longer than MAX_LINE_OCTETS (CR and LF not counted). */
export const hasLongLine = (bytes: Uint8Array): boolean => {
  let run = 0;
  for (let i = 0; i < bytes.length; i++) {
    const byte = bytes[i]!;
    if (byte === LF) run = 0;
    else if (byte !== CR && ++run > MAX_LINE_OCTETS) return true;
  }
  return false;
};

/** The message with CRLF SP after every MAX_LINE_OCTETS octets of each line (unchanged when no line is too long). */
export const foldLongLines = (bytes: Uint8Array): Uint8Array => {
  if (!hasLongLine(bytes)) return bytes;
  const out: number[] = [];
  let run = 0;
  for (let i = 0; i < bytes.length; i++) {
    const byte = bytes[i]!;
    if (byte === LF || byte === CR) {
      if (byte === LF) run = 0;
      out.push(byte);
      continue;
    }
    if (run === MAX_LINE_OCTETS) {
      out.push(CR, LF, 0x20);
      run = 1;
    }
    out.push(byte);
    run++;
  }
  return Uint8Array.from(out);
};
