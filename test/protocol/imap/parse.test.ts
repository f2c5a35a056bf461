// The IMAP command parser on its own: bytes of one command in, a value or a typed BAD out.
import { test } from "node:test";
import assert from "node:assert/strict";
import { parseCommand, parseDateTime, parseSequenceSet, type Parsed } from "../../../protocol/imap/parse.ts";
import { describeBad, type ImapCommand } from "../../../protocol/imap/command.ts";

const parse = (text: string | Buffer): Parsed => parseCommand(typeof text === "string" ? Buffer.from(text, "utf8") : text);
const command = (text: string): ImapCommand => {
  const parsed = parse(text);
  assert.equal(parsed._tag, "Command", JSON.stringify(parsed));
  return (parsed as Extract<Parsed, { _tag: "Command" }>).command;
};
const bad = (text: string) => {
  const parsed = parse(text);
  assert.equal(parsed._tag, "Bad", JSON.stringify(parsed));
  return parsed as Extract<Parsed, { _tag: "Bad" }>;
};

test("tags and verbs: any case, tag kept as sent", () => {
  assert.deepEqual(parse("a001 capability"), { _tag: "Command", tag: "a001", command: { _tag: "Capability" } });
  assert.deepEqual(parse("X.1 NoOp"), { _tag: "Command", tag: "X.1", command: { _tag: "Noop" } });
  assert.deepEqual(bad("").bad, { _tag: "MissingTag" });
  assert.deepEqual(bad("a+b NOOP").bad, { _tag: "MissingTag" });
  assert.deepEqual(bad("a1").bad, { _tag: "MissingTag" });
  assert.deepEqual(bad("a1 FROB"), { _tag: "Bad", tag: "a1", bad: { _tag: "UnknownCommand", verb: "FROB" } });
  assert.deepEqual(bad("a1 NOOP extra").bad._tag, "TrailingInput");
  assert.equal(bad("a1 UID NOOP").bad._tag, "UnknownCommand");
});

test("LOGIN: atoms, quoted strings with escapes, literals", () => {
  assert.deepEqual(command('a LOGIN alice "pa ss\\"w\\\\d"'), { _tag: "Login", user: "alice", password: 'pa ss"w\\d' });
  assert.deepEqual(command("a LOGIN {5}\r\nalice {3+}\r\n{x}"), { _tag: "Login", user: "alice", password: "{x}" });
  assert.deepEqual(command("a LOGIN alice@example.test \"ünï\""), { _tag: "Login", user: "alice@example.test", password: "ünï" });
  assert.equal(bad('a LOGIN alice "unterminated').bad._tag, "Syntax");
  assert.equal(bad('a LOGIN alice "bad\\escape"').bad._tag, "Syntax");
  assert.equal(bad("a LOGIN alice").bad._tag, "Syntax");
  assert.equal(bad("a LOGIN  alice pw").bad._tag, "Syntax", "two spaces");
  // A literal shorter than announced (the framer never hands one over, but the parser checks).
  assert.equal(bad("a LOGIN {9}\r\nalice pw").bad._tag, "Syntax");
});

test("AUTHENTICATE with and without an initial response", () => {
  assert.deepEqual(command("a AUTHENTICATE plain"), { _tag: "Authenticate", mechanism: "PLAIN", initialResponse: undefined });
  assert.deepEqual(command("a AUTHENTICATE PLAIN AGFsaWNlAHB3"), { _tag: "Authenticate", mechanism: "PLAIN", initialResponse: "AGFsaWNlAHB3" });
});

test("SELECT, EXAMINE (CONDSTORE), LIST patterns, STATUS items", () => {
  assert.deepEqual(command("a SELECT inbox"), { _tag: "Select", mailbox: "inbox", readOnly: false, condstore: false });
  assert.deepEqual(command('a EXAMINE "Sent Items" (CONDSTORE)'), { _tag: "Select", mailbox: "Sent Items", readOnly: true, condstore: true });
  assert.deepEqual(command('a LIST "" *'), { _tag: "List", reference: "", pattern: "*", subscribedOnly: false });
  assert.deepEqual(command("a LSUB \"\" %"), { _tag: "List", reference: "", pattern: "%", subscribedOnly: true });
  assert.deepEqual(command("a STATUS INBOX (MESSAGES UIDNEXT unseen)"), { _tag: "Status", mailbox: "INBOX", items: ["MESSAGES", "UIDNEXT", "UNSEEN"] });
  assert.equal(bad("a STATUS INBOX (BOGUS)").bad._tag, "Syntax");
  assert.deepEqual(command('a RENAME old "new name"'), { _tag: "Rename", from: "old", to: "new name" });
});

