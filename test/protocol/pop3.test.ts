import { test } from "node:test";
import assert from "node:assert/strict";
import { byteStuff, decodeSaslPlain, describeParseError, isPop3ParseError, parsePop3Command, topOfMessage } from "../../protocol/pop3.ts";

const bytes = (text: string): Buffer => Buffer.from(text, "latin1");

test("parses commands without arguments, case-insensitively", () => {
  assert.deepEqual(parsePop3Command("STAT"), { _tag: "Stat" });
  assert.deepEqual(parsePop3Command("stat"), { _tag: "Stat" });
  assert.deepEqual(parsePop3Command("Rset"), { _tag: "Rset" });
  assert.deepEqual(parsePop3Command("noop"), { _tag: "Noop" });
  assert.deepEqual(parsePop3Command("QUIT"), { _tag: "Quit" });
  assert.deepEqual(parsePop3Command("capa"), { _tag: "Capa" });
});

test("parses USER and PASS; the password keeps its spaces", () => {
  assert.deepEqual(parsePop3Command("USER alice@example.test"), { _tag: "User", name: "alice@example.test" });
  assert.deepEqual(parsePop3Command("pass correct horse  battery "), {
    _tag: "Pass",
    password: "correct horse  battery ",
  });
  assert.deepEqual(parsePop3Command("PASS"), { _tag: "MissingArgument", verb: "PASS" });
  assert.deepEqual(parsePop3Command("PASS "), { _tag: "MissingArgument", verb: "PASS" });
  assert.deepEqual(parsePop3Command("USER"), { _tag: "MissingArgument", verb: "USER" });
  assert.deepEqual(parsePop3Command("USER a b"), { _tag: "UnexpectedArgument", verb: "USER" });
});

test("LIST and UIDL take an optional message number", () => {
  assert.deepEqual(parsePop3Command("LIST"), { _tag: "List" });
  assert.deepEqual(parsePop3Command("list 2"), { _tag: "List", msg: 2 });
  assert.deepEqual(parsePop3Command("UIDL"), { _tag: "Uidl" });
  assert.deepEqual(parsePop3Command("uidl 17"), { _tag: "Uidl", msg: 17 });
  assert.deepEqual(parsePop3Command("LIST 1 2"), { _tag: "UnexpectedArgument", verb: "LIST" });
});

test("RETR, DELE and TOP need their arguments", () => {
  assert.deepEqual(parsePop3Command("RETR 1"), { _tag: "Retr", msg: 1 });
  assert.deepEqual(parsePop3Command("dele 3"), { _tag: "Dele", msg: 3 });
  assert.deepEqual(parsePop3Command("TOP 2 0"), { _tag: "Top", msg: 2, lines: 0 });
  assert.deepEqual(parsePop3Command("top 2 10"), { _tag: "Top", msg: 2, lines: 10 });
  assert.deepEqual(parsePop3Command("RETR"), { _tag: "MissingArgument", verb: "RETR" });
  assert.deepEqual(parsePop3Command("DELE"), { _tag: "MissingArgument", verb: "DELE" });
  assert.deepEqual(parsePop3Command("TOP 1"), { _tag: "MissingArgument", verb: "TOP" });
  assert.deepEqual(parsePop3Command("TOP 1 2 3"), { _tag: "UnexpectedArgument", verb: "TOP" });
  assert.deepEqual(parsePop3Command("TOP 1 x"), { _tag: "InvalidLineCount", argument: "x" });
});

test("message numbers must be positive decimal integers", () => {
  for (const argument of ["abc", "0", "-1", "+1", "1.5", "1e3", "0x10", "99999999999999999999"]) {
    assert.deepEqual(parsePop3Command(`RETR ${argument}`), { _tag: "InvalidMessageNumber", verb: "RETR", argument });
  }
  assert.deepEqual(parsePop3Command("TOP 0 1"), { _tag: "InvalidMessageNumber", verb: "TOP", argument: "0" });
  assert.deepEqual(parsePop3Command("RETR 007"), { _tag: "Retr", msg: 7 });
});

test("commands that take no argument refuse one", () => {
  assert.deepEqual(parsePop3Command("STAT 1"), { _tag: "UnexpectedArgument", verb: "STAT" });
  assert.deepEqual(parsePop3Command("QUIT now"), { _tag: "UnexpectedArgument", verb: "QUIT" });
});

test("unknown and empty commands", () => {
  assert.deepEqual(parsePop3Command("HELO x"), { _tag: "UnknownCommand", verb: "HELO" });
  assert.deepEqual(parsePop3Command("APOP alice 0123"), { _tag: "UnknownCommand", verb: "APOP" });
  assert.deepEqual(parsePop3Command(""), { _tag: "UnknownCommand", verb: "" });
});

test("a command line is at most 255 octets with its CRLF (RFC 2449)", () => {
  const longest = `PASS ${"x".repeat(248)}`;
  assert.equal(longest.length, 253);
  assert.deepEqual(parsePop3Command(longest), { _tag: "Pass", password: "x".repeat(248) });
  assert.deepEqual(parsePop3Command(`${longest}x`), { _tag: "LineTooLong", octets: 254 });
  // Octets, not characters: "é" is two octets in UTF-8.
  assert.deepEqual(parsePop3Command(`PASS ${"é".repeat(125)}`), { _tag: "LineTooLong", octets: 255 });
});

