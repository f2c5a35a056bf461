// Reads a DATA stream (already dot-unstuffed by smtp-server) into the spool chunk by
// chunk, checking what RFC 5321 forbids on the way: bare CR or LF (the SMTP smuggling
// family, CVE-2023-51764), NUL bytes, and 8-bit octets without BODY=8BITMIME. The
// header section is held back (bounded) so trace and missing headers can go first, and
// so it can be rewritten before it is stored (forged Authentication-Results removed). An
// observer (inbound authentication) sees the message as the client sent it.
import { isAscii } from "node:buffer";
import type { Readable } from "node:stream";
import type { BodyWriter } from "../queue/spool.ts";

const CR = 13;
const LF = 10;

export type BareLineEndings = "reject" | "normalize";

export interface IngestOptions {
  readonly bareLineEndings: BareLineEndings;
  /** Whether octets ≥ 0x80 are allowed (BODY=8BITMIME, or configured to accept). */
  readonly allow8bit: boolean;
  /** Headers to put first, given the message's own header section (Received, Message-ID…). */
  readonly prepend: (headerSection: string) => string;
  /** Refuse a message with a line longer than this many octets, CRLF not counted (RFC 5321 §4.5.3.1.6: 998); unset: any length. */
  readonly maxLineOctets?: number | undefined;
  /**
   * Sees the message as the client sent it (line endings repaired, nothing added or removed),
   * the header section in one piece once it ended; a promise asks the client to wait.
   */
  readonly observe?: ((bytes: Buffer) => Promise<void> | undefined) | undefined;
  /** Rewrites the header section before it is stored; `prepend` sees it as it was sent. */
  readonly rewriteHeader?: ((headerSection: string) => string) | undefined;
  /**
   * The header section must end within this many bytes, or the message is refused
   * ("header-too-large"). Unset: at most 64 KiB is held back and a longer header section
   * streams on unchanged (neither rewritten nor refused).
   */
  readonly maxHeaderBytes?: number | undefined;
}

export type IngestProblem = "bare-line-ending" | "nul" | "8bit-without-8bitmime" | "too-large" | "line-too-long" | "header-too-large";

/**
 * The longest line of a stream read in chunks: `run` is the length of the line still open
 * at the end of the previous chunk. CR and LF do not count. Lines and CRs are found with
 * indexOf (native, a few per message) rather than byte by byte in JavaScript, and without a
 * view object per line (each was an allocation, 80 of them for a 5 KB message).
 */
export const longestLine = (chunk: Uint8Array, run: number): { longest: number; run: number } => {
  const bytes = asBuffer(chunk);
  const crs = crCounter(bytes);
  let longest = 0;
  let start = 0;
  let current = run;
  for (let lf = bytes.indexOf(LF); lf !== -1; lf = bytes.indexOf(LF, start)) {
    longest = Math.max(longest, current + lf - start - crs.between(start, lf));
    current = 0;
    start = lf + 1;
  }
  current += bytes.length - start - crs.between(start, bytes.length);
  return { longest: Math.max(longest, current), run: current };
};

/**
 * Counts the CRs of bytes[start, end) for ranges that move forward through the buffer. It
 * remembers where the next CR is, so a stretch without one is searched once, not again for
 * every line in it: a chunk of short CR-less lines (bare LF) stays linear, not quadratic.
 */
const crCounter = (bytes: Buffer) => {
  /** The first CR at or after the last search's start (bytes.length: none). */
  let next = -1;
  return {
    between: (start: number, end: number): number => {
      if (next < start) {
        next = bytes.indexOf(CR, start);
        if (next === -1) next = bytes.length;
      }
      if (next >= end) return 0;
      // Usually the one CR ending the line; more are counted one by one.
      let count = 0;
      for (let i = next; i < end; i++) if (bytes[i] === CR) count++;
      return count;
    },
  };
};

const asBuffer = (bytes: Uint8Array): Buffer => (Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength));

export interface IngestResult {
  readonly problem: IngestProblem | undefined;
  readonly size: number;
}

/** Bytes of header section held back at most; a longer header section streams on unchanged. */
const HEADER_LIMIT = 64 * 1024;

/** Rewrites bare CR and bare LF as CRLF. `carryCR`: the previous chunk ended in CR (held back). */
export const normalizeLineEndings = (chunk: Uint8Array, carryCR: boolean): { out: Buffer; endsInCR: boolean } => {
  const out = Buffer.allocUnsafe(chunk.length * 2 + 2);
  let n = 0;
  let pendingCR = carryCR;
  for (const byte of chunk) {
    if (pendingCR) {
      out[n++] = CR;
      out[n++] = LF;
      pendingCR = false;
      if (byte === LF) continue; // that CR had its LF
    }
    if (byte === CR) {
      pendingCR = true;
    } else if (byte === LF) {
      out[n++] = CR;
      out[n++] = LF;
    } else {
      out[n++] = byte;
    }
  }
  return { out: out.subarray(0, n), endsInCR: pendingCR };
};