test("sequence sets: ranges, *, reversed ranges; zero and junk refused", () => {
  assert.deepEqual(parseSequenceSet("1:*"), [{ from: 1, to: "*" }]);
  assert.deepEqual(parseSequenceSet("*:4"), [{ from: "*", to: 4 }]);
  assert.deepEqual(parseSequenceSet("2,4:7,9,*"), [{ from: 2, to: 2 }, { from: 4, to: 7 }, { from: 9, to: 9 }, { from: "*", to: "*" }]);
  for (const text of ["0", "1:0", "1::2", "1,", ",1", "a", "1:2:3", "01", "99999999999999999999"]) assert.equal(parseSequenceSet(text), undefined, text);
  assert.deepEqual(command("a UID FETCH 10:* FLAGS"), { _tag: "Fetch", uid: true, set: [{ from: 10, to: "*" }], items: [{ _tag: "Flags" }], changedSince: undefined });
  assert.deepEqual(bad("a FETCH 0 FLAGS").bad, { _tag: "InvalidSequenceSet", verb: "FETCH", text: "0" });
});

test("FETCH: macros, lists, sections, partials, PEEK, CHANGEDSINCE", () => {
  const fetch = (text: string) => command(text) as Extract<ImapCommand, { _tag: "Fetch" }>;
  assert.deepEqual(fetch("a FETCH 1 FAST").items.map((item) => item._tag), ["Flags", "InternalDate", "Size"]);
  assert.deepEqual(fetch("a FETCH 1 full").items.map((item) => item._tag), ["Flags", "InternalDate", "Size", "Envelope", "BodyStructure"]);
  assert.deepEqual(fetch("a FETCH 1:3 (UID RFC822.SIZE BODYSTRUCTURE BODY)").items, [
    { _tag: "Uid" },
    { _tag: "Size" },
    { _tag: "BodyStructure", extensible: true },
    { _tag: "BodyStructure", extensible: false },
  ]);
  assert.deepEqual(fetch("a FETCH 1 BODY[]").items, [{ _tag: "Body", section: { part: [] }, partial: undefined, peek: false }]);
  assert.deepEqual(fetch("a FETCH 1 (BODY.PEEK[1.2.MIME]<0.100>)").items, [
    { _tag: "Body", section: { part: [1, 2], text: "MIME", fields: undefined }, partial: { offset: 0, length: 100 }, peek: true },
  ]);
  assert.deepEqual(fetch("a FETCH 1 BODY.PEEK[HEADER.FIELDS (From Subject \"Message-ID\")]").items, [
    { _tag: "Body", section: { part: [], text: "HEADER.FIELDS", fields: ["FROM", "SUBJECT", "MESSAGE-ID"] }, partial: undefined, peek: true },
  ]);
  assert.deepEqual(fetch("a FETCH 1 (RFC822 RFC822.HEADER RFC822.TEXT MODSEQ)").items, [
    { _tag: "Rfc822", which: "" },
    { _tag: "Rfc822", which: "HEADER" },
    { _tag: "Rfc822", which: "TEXT" },
    { _tag: "ModSeq" },
  ]);
  assert.equal(fetch("a FETCH 1:* (FLAGS) (CHANGEDSINCE 12345)").changedSince, 12345);
  assert.equal(bad("a FETCH 1 (FLAGS").bad._tag, "Syntax");
  assert.equal(bad("a FETCH 1 BODY[MIME]").bad._tag, "Syntax", "MIME needs a part");
  assert.equal(bad("a FETCH 1 BODY.PEEK").bad._tag, "Syntax");
  assert.equal(bad("a FETCH 1 BODY[]<5>").bad._tag, "Syntax");
  assert.equal(bad("a FETCH 1 NOSUCH").bad._tag, "Syntax");
});

test("STORE: modes, .SILENT, flag lists, UNCHANGEDSINCE", () => {
  assert.deepEqual(command("a STORE 1:2 +FLAGS.SILENT (\\seen \\Flagged $Junk)"), {
    _tag: "Store", uid: false, set: [{ from: 1, to: 2 }], mode: "add", silent: true, flags: ["\\Seen", "\\Flagged", "$Junk"], unchangedSince: undefined,
  });
  assert.deepEqual(command("a UID STORE 5 (UNCHANGEDSINCE 7) -FLAGS \\Deleted"), {
    _tag: "Store", uid: true, set: [{ from: 5, to: 5 }], mode: "remove", silent: false, flags: ["\\Deleted"], unchangedSince: 7,
  });
  assert.equal((command("a STORE 1 FLAGS ()") as { mode: string }).mode, "replace");
  assert.equal(bad("a STORE 1 *FLAGS (\\Seen)").bad._tag, "Syntax");
});

