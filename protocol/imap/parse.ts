// The IMAP command parser: the bytes of one whole command (its literals inline, as the
// framer assembled them; the final CRLF removed) in, a tagged command value or a typed
// BAD reason out. Pure: no I/O, no clock. RFC 3501 §9 is the grammar; keywords are
// case-insensitive, mailbox names and strings are taken as sent (UTF-8, as clients
// that ENABLE UTF8=ACCEPT or send raw 8-bit names do; modified UTF-7 is not decoded).
import type { FetchItem, ImapBad, ImapCommand, Partial, SearchKey, Section, SequenceRange, SequenceSet, StatusItem } from "./command.ts";

export type Parsed =
  | { readonly _tag: "Command"; readonly tag: string; readonly command: ImapCommand }
  /** `tag` is absent when not even a tag could be read (the reply is then `* BAD`). */
  | { readonly _tag: "Bad"; readonly tag?: string | undefined; readonly bad: ImapBad };

/** Parentheses nested deeper than this (SEARCH, ID) are refused: a bound on the parser's stack. */
const MAX_NESTING = 32;

const SP = 0x20;
const LPAREN = 0x28;
const RPAREN = 0x29;
const DQUOTE = 0x22;
const BACKSLASH = 0x5c;
const LBRACE = 0x7b;
const LBRACKET = 0x5b;
const RBRACKET = 0x5d;

/** atom-specials (RFC 3501 §9): ( ) { SP CTL % * " \ ]; `]` may appear in flags' atoms as resp-specials. */
const isAtomChar = (byte: number): boolean =>
  byte > 0x20 && byte < 0x7f && byte !== LPAREN && byte !== RPAREN && byte !== LBRACE && byte !== 0x25 && byte !== 0x2a && byte !== DQUOTE && byte !== BACKSLASH && byte !== RBRACKET;

/** A tag: any atom char but '+' (RFC 3501 §9 tag). */
const isTagChar = (byte: number): boolean => isAtomChar(byte) && byte !== 0x2b;

class ParseFailure {
  constructor(readonly bad: ImapBad) {}
}

/** A read position over one command; each method reads one grammar element or throws ParseFailure. */
class Cursor {
  pos = 0;
  constructor(
    readonly bytes: Buffer,
    public verb: string,
  ) {}

  fail(expected: string): never {
    throw new ParseFailure({ _tag: "Syntax", verb: this.verb, expected, at: this.pos });
  }

  atEnd(): boolean {
    return this.pos >= this.bytes.length;
  }

  peek(): number | undefined {
    return this.bytes[this.pos];
  }

  /** Exactly one space (RFC 3501 is strict about it; a second space is a syntax error). */
  sp(): void {
    if (this.peek() !== SP) this.fail("a space");
    this.pos++;
  }

  /** A space if one follows, for optional arguments. */
  trySp(): boolean {
    if (this.peek() !== SP) return false;
    this.pos++;
    return true;
  }

  char(byte: number, what: string): void {
    if (this.peek() !== byte) this.fail(what);
    this.pos++;
  }

  tryChar(byte: number): boolean {
    if (this.peek() !== byte) return false;
    this.pos++;
    return true;
  }

  end(): void {
    if (!this.atEnd()) throw new ParseFailure({ _tag: "TrailingInput", verb: this.verb, at: this.pos });
  }

  /** A run of bytes that pass `accept`, as latin1 text (atoms are ASCII). */
  run(accept: (byte: number) => boolean, what: string): string {
    const start = this.pos;
    while (this.pos < this.bytes.length && accept(this.bytes[this.pos]!)) this.pos++;
    if (this.pos === start) this.fail(what);
    return this.bytes.toString("latin1", start, this.pos);
  }

  atom(): string {
    return this.run(isAtomChar, "an atom");
  }

  /** Next atom, upper-cased, without consuming it when `keyword` does not match. */
  tryKeyword(keyword: string): boolean {
    const end = this.pos + keyword.length;
    if (end > this.bytes.length) return false;
    if (this.bytes.toString("latin1", this.pos, end).toUpperCase() !== keyword) return false;
    const after = this.bytes[end];
    if (after !== undefined && isAtomChar(after) && after !== RBRACKET) return false;
    this.pos = end;
    return true;
  }