/** True when the chunk has a bare CR or LF. `carryCR`: the previous chunk ended in CR. Scans with indexOf, line by line. */
export const hasBareLineEnding = (chunk: Uint8Array, carryCR: boolean): boolean => {
  const bytes = asBuffer(chunk);
  if (bytes.length === 0) return false;
  if (carryCR && bytes[0] !== LF) return true; // that CR was bare
  for (let lf = bytes.indexOf(LF); lf !== -1; lf = bytes.indexOf(LF, lf + 1)) {
    if (lf === 0 ? !carryCR : bytes[lf - 1] !== CR) return true;
  }
  // A CR as the last byte is judged with the next chunk (carryCR).
  for (let cr = bytes.indexOf(CR); cr !== -1 && cr < bytes.length - 1; cr = bytes.indexOf(CR, cr + 1)) {
    if (bytes[cr + 1] !== LF) return true;
  }
  return false;
};

const has8bit = (bytes: Uint8Array) => !isAscii(bytes);

/** smtp-server's data stream: `sizeExceeded` turns true once more than the SIZE limit arrived. */
type DataStream = Readable & { sizeExceeded?: boolean };

/**
 * Resolves once the stream ended (with the problem that refuses it, if any); rejects when
 * it ends early (the client disconnected). The caller discards the body unless it commits it.
 */
export const ingest = (stream: Readable, body: BodyWriter, options: IngestOptions): Promise<IngestResult> =>
  new Promise((resolve, reject) => {
    let problem: IngestProblem | undefined;
    let carryCR = false;
    let lineRun = 0;
    let header: Buffer[] | undefined = [];
    let headerBytes = 0;

    const headerLimit = options.maxHeaderBytes ?? HEADER_LIMIT;

    /** Pauses the client until every consumer that asked to wait caught up, so a large body never piles up in memory. */
    const waitFor = (waits: ReadonlyArray<Promise<void> | undefined>) => {
      const pending = waits.filter((wait) => wait !== undefined);
      if (pending.length === 0) return;
      stream.pause();
      void Promise.all(pending).then(() => stream.resume());
    };

    /** Stores `stored` and shows `sent` (what the client sent for it) to the observer. */
    const pass = (stored: ReadonlyArray<Buffer>, sent: Buffer) => waitFor([...stored.map((bytes) => body.append(bytes)), options.observe?.(sent)]);

    const write = (bytes: Buffer) => {
      if (!header) return pass([bytes], bytes);
      header.push(bytes);
      headerBytes += bytes.length;
      const joined = Buffer.concat(header);
      // The header section ends at the first empty line (or is empty when the message starts with one).
      const end = joined.subarray(0, 2).toString("latin1") === "\r\n" ? -2 : joined.indexOf("\r\n\r\n");
      if (end === -1 && headerBytes >= headerLimit && options.maxHeaderBytes !== undefined) {
        header = undefined;
        problem = "header-too-large";
        return body.discard();
      }
      if (end !== -1 || headerBytes >= headerLimit) releaseHeader(joined, end !== -1 ? end + 2 : joined.length, end !== -1);
    };

    /** `complete`: the whole header section is there; only then is it rewritten (a field may be cut at the limit). */
    const releaseHeader = (joined: Buffer, headerEnd: number, complete: boolean) => {
      header = undefined;
      const section = joined.subarray(0, headerEnd).toString("latin1");
      // UTF-8: the node's own fields are ASCII but for an SMTPUTF8 recipient (latin1 would keep the
      // low byte of each character, and a character's low byte can be a CR or LF).
      const first = Buffer.from(options.prepend(section), "utf8");
      const rewritten = complete ? (options.rewriteHeader?.(section) ?? section) : section;
      if (rewritten === section) return pass([first, joined], joined);
      pass([first, Buffer.from(rewritten, "latin1"), joined.subarray(headerEnd)], joined);
    };

    stream.on("data", (chunk: Buffer) => {
      if (problem) return; // drain the rest; the transaction will be refused
      // smtp-server counts bytes as they arrive: past the limit nothing more is kept.
      if ((stream as DataStream).sizeExceeded === true) problem = "too-large";
      else if (chunk.indexOf(0) >= 0) problem = "nul";
      else if (!options.allow8bit && has8bit(chunk)) problem = "8bit-without-8bitmime";
      else if (options.bareLineEndings === "reject" && hasBareLineEnding(chunk, carryCR)) problem = "bare-line-ending";
      else if (options.maxLineOctets !== undefined) {
        const lines = longestLine(chunk, lineRun);
        lineRun = lines.run;
        if (lines.longest > options.maxLineOctets) problem = "line-too-long";
      }
      if (problem) return body.discard(); // the transaction is refused: what was written goes now
      if (options.bareLineEndings === "normalize") {
        const normalized = normalizeLineEndings(chunk, carryCR);
        carryCR = normalized.endsInCR;
        write(normalized.out);
      } else {
        carryCR = chunk[chunk.length - 1] === CR;
        write(chunk);
      }
    });
    // The client went away mid-DATA (smtp-server destroys the stream with an error then).
    stream.once("error", reject);
    // A stream closes after its end too: the error (its stack trace is not free) is made only for one that did not end.
    let ended = false;
    stream.once("close", () => {
      if (!ended) reject(new Error("the data stream closed before its end"));
    });
    stream.once("end", () => {
      ended = true;
      if (carryCR && options.bareLineEndings === "normalize" && !problem) write(Buffer.from([CR, LF]));
      if (header && !problem) {
        const joined = Buffer.concat(header);
        releaseHeader(joined, joined.length, true); // the message ended: it was all header
      }
      const sizeExceeded = (stream as DataStream).sizeExceeded === true;
      resolve({ problem: problem ?? (sizeExceeded ? "too-large" : undefined), size: body.size() });
    });
  });
