// The framer: bytes in, whole commands out; literal octets always stay inside their command.
import { test } from "node:test";
import assert from "node:assert/strict";
import { makeFramer, type FramerEvent } from "../../../protocol/imap/framer.ts";

const limits = { maxLineOctets: 100, maxLiteralOctets: 50, maxCommandOctets: 200 };
const texts = (events: ReadonlyArray<FramerEvent>) =>
  events.map((event) => (event._tag === "Command" ? `CMD ${event.bytes.toString("latin1")}` : event._tag === "Continue" ? "+" : `REFUSED ${event.tag} ${event.bad._tag}`));

test("lines split on CRLF (or LF), across chunks", () => {
  const framer = makeFramer(limits);
  assert.deepEqual(texts(framer.push(Buffer.from("a NOOP\r\nb CAPA"))), ["CMD a NOOP"]);
  assert.deepEqual(texts(framer.push(Buffer.from("BILITY\r\nc LOGOUT\n"))), ["CMD b CAPABILITY", "CMD c LOGOUT"]);
  assert.equal(framer.pending(), 0);
});

test("a synchronizing literal asks for continuation and joins the command", () => {
  const framer = makeFramer(limits);
  assert.deepEqual(texts(framer.push(Buffer.from("a LOGIN {5}\r\n"))), ["+"]);
  assert.deepEqual(texts(framer.push(Buffer.from("al"))), []);
  assert.deepEqual(texts(framer.push(Buffer.from("ice pw\r\n"))), ["CMD a LOGIN {5}\r\nalice pw"]);
});

test("literal bytes that look like commands are never commands", () => {
  const framer = makeFramer(limits);
  const events = framer.push(Buffer.from("a APPEND INBOX {20+}\r\nb LOGOUT\r\nc DELETE\r\n\r\nd NOOP\r\n"));
  assert.deepEqual(texts(events), ["CMD a APPEND INBOX {20+}\r\nb LOGOUT\r\nc DELETE\r\n", "CMD d NOOP"]);
});

test("a refused synchronizing literal: BAD at once, no continuation, next line is a new command", () => {
  const framer = makeFramer(limits);
  assert.deepEqual(texts(framer.push(Buffer.from("a APPEND INBOX {51}\r\n"))), ["REFUSED a LiteralTooLarge"]);
  assert.deepEqual(texts(framer.push(Buffer.from("b NOOP\r\n"))), ["CMD b NOOP"]);
});

test("a refused non-synchronizing literal: its bytes are dropped, also after the BAD, then the rest of the command", () => {
  const framer = makeFramer(limits);
  const literal = "x LOGOUT\r\n".repeat(6); // 60 octets, over the limit, looking like commands
  const events = framer.push(Buffer.from(`a APPEND INBOX {60+}\r\n${literal.slice(0, 30)}`));
  assert.deepEqual(texts(events), ["REFUSED a LiteralTooLarge"]);
  assert.deepEqual(texts(framer.push(Buffer.from(`${literal.slice(30)} {3+}\r\nabc\r\nb NOOP\r\n`))), ["CMD b NOOP"]);
});

test("a line over the limit is refused and dropped up to its end, without being kept", () => {
  const framer = makeFramer(limits);
  assert.deepEqual(texts(framer.push(Buffer.from(`t1 LOGIN ${"x".repeat(150)}`))), ["REFUSED t1 LineTooLong"]);
  assert.ok(framer.pending() <= limits.maxLineOctets);
  assert.deepEqual(texts(framer.push(Buffer.from(`${"y".repeat(500)} {5}\r\nt2 NOOP\r\n`))), ["CMD t2 NOOP"]);
});

test("a whole command over the limit (many literals) is refused", () => {
  const framer = makeFramer({ ...limits, maxCommandOctets: 60 });
  const events = framer.push(Buffer.from("a LOGIN {40+}\r\n" + "u".repeat(40) + " {40+}\r\n" + "p".repeat(40) + "\r\nb NOOP\r\n"));
  assert.deepEqual(texts(events), ["REFUSED a LiteralTooLarge", "CMD b NOOP"]);
});

test("setLimits applies to the commands that follow (small before login, large after)", () => {
  const framer = makeFramer({ maxLineOctets: 100, maxLiteralOctets: 10, maxCommandOctets: 200 });
  assert.deepEqual(texts(framer.push(Buffer.from("a LOGIN {40}\r\n"))), ["REFUSED a LiteralTooLarge"]);
  framer.setLimits({ maxLineOctets: 100, maxLiteralOctets: 50, maxCommandOctets: 200 });
  assert.deepEqual(texts(framer.push(Buffer.from("b APPEND INBOX {40}\r\n"))), ["+"]);
});