  number(): number {
    const digits = this.run((byte) => byte >= 0x30 && byte <= 0x39, "a number");
    const value = Number(digits);
    // number64 (RFC 9051) is the widest IMAP number; anything above JS's exact range is refused.
    if (!Number.isSafeInteger(value)) this.fail("a number within range");
    return value;
  }

  nzNumber(): number {
    const value = this.number();
    if (value === 0) this.fail("a non-zero number");
    return value;
  }

  /** quoted = DQUOTE *QUOTED-CHAR DQUOTE; only \" and \\ may be escaped; no CR/LF. */
  quoted(): string {
    this.char(DQUOTE, "a quoted string");
    const parts: number[] = [];
    for (;;) {
      const byte = this.peek();
      if (byte === undefined || byte === 0x0d || byte === 0x0a) this.fail("a closing quote");
      this.pos++;
      if (byte === DQUOTE) break;
      if (byte === BACKSLASH) {
        const escaped = this.peek();
        if (escaped !== DQUOTE && escaped !== BACKSLASH) this.fail("\\\" or \\\\ after a backslash");
        this.pos++;
        parts.push(escaped);
      } else parts.push(byte);
    }
    return Buffer.from(parts).toString("utf8");
  }

  /** A literal as the framer left it: `{n}` or `{n+}`, CRLF, then n octets. */
  literalBytes(): Buffer {
    this.char(LBRACE, "a literal");
    const size = this.number();
    this.tryChar(0x2b);
    this.char(0x7d, "}");
    if (!this.tryChar(0x0d) || !this.tryChar(0x0a)) this.fail("CRLF after a literal's size");
    if (this.pos + size > this.bytes.length) this.fail(`${size} literal octets`);
    const value = this.bytes.subarray(this.pos, this.pos + size);
    this.pos += size;
    return value;
  }

  string(): string {
    const byte = this.peek();
    if (byte === DQUOTE) return this.quoted();
    if (byte === LBRACE) return this.literalBytes().toString("utf8");
    return this.fail("a string");
  }

  /** astring = 1*ASTRING-CHAR / string; ASTRING-CHAR adds ']' to the atom chars. */
  astring(): string {
    const byte = this.peek();
    if (byte === DQUOTE || byte === LBRACE) return this.string();
    const start = this.pos;
    while (this.pos < this.bytes.length && (isAtomChar(this.bytes[this.pos]!) || this.bytes[this.pos] === RBRACKET)) this.pos++;
    if (this.pos === start) this.fail("an atom or string");
    return this.bytes.toString("utf8", start, this.pos);
  }

  /** nstring used by ID: NIL or a string. */
  nstring(): string | null {
    if (this.tryKeyword("NIL")) return null;
    return this.string();
  }

  /** list-mailbox: atom chars plus the wildcards % and *, or a string. */
  listMailbox(): string {
    const byte = this.peek();
    if (byte === DQUOTE || byte === LBRACE) return this.string();
    return this.run((b) => isAtomChar(b) || b === 0x25 || b === 0x2a || b === RBRACKET, "a mailbox pattern");
  }

  mailbox(): string {
    return this.astring();
  }

  /** A flag: \System, \* only where `allowWildcard`, or a keyword atom. */
  flag(): string {
    if (this.tryChar(BACKSLASH)) {
      if (this.tryChar(0x2a)) return "\\*";
      return `\\${this.atom()}`;
    }
    return this.atom();
  }

  flagList(): ReadonlyArray<string> {
    this.char(LPAREN, "(");
    const flags: string[] = [];
    if (this.tryChar(RPAREN)) return flags;
    for (;;) {
      flags.push(normalizeFlag(this.flag()));
      if (this.tryChar(RPAREN)) return flags;
      this.sp();
    }
  }

  sequenceSet(): SequenceSet {
    const start = this.pos;
    const text = this.run((byte) => (byte >= 0x30 && byte <= 0x39) || byte === 0x3a || byte === 0x2c || byte === 0x2a, "a sequence set");
    const set = parseSequenceSet(text);
    if (set === undefined) {
      this.pos = start;
      throw new ParseFailure({ _tag: "InvalidSequenceSet", verb: this.verb, text });
    }
    return set;
  }
}

