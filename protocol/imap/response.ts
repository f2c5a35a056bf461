// Pieces of IMAP responses (RFC 3501 §7, §9): strings quoted or as literals, NIL,
// parenthesised lists, dates, and UID sets for UIDPLUS. Pure; the server joins them.

/** A string as a quoted string when it can be one, else as a literal (8-bit, CR/LF, long). */
const imapString = (value: string): string => {
  if (value.length < 1024 && /^[\x20-\x7e]*$/.test(value)) return `"${value.replace(/[\\"]/g, (c) => `\\${c}`)}"`;
  return `{${Buffer.byteLength(value, "utf8")}}\r\n${value}`;
};

export const nstring = (value: string | undefined | null): string => (value === undefined || value === null ? "NIL" : imapString(value));

/** A mailbox name: an atom when it is one, else quoted (or a literal). */
export const mailboxName = (name: string): string => (/^[A-Za-z0-9_.\-/]+$/.test(name) && name.toUpperCase() !== "NIL" ? name : imapString(name));

export const list = (items: ReadonlyArray<string>): string => `(${items.join(" ")})`;

const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
const pad = (n: number) => String(n).padStart(2, "0");

/** INTERNALDATE as "dd-Mon-yyyy hh:mm:ss +0000" (always UTC). */
export const internalDate = (ms: number): string => {
  const d = new Date(ms);
  return `"${pad(d.getUTCDate())}-${MONTHS[d.getUTCMonth()]}-${d.getUTCFullYear()} ${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())} +0000"`;
};

/** Numbers as a compact sequence set ("1:3,7"), in the order given (UIDPLUS keeps source and target orders paired). */
export const uidSet = (numbers: ReadonlyArray<number>): string => {
  const ranges: string[] = [];
  let start: number | undefined;
  let last: number | undefined;
  for (const n of numbers) {
    if (start !== undefined && last !== undefined && n === last + 1) {
      last = n;
      continue;
    }
    if (start !== undefined) ranges.push(start === last ? `${start}` : `${start}:${last}`);
    start = last = n;
  }
  if (start !== undefined) ranges.push(start === last ? `${start}` : `${start}:${last}`);
  return ranges.join(",");
};
