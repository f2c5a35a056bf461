// Splits the bytes a client sends into whole IMAP commands, literals included, before
// anything is parsed: a command line that announces a literal (`{n}` or, LITERAL+,
// `{n+}`) goes on after the literal's n octets, so those octets are always part of the
// command that announced them and are never read as a command of their own, also when
// the command is refused. Sizes are bounded: a line longer than `maxLineOctets` or a
// literal above `maxLiteralOctets` is refused; the bytes of a refused command are read
// and dropped (a non-synchronizing literal's too: the client sends them regardless) up
// to its end, without being kept.
//
// Pure and synchronous: feed it chunks, act on the events it returns. The server sends
// "+ " on `Continue` (a synchronizing literal it accepts); a refused synchronizing literal
// gets its BAD at once and the client, never having seen "+", sends no literal bytes.
import type { ImapBad } from "./command.ts";

export type FramerEvent =
  /** One whole command, its final CRLF removed. */
  | { readonly _tag: "Command"; readonly bytes: Buffer }
  /** A synchronizing literal was accepted: answer "+ …" so the client sends it. */
  | { readonly _tag: "Continue" }
  /** The command is refused; `tag` is the command's tag when it had one. */
  | { readonly _tag: "Refused"; readonly tag: string | undefined; readonly bad: ImapBad };

export interface FramerLimits {
  /** Octets of one line of a command, outside literals. */
  readonly maxLineOctets: number;
  /** Octets of one literal (APPEND's message is one). */
  readonly maxLiteralOctets: number;
  /** Octets of a whole command, literals included. */
  readonly maxCommandOctets: number;
}

export interface Framer {
  readonly push: (chunk: Uint8Array) => ReadonlyArray<FramerEvent>;
  /** Bytes received but not yet part of a whole command. */
  readonly pending: () => number;
  /** New limits for the commands that follow (a server raises them once the client logged in). */
  readonly setLimits: (limits: FramerLimits) => void;
}

const LITERAL_AT_END = /\{(\d{1,20})(\+?)\}$/;

type Mode =
  /** Reading a line of the command. */
  | { readonly _tag: "Line" }
  /** Reading `remaining` literal octets into the command. */
  | { _tag: "Literal"; remaining: number }
  /** Dropping a refused command: `skip` literal octets first, then lines up to one that ends it. */
  | { _tag: "Discard"; skip: number; lineTooLong: boolean };

export const makeFramer = (initial: FramerLimits): Framer => {
  let limits = initial;
  /** The command so far: whole lines and literals. */
  let parts: Buffer[] = [];
  let partsOctets = 0;
  /** The unfinished line (or literal) bytes. */
  let buffer: Buffer = Buffer.alloc(0);
  let mode: Mode = { _tag: "Line" };

  const tagOf = (line: Buffer): string | undefined => {
    const space = line.indexOf(0x20);
    const tag = line.toString("latin1", 0, space === -1 ? Math.min(line.length, 64) : space);
    return /^[\x21-\x7e]{1,64}$/.test(tag) && !/[(){%*"\\+]/.test(tag) ? tag : undefined;
  };

  const reset = () => {
    parts = [];
    partsOctets = 0;
  };

  const firstLine = (current: Buffer): Buffer => (parts.length > 0 ? parts[0]! : current);

  const push = (chunk: Uint8Array): ReadonlyArray<FramerEvent> => {
    const events: FramerEvent[] = [];
    buffer = buffer.length === 0 ? Buffer.from(chunk) : Buffer.concat([buffer, chunk]);
    let offset = 0;
    for (;;) {
      if (mode._tag === "Literal") {
        const take = Math.min(mode.remaining, buffer.length - offset);
        if (take === 0) break;
        parts.push(buffer.subarray(offset, offset + take));
        partsOctets += take;
        offset += take;
        mode.remaining -= take;
        if (mode.remaining > 0) break;
        mode = { _tag: "Line" };
        continue;
      }
      if (mode._tag === "Discard" && mode.skip > 0) {
        const take = Math.min(mode.skip, buffer.length - offset);
        if (take === 0) break;
        offset += take;
        mode.skip -= take;
        continue;
      }
      const lf = buffer.indexOf(0x0a, offset);
      if (lf === -1) {
        const unfinished = buffer.length - offset;
        if (unfinished > limits.maxLineOctets) {
          if (mode._tag === "Line") {
            events.push({ _tag: "Refused", tag: tagOf(firstLine(buffer.subarray(offset))), bad: { _tag: "LineTooLong", limit: limits.maxLineOctets } });
            reset();
          }
          // Drop what we have; go on dropping until the line ends.
          mode = { _tag: "Discard", skip: 0, lineTooLong: true };
          offset = buffer.length;
        }
        break;
      }
      const end = lf > offset && buffer[lf - 1] === 0x0d ? lf - 1 : lf;
      const line = buffer.subarray(offset, end);
      offset = lf + 1;
      const literal = LITERAL_AT_END.exec(line.toString("latin1", Math.max(0, line.length - 24)));
      if (mode._tag === "Discard") {
        // A refused command's line; one announcing a literal continues the command.
        if (literal && !mode.lineTooLong) mode.skip = literal[2] === "+" ? Number(literal[1]) : 0;
        if (!literal || mode.lineTooLong || literal[2] !== "+") mode = { _tag: "Line" };
        continue;
      }
      if (line.length > limits.maxLineOctets) {
        events.push({ _tag: "Refused", tag: tagOf(firstLine(line)), bad: { _tag: "LineTooLong", limit: limits.maxLineOctets } });
        reset();
        continue;
      }
      if (!literal) {
        parts.push(line);
        const bytes = parts.length === 1 ? Buffer.from(parts[0]!) : Buffer.concat(parts);
        reset();
        events.push({ _tag: "Command", bytes });
        continue;
      }
      const size = Number(literal[1]);
      const nonSynchronizing = literal[2] === "+";
      const total = partsOctets + line.length + 2 + size;
      if (size > limits.maxLiteralOctets || total > limits.maxCommandOctets) {
        const tag = tagOf(firstLine(line));
        const limit = size > limits.maxLiteralOctets ? limits.maxLiteralOctets : limits.maxCommandOctets;
        events.push({ _tag: "Refused", tag, bad: { _tag: "LiteralTooLarge", octets: size, limit } });
        reset();
        // A synchronizing literal is never sent once refused; a non-synchronizing one is, and is dropped.
        if (nonSynchronizing) mode = { _tag: "Discard", skip: size, lineTooLong: false };
        continue;
      }
      parts.push(line, CRLF);
      partsOctets += line.length + 2;
      if (!nonSynchronizing) events.push({ _tag: "Continue" });
      mode = { _tag: "Literal", remaining: size };
    }
    buffer = offset >= buffer.length ? Buffer.alloc(0) : buffer.subarray(offset);
    return events;
  };

  return {
    push,
    pending: () => partsOctets + buffer.length,
    setLimits: (next) => {
      limits = next;
    },
  };
};

const CRLF = Buffer.from("\r\n");