/** System flags are case-insensitive: they are kept in their RFC spelling. Keywords as sent. */
const SYSTEM_FLAGS = new Map(["\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft", "\\Recent"].map((flag) => [flag.toUpperCase(), flag]));
const normalizeFlag = (flag: string): string => SYSTEM_FLAGS.get(flag.toUpperCase()) ?? flag;

/** `1:*`, `*:4`, `2,4:7,9` … as ranges (each range as written; resolving `*` needs the mailbox). */
export const parseSequenceSet = (text: string): SequenceSet | undefined => {
  const ranges: SequenceRange[] = [];
  for (const piece of text.split(",")) {
    const ends = piece.split(":");
    if (ends.length > 2) return undefined;
    const values = ends.map((end) => (end === "*" ? "*" : /^[1-9][0-9]*$/.test(end) && Number.isSafeInteger(Number(end)) ? Number(end) : undefined));
    if (values.some((value) => value === undefined)) return undefined;
    const [from, to = from] = values as Array<number | "*">;
    ranges.push({ from: from!, to: to! });
  }
  return ranges;
};

// ---------------------------------------------------------------------------
// Commands

export const parseCommand = (bytes: Buffer): Parsed => {
  let pos = 0;
  while (pos < bytes.length && isTagChar(bytes[pos]!)) pos++;
  if (pos === 0 || bytes[pos] !== SP) return { _tag: "Bad", bad: { _tag: "MissingTag" } };
  const tag = bytes.toString("latin1", 0, pos);
  pos++;
  const verbStart = pos;
  while (pos < bytes.length && isAtomChar(bytes[pos]!)) pos++;
  let verb = bytes.toString("latin1", verbStart, pos).toUpperCase();
  const cursor = new Cursor(bytes, verb);
  cursor.pos = pos;
  try {
    let uid = false;
    if (verb === "UID") {
      cursor.sp();
      verb = cursor.atom().toUpperCase();
      uid = true;
      if (!UID_VERBS.has(verb)) return { _tag: "Bad", tag, bad: { _tag: "UnknownCommand", verb: `UID ${verb}` } };
    }
    cursor.verb = uid ? `UID ${verb}` : verb;
    const command = parseVerb(verb, uid, cursor);
    if (command === undefined) return { _tag: "Bad", tag, bad: { _tag: "UnknownCommand", verb } };
    return { _tag: "Command", tag, command };
  } catch (error) {
    if (error instanceof ParseFailure) return { _tag: "Bad", tag, bad: error.bad };
    throw error;
  }
};

const UID_VERBS = new Set(["FETCH", "STORE", "SEARCH", "COPY", "MOVE", "EXPUNGE"]);