test("isPop3ParseError tells errors from commands; every error has a reason", () => {
  assert.equal(isPop3ParseError(parsePop3Command("STAT")), false);
  const error = parsePop3Command("RETR abc");
  assert.equal(isPop3ParseError(error), true);
  if (isPop3ParseError(error)) assert.equal(describeParseError(error), "invalid message number for RETR: abc");
  assert.equal(describeParseError({ _tag: "UnknownCommand", verb: "" }), "empty command");
});

test("byteStuff doubles leading dots and appends the terminator", () => {
  const message = bytes("Subject: x\r\n\r\n.hidden\r\n.\r\nmid.dle\r\n..two\r\n");
  assert.equal(
    byteStuff(message).toString("latin1"),
    "Subject: x\r\n\r\n..hidden\r\n..\r\nmid.dle\r\n...two\r\n.\r\n",
  );
});

test("byteStuff stuffs a dot on the very first line", () => {
  assert.equal(byteStuff(bytes(".first\r\n")).toString("latin1"), "..first\r\n.\r\n");
});

test("byteStuff closes a message that lacks its final CRLF", () => {
  assert.equal(byteStuff(bytes("a\r\nlast")).toString("latin1"), "a\r\nlast\r\n.\r\n");
  assert.equal(byteStuff(bytes("a\r\n.")).toString("latin1"), "a\r\n..\r\n.\r\n");
});

test("byteStuff of an empty message is just the terminator", () => {
  assert.equal(byteStuff(new Uint8Array()).toString("latin1"), ".\r\n");
});

test("byteStuff leaves non-ASCII octets alone", () => {
  const message = Buffer.from([0xff, 0x00, 0x0d, 0x0a, 0x2e, 0x80, 0x0d, 0x0a]);
  assert.deepEqual([...byteStuff(message)], [0xff, 0x00, 0x0d, 0x0a, 0x2e, 0x2e, 0x80, 0x0d, 0x0a, 0x2e, 0x0d, 0x0a]);
});

test("topOfMessage returns the header, the blank line and N body lines", () => {
  const message = bytes("A: 1\r\nB: 2\r\n\r\nline1\r\nline2\r\nline3\r\n");
  assert.equal(Buffer.from(topOfMessage(message, 0)).toString("latin1"), "A: 1\r\nB: 2\r\n\r\n");
  assert.equal(Buffer.from(topOfMessage(message, 2)).toString("latin1"), "A: 1\r\nB: 2\r\n\r\nline1\r\nline2\r\n");
  assert.equal(Buffer.from(topOfMessage(message, 99)).toString("latin1"), message.toString("latin1"));
  const headerOnly = bytes("A: 1\r\n");
  assert.equal(Buffer.from(topOfMessage(headerOnly, 5)).toString("latin1"), "A: 1\r\n");
});

test("STLS takes no argument; AUTH takes a mechanism and an optional initial response", () => {
  assert.deepEqual(parsePop3Command("stls"), { _tag: "Stls" });
  assert.deepEqual(parsePop3Command("STLS now"), { _tag: "UnexpectedArgument", verb: "STLS" });
  assert.deepEqual(parsePop3Command("AUTH"), { _tag: "Auth" });
  assert.deepEqual(parsePop3Command("auth plain"), { _tag: "Auth", mechanism: "PLAIN" });
  assert.deepEqual(parsePop3Command("AUTH PLAIN AGFsaWNlAHNlY3JldA=="), { _tag: "Auth", mechanism: "PLAIN", initialResponse: "AGFsaWNlAHNlY3JldA==" });
  assert.deepEqual(parsePop3Command("AUTH PLAIN ="), { _tag: "Auth", mechanism: "PLAIN", initialResponse: "=" });
  assert.deepEqual(parsePop3Command("AUTH PLAIN a b"), { _tag: "UnexpectedArgument", verb: "AUTH" });
});

test("SASL PLAIN responses decode to authzid, authcid and password, or say what is wrong", () => {
  const b64 = (text: string) => Buffer.from(text, "utf8").toString("base64");
  assert.deepEqual(decodeSaslPlain(b64("\0alice\0open sesame")), { authzid: "", authcid: "alice", password: "open sesame" });
  assert.deepEqual(decodeSaslPlain(b64("alice\0alice\0pw")), { authzid: "alice", authcid: "alice", password: "pw" });
  assert.deepEqual(decodeSaslPlain(b64("\0zoë\0pässwörd")), { authzid: "", authcid: "zoë", password: "pässwörd" });
  assert.equal(decodeSaslPlain("="), "empty PLAIN response");
  assert.equal(decodeSaslPlain("not base64!"), "PLAIN response is not base64");
  assert.equal(decodeSaslPlain("YWJj="), "PLAIN response is not base64");
  assert.equal(decodeSaslPlain(b64("alice:pw")), "PLAIN response must be authzid NUL authcid NUL password");
  assert.equal(decodeSaslPlain(b64("\0\0pw")), "PLAIN response lacks a user name or password");
  assert.equal(decodeSaslPlain(b64("\0alice\0")), "PLAIN response lacks a user name or password");
});