test("SEARCH: keys, NOT/OR, nesting, dates, sizes, UID sets, charset", () => {
  const search = (text: string) => (command(text) as Extract<ImapCommand, { _tag: "Search" }>).key;
  assert.deepEqual(search("a SEARCH ALL"), { _tag: "All" });
  assert.deepEqual(search("a SEARCH UNSEEN FLAGGED"), { _tag: "And", keys: [{ _tag: "Flag", flag: "\\Seen", set: false }, { _tag: "Flag", flag: "\\Flagged", set: true }] });
  assert.deepEqual(search('a SEARCH FROM "bob" SUBJECT hello'), { _tag: "And", keys: [{ _tag: "Header", field: "FROM", value: "bob" }, { _tag: "Header", field: "SUBJECT", value: "hello" }] });
  assert.deepEqual(search("a SEARCH HEADER X-Mailer foo"), { _tag: "Header", field: "X-MAILER", value: "foo" });
  assert.deepEqual(search("a SEARCH NOT OR DELETED (LARGER 100 SMALLER 5000)"), {
    _tag: "Not",
    key: { _tag: "Or", left: { _tag: "Flag", flag: "\\Deleted", set: true }, right: { _tag: "And", keys: [{ _tag: "Size", relation: "larger", octets: 100 }, { _tag: "Size", relation: "smaller", octets: 5000 }] } },
  });
  assert.deepEqual(search("a SEARCH SINCE 1-Feb-2024 BEFORE \"10-feb-2024\""), {
    _tag: "And",
    keys: [{ _tag: "Date", of: "internal", relation: "since", day: Date.UTC(2024, 1, 1) }, { _tag: "Date", of: "internal", relation: "before", day: Date.UTC(2024, 1, 10) }],
  });
  assert.deepEqual(search("a UID SEARCH UID 3:* 1,2"), { _tag: "And", keys: [{ _tag: "Uid", set: [{ from: 3, to: "*" }] }, { _tag: "Sequence", set: [{ from: 1, to: 1 }, { from: 2, to: 2 }] }] });
  assert.equal((command("a SEARCH CHARSET UTF-8 BODY {4}\r\nwörd".replace("{4}", `{${Buffer.byteLength("wörd")}}`)) as { charset: string }).charset, "UTF-8");
  assert.deepEqual(bad("a SEARCH ON 31-Foo-2024").bad, { _tag: "InvalidDate", text: "31-Foo-2024" });
  assert.equal(bad("a SEARCH BOGUS").bad._tag, "Syntax");
  assert.equal(bad("a SEARCH (ALL").bad._tag, "Syntax");
  assert.equal(bad(`a SEARCH ${"NOT ".repeat(40)}ALL`).bad._tag, "NestingTooDeep");
  assert.equal(bad(`a SEARCH ${"(".repeat(40)}ALL${")".repeat(40)}`).bad._tag, "NestingTooDeep");
});

test("APPEND: flags, date, literal message (binary-safe)", () => {
  const body = Buffer.from("Subject: x\r\n\r\n\u00ff\r\n", "latin1");
  const text = Buffer.concat([Buffer.from(`a APPEND Drafts (\\Draft) " 5-Mar-2024 10:00:00 +0100" {${body.length}}\r\n`), body]);
  const parsed = parse(text);
  assert.equal(parsed._tag, "Command");
  const append = (parsed as Extract<Parsed, { _tag: "Command" }>).command as Extract<ImapCommand, { _tag: "Append" }>;
  assert.equal(append.mailbox, "Drafts");
  assert.deepEqual(append.flags, ["\\Draft"]);
  assert.equal(append.date, Date.UTC(2024, 2, 5, 9, 0, 0));
  assert.deepEqual(Buffer.from(append.message), body);
  assert.equal(bad('a APPEND INBOX "not a date" {1}\r\nx').bad._tag, "InvalidDate");
  assert.equal(bad("a APPEND INBOX hello").bad._tag, "Syntax");
});

test("COPY/MOVE/UID EXPUNGE, ID, ENABLE", () => {
  assert.deepEqual(command("a UID MOVE 1:3 Trash"), { _tag: "Move", uid: true, set: [{ from: 1, to: 3 }], mailbox: "Trash" });
  assert.deepEqual(command("a COPY 2 \"Sent\""), { _tag: "Copy", uid: false, set: [{ from: 2, to: 2 }], mailbox: "Sent" });
  assert.deepEqual(command("a UID EXPUNGE 4,6"), { _tag: "Expunge", uids: [{ from: 4, to: 4 }, { from: 6, to: 6 }] });
  assert.deepEqual(command("a EXPUNGE"), { _tag: "Expunge" });
  assert.deepEqual(command('a ID ("name" "imaplib" "version" NIL)'), { _tag: "Id", parameters: [["name", "imaplib"], ["version", null]] });
  assert.deepEqual(command("a ID NIL"), { _tag: "Id", parameters: null });
  assert.deepEqual(command("a ENABLE condstore utf8=accept"), { _tag: "Enable", capabilities: ["CONDSTORE", "UTF8=ACCEPT"] });
  assert.equal(bad("a ENABLE").bad._tag, "Syntax");
});

test("dates: date-time with zone; every BAD has a reason", () => {
  assert.equal(parseDateTime("17-Jul-1996 02:44:25 -0700"), Date.UTC(1996, 6, 17, 9, 44, 25));
  assert.equal(parseDateTime("32-Jul-1996 02:44:25 -0700"), undefined);
  for (const text of ["", "a FROB", "a LOGIN", "a FETCH x FLAGS", "a SEARCH ON x"]) {
    const reason = describeBad(bad(text).bad);
    assert.ok(reason.length > 5, reason);
  }
});