/** Reads the arguments of `verb` at `at`; undefined when the verb is unknown. */
const parseVerb = (verb: string, uid: boolean, c: Cursor): ImapCommand | undefined => {
  const done = <T extends ImapCommand>(command: T): T => {
    c.end();
    return command;
  };
  switch (verb) {
    case "CAPABILITY":
      return done({ _tag: "Capability" });
    case "NOOP":
      return done({ _tag: "Noop" });
    case "LOGOUT":
      return done({ _tag: "Logout" });
    case "STARTTLS":
      return done({ _tag: "StartTls" });
    case "CHECK":
      return done({ _tag: "Check" });
    case "CLOSE":
      return done({ _tag: "Close" });
    case "UNSELECT":
      return done({ _tag: "Unselect" });
    case "IDLE":
      return done({ _tag: "Idle" });
    case "NAMESPACE":
      return done({ _tag: "Namespace" });
    case "EXPUNGE": {
      if (!uid) return done({ _tag: "Expunge" });
      c.sp();
      return done({ _tag: "Expunge", uids: c.sequenceSet() });
    }
    case "LOGIN": {
      c.sp();
      const user = c.astring();
      c.sp();
      return done({ _tag: "Login", user, password: c.astring() });
    }
    case "AUTHENTICATE": {
      c.sp();
      const mechanism = c.atom().toUpperCase();
      // SASL-IR (RFC 4959): an initial response, "=" for an empty one.
      const initialResponse = c.trySp() ? c.run((b) => b > 0x20 && b < 0x7f, "a base64 initial response") : undefined;
      return done({ _tag: "Authenticate", mechanism, initialResponse });
    }
    case "SELECT":
    case "EXAMINE": {
      c.sp();
      const mailbox = c.mailbox();
      let condstore = false;
      if (c.trySp()) {
        // select-params (RFC 4466): only (CONDSTORE) is known.
        c.char(LPAREN, "(");
        if (!c.tryKeyword("CONDSTORE")) c.fail("CONDSTORE");
        c.char(RPAREN, ")");
        condstore = true;
      }
      return done({ _tag: "Select", mailbox, readOnly: verb === "EXAMINE", condstore });
    }
    case "CREATE":
    case "DELETE":
    case "SUBSCRIBE":
    case "UNSUBSCRIBE": {
      c.sp();
      const mailbox = c.mailbox();
      const tags = { CREATE: "Create", DELETE: "Delete", SUBSCRIBE: "Subscribe", UNSUBSCRIBE: "Unsubscribe" } as const;
      return done({ _tag: tags[verb], mailbox });
    }
    case "RENAME": {
      c.sp();
      const from = c.mailbox();
      c.sp();
      return done({ _tag: "Rename", from, to: c.mailbox() });
    }
    case "LIST":
    case "LSUB": {
      c.sp();
      const reference = c.mailbox();
      c.sp();
      return done({ _tag: "List", reference, pattern: c.listMailbox(), subscribedOnly: verb === "LSUB" });
    }
    case "STATUS": {
      c.sp();
      const mailbox = c.mailbox();
      c.sp();
      return done({ _tag: "Status", mailbox, items: statusItems(c) });
    }
    case "APPEND":
      return parseAppend(c);
    case "SEARCH":
      return parseSearch(c, uid);
    case "FETCH":
      return parseFetch(c, uid);
    case "STORE":
      return parseStore(c, uid);
    case "COPY":
    case "MOVE": {
      c.sp();
      const set = c.sequenceSet();
      c.sp();
      return done({ _tag: verb === "COPY" ? "Copy" : "Move", uid, set, mailbox: c.mailbox() });
    }
    case "ID":
      return parseId(c);
    case "ENABLE": {
      const capabilities: string[] = [];
      while (c.trySp()) capabilities.push(c.atom().toUpperCase());
      if (capabilities.length === 0) c.fail("a capability");
      return done({ _tag: "Enable", capabilities });
    }
    default:
      return undefined;
  }
};

const STATUS_ITEMS: ReadonlyArray<StatusItem> = ["MESSAGES", "RECENT", "UIDNEXT", "UIDVALIDITY", "UNSEEN", "HIGHESTMODSEQ", "SIZE"];

const statusItems = (c: Cursor): ReadonlyArray<StatusItem> => {
  c.char(LPAREN, "(");
  const items: StatusItem[] = [];
  for (;;) {
    const word = c.atom().toUpperCase() as StatusItem;
    if (!STATUS_ITEMS.includes(word)) c.fail(`a status item (${STATUS_ITEMS.join(" ")})`);
    items.push(word);
    if (c.tryChar(RPAREN)) return items;
    c.sp();
  }
};

const parseAppend = (c: Cursor): ImapCommand => {
  c.sp();
  const mailbox = c.mailbox();
  c.sp();
  let flags: ReadonlyArray<string> = [];
  let date: number | undefined;
  if (c.peek() === LPAREN) {
    flags = c.flagList();
    c.sp();
  }
  if (c.peek() === DQUOTE) {
    const text = c.quoted();
    date = parseDateTime(text);
    if (date === undefined) throw new ParseFailure({ _tag: "InvalidDate", text });
    c.sp();
  }
  const message = c.literalBytes();
  c.end();
  return { _tag: "Append", mailbox, flags, date, message };
};

const parseStore = (c: Cursor, uid: boolean): ImapCommand => {
  c.sp();
  const set = c.sequenceSet();
  c.sp();
  let unchangedSince: number | undefined;
  if (c.tryChar(LPAREN)) {
    // store-modifier (RFC 7162): (UNCHANGEDSINCE n)
    if (!c.tryKeyword("UNCHANGEDSINCE")) c.fail("UNCHANGEDSINCE");
    c.sp();
    unchangedSince = c.number();
    c.char(RPAREN, ")");
    c.sp();
  }
  const word = c.atom().toUpperCase();
  const match = /^([+-]?)FLAGS(\.SILENT)?$/.exec(word);
  if (!match) return c.fail("FLAGS, +FLAGS or -FLAGS");
  const mode = match[1] === "+" ? "add" : match[1] === "-" ? "remove" : "replace";
  c.sp();
  let flags: string[];
  if (c.peek() === LPAREN) flags = [...c.flagList()];
  else {
    // RFC 3501 allows the flags without parentheses too: flag *(SP flag).
    flags = [normalizeFlag(c.flag())];
    while (c.trySp()) flags.push(normalizeFlag(c.flag()));
  }
  c.end();
  return { _tag: "Store", uid, set, mode, silent: match[2] !== undefined, flags, unchangedSince };
};

const parseId = (c: Cursor): ImapCommand => {
  c.sp();
  if (c.tryKeyword("NIL")) {
    c.end();
    return { _tag: "Id", parameters: null };
  }
  c.char(LPAREN, "( or NIL");
  const parameters: Array<readonly [string, string | null]> = [];
  if (!c.tryChar(RPAREN)) {
    for (;;) {
      const name = c.string();
      c.sp();
      parameters.push([name, c.nstring()]);
      // RFC 2971: at most 30 pairs.
      if (parameters.length > 30) c.fail("at most 30 ID parameters");
      if (c.tryChar(RPAREN)) break;
      c.sp();
    }
  }
  c.end();
  return { _tag: "Id", parameters };
};

// ---------------------------------------------------------------------------
// FETCH

const parseFetch = (c: Cursor, uid: boolean): ImapCommand => {
  c.sp();
  const set = c.sequenceSet();
  c.sp();
  const items: FetchItem[] = [];
  if (c.tryChar(LPAREN)) {
    for (;;) {
      items.push(...fetchAtt(c));
      if (c.tryChar(RPAREN)) break;
      c.sp();
    }
  } else if (c.tryKeyword("ALL")) items.push(...macro("ALL"));
  else if (c.tryKeyword("FAST")) items.push(...macro("FAST"));
  else if (c.tryKeyword("FULL")) items.push(...macro("FULL"));
  else items.push(...fetchAtt(c));
  let changedSince: number | undefined;
  if (c.trySp()) {
    // fetch-modifier (RFC 7162): (CHANGEDSINCE n)
    c.char(LPAREN, "(");
    if (!c.tryKeyword("CHANGEDSINCE")) c.fail("CHANGEDSINCE");
    c.sp();
    changedSince = c.number();
    c.char(RPAREN, ")");
  }
  c.end();
  return { _tag: "Fetch", uid, set, items, changedSince };
};

const macro = (name: "ALL" | "FAST" | "FULL"): ReadonlyArray<FetchItem> => {
  const fast: FetchItem[] = [{ _tag: "Flags" }, { _tag: "InternalDate" }, { _tag: "Size" }];
  if (name === "FAST") return fast;
  if (name === "ALL") return [...fast, { _tag: "Envelope" }];
  return [...fast, { _tag: "Envelope" }, { _tag: "BodyStructure", extensible: false }];
};

const fetchAtt = (c: Cursor): ReadonlyArray<FetchItem> => {
  const start = c.pos;
  const word = c.run((b) => isAtomChar(b) && b !== LBRACKET, "a fetch item").toUpperCase();
  switch (word) {
    case "FLAGS":
      return [{ _tag: "Flags" }];
    case "UID":
      return [{ _tag: "Uid" }];
    case "INTERNALDATE":
      return [{ _tag: "InternalDate" }];
    case "RFC822.SIZE":
      return [{ _tag: "Size" }];
    case "ENVELOPE":
      return [{ _tag: "Envelope" }];
    case "BODYSTRUCTURE":
      return [{ _tag: "BodyStructure", extensible: true }];
    case "MODSEQ":
      return [{ _tag: "ModSeq" }];
    case "RFC822":
      return [{ _tag: "Rfc822", which: "" }];
    case "RFC822.HEADER":
      return [{ _tag: "Rfc822", which: "HEADER" }];
    case "RFC822.TEXT":
      return [{ _tag: "Rfc822", which: "TEXT" }];
    case "BODY":
    case "BODY.PEEK": {
      if (c.peek() !== LBRACKET) {
        if (word === "BODY.PEEK") c.fail("[ after BODY.PEEK");
        return [{ _tag: "BodyStructure", extensible: false }];
      }
      const section = parseSection(c);
      const partial = parsePartial(c);
      return [{ _tag: "Body", section, partial, peek: word === "BODY.PEEK" }];
    }
    default:
      c.pos = start;
      return c.fail("a fetch item");
  }
};

const parseSection = (c: Cursor): Section => {
  c.char(LBRACKET, "[");
  const part: number[] = [];
  let text: Section["text"];
  let fields: string[] | undefined;
  if (c.tryChar(RBRACKET)) return { part };
  for (;;) {
    const byte = c.peek();
    if (byte !== undefined && byte >= 0x31 && byte <= 0x39) {
      part.push(c.nzNumber());
      if (c.tryChar(0x2e)) continue;
      break;
    }
    const word = c.run((b) => isAtomChar(b) && b !== LBRACKET, "a section text").toUpperCase();
    if (word === "HEADER" || word === "TEXT") text = word;
    else if (word === "MIME" && part.length > 0) text = "MIME";
    else if (word === "HEADER.FIELDS" || word === "HEADER.FIELDS.NOT") {
      text = word;
      c.sp();
      c.char(LPAREN, "(");
      fields = [];
      for (;;) {
        fields.push(c.astring().toUpperCase());
        if (c.tryChar(RPAREN)) break;
        c.sp();
      }
    } else c.fail("HEADER, HEADER.FIELDS, HEADER.FIELDS.NOT, TEXT or MIME");
    break;
  }
  c.char(RBRACKET, "]");
  return { part, text, fields };
};

const parsePartial = (c: Cursor): Partial | undefined => {
  if (!c.tryChar(0x3c)) return undefined;
  const offset = c.number();
  c.char(0x2e, ".");
  const length = c.nzNumber();
  c.char(0x3e, ">");
  return { offset, length };
};

// ---------------------------------------------------------------------------
// SEARCH

const parseSearch = (c: Cursor, uid: boolean): ImapCommand => {
  c.sp();
  let charset: string | undefined;
  if (c.tryKeyword("CHARSET")) {
    c.sp();
    charset = c.astring();
    c.sp();
  }
  const keys: SearchKey[] = [searchKey(c, 0)];
  while (c.trySp()) keys.push(searchKey(c, 0));
  c.end();
  return { _tag: "Search", uid, charset, key: keys.length === 1 ? keys[0]! : { _tag: "And", keys } };
};

const FLAG_KEYS: Record<string, readonly [string, boolean]> = {
  ANSWERED: ["\\Answered", true],
  DELETED: ["\\Deleted", true],
  DRAFT: ["\\Draft", true],
  FLAGGED: ["\\Flagged", true],
  SEEN: ["\\Seen", true],
  RECENT: ["\\Recent", true],
  UNANSWERED: ["\\Answered", false],
  UNDELETED: ["\\Deleted", false],
  UNDRAFT: ["\\Draft", false],
  UNFLAGGED: ["\\Flagged", false],
  UNSEEN: ["\\Seen", false],
  OLD: ["\\Recent", false],
};

const HEADER_KEYS = new Set(["FROM", "TO", "CC", "BCC", "SUBJECT"]);
const DATE_KEYS: Record<string, readonly ["internal" | "sent", "before" | "on" | "since"]> = {
  BEFORE: ["internal", "before"],
  ON: ["internal", "on"],
  SINCE: ["internal", "since"],
  SENTBEFORE: ["sent", "before"],
  SENTON: ["sent", "on"],
  SENTSINCE: ["sent", "since"],
};

const searchKey = (c: Cursor, depth: number): SearchKey => {
  if (depth > MAX_NESTING) throw new ParseFailure({ _tag: "NestingTooDeep", limit: MAX_NESTING });
  if (c.tryChar(LPAREN)) {
    const keys: SearchKey[] = [searchKey(c, depth + 1)];
    while (c.trySp()) keys.push(searchKey(c, depth + 1));
    c.char(RPAREN, ")");
    return keys.length === 1 ? keys[0]! : { _tag: "And", keys };
  }
  const byte = c.peek();
  if (byte !== undefined && ((byte >= 0x30 && byte <= 0x39) || byte === 0x2a)) return { _tag: "Sequence", set: c.sequenceSet() };
  const start = c.pos;
  const word = c.atom().toUpperCase();
  const flagKey = FLAG_KEYS[word];
  if (flagKey) return { _tag: "Flag", flag: flagKey[0], set: flagKey[1] };
  if (word === "NEW") return { _tag: "And", keys: [{ _tag: "Flag", flag: "\\Recent", set: true }, { _tag: "Flag", flag: "\\Seen", set: false }] };
  if (word === "ALL") return { _tag: "All" };
  const argument = (): string => {
    c.sp();
    return c.astring();
  };
  if (HEADER_KEYS.has(word)) return { _tag: "Header", field: word, value: argument() };
  const dateKey = DATE_KEYS[word];
  if (dateKey) {
    c.sp();
    const text = c.peek() === DQUOTE ? c.quoted() : c.atom();
    const day = parseSearchDate(text);
    if (day === undefined) throw new ParseFailure({ _tag: "InvalidDate", text });
    return { _tag: "Date", of: dateKey[0], relation: dateKey[1], day };
  }
  switch (word) {
    case "HEADER": {
      const field = argument().toUpperCase();
      return { _tag: "Header", field, value: argument() };
    }
    case "BODY":
      return { _tag: "Body", value: argument() };
    case "TEXT":
      return { _tag: "Text", value: argument() };
    case "KEYWORD":
    case "UNKEYWORD":
      c.sp();
      return { _tag: "Flag", flag: c.atom(), set: word === "KEYWORD" };
    case "LARGER":
    case "SMALLER":
      c.sp();
      return { _tag: "Size", relation: word === "LARGER" ? "larger" : "smaller", octets: c.number() };
    case "UID":
      c.sp();
      return { _tag: "Uid", set: c.sequenceSet() };
    case "MODSEQ":
      c.sp();
      return { _tag: "ModSeq", modseq: c.number() };
    case "NOT":
      c.sp();
      return { _tag: "Not", key: searchKey(c, depth + 1) };
    case "OR": {
      c.sp();
      const left = searchKey(c, depth + 1);
      c.sp();
      return { _tag: "Or", left, right: searchKey(c, depth + 1) };
    }
    default:
      c.pos = start;
      return c.fail("a search key");
  }
};

// ---------------------------------------------------------------------------
// Dates

const MONTHS = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"];

/** date = 1*2DIGIT "-" Mon "-" 4DIGIT, as UTC midnight in ms. */
const parseSearchDate = (text: string): number | undefined => {
  const match = /^(\d{1,2})-([A-Za-z]{3})-(\d{4})$/.exec(text);
  if (!match) return undefined;
  const month = MONTHS.indexOf(match[2]!.toUpperCase());
  const day = Number(match[1]);
  if (month < 0 || day < 1 || day > 31) return undefined;
  return Date.UTC(Number(match[3]), month, day);
};

/** date-time = "dd-Mon-yyyy hh:mm:ss +zzzz" (the day may be space-padded), in ms since the epoch. */
export const parseDateTime = (text: string): number | undefined => {
  const match = /^([ \d]\d)-([A-Za-z]{3})-(\d{4}) (\d{2}):(\d{2}):(\d{2}) ([+-])(\d{2})(\d{2})$/.exec(text);
  if (!match) return undefined;
  const month = MONTHS.indexOf(match[2]!.toUpperCase());
  const day = Number(match[1]!.trim());
  const [hours, minutes, seconds] = [Number(match[4]), Number(match[5]), Number(match[6])];
  if (month < 0 || day < 1 || day > 31 || hours > 23 || minutes > 59 || seconds > 60) return undefined;
  const offsetMinutes = (match[7] === "-" ? -1 : 1) * (Number(match[8]) * 60 + Number(match[9]));
  return Date.UTC(Number(match[3]), month, day, hours, minutes, seconds) - offsetMinutes * 60_000;
};
