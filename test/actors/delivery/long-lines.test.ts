// Lines over 998 octets (RFC 5321 §4.5.3.1.6): found across chunk boundaries, and folded
// so that none leaves a node, every character kept.
import { test } from "node:test";
import assert from "node:assert/strict";
import { foldLongLines, hasLongLine, MAX_LINE_OCTETS } from "../../../actors/delivery/long-lines.ts";
import { longestLine } from "../../../actors/session/ingest.ts";

const lines = (bytes: Uint8Array) => Buffer.from(bytes).toString("latin1").split("\r\n");

test("the longest line is found across chunks; CR and LF do not count", () => {
  const first = longestLine(Buffer.from("short\r\nabcdef"), 0);
  assert.deepEqual(first, { longest: 6, run: 6 });
  const second = longestLine(Buffer.from("ghij\r\nx\r\n"), first.run);
  assert.deepEqual(second, { longest: 10, run: 0 });
  assert.equal(hasLongLine(Buffer.from(`${"a".repeat(MAX_LINE_OCTETS)}\r\n`)), false, "998 octets and CRLF is the limit");
  assert.equal(hasLongLine(Buffer.from(`${"a".repeat(MAX_LINE_OCTETS + 1)}\r\n`)), true);
});

test("folding leaves no line over 998 octets and loses no character", () => {
  const long = Array.from({ length: 5000 }, (_, n) => String.fromCharCode(97 + (n % 26))).join("");
  const message = Buffer.from(`Subject: x\r\n\r\nbefore\r\n${long}\r\nafter\r\n`, "latin1");
  const folded = foldLongLines(message);
  assert.ok(lines(folded).every((line) => line.length <= MAX_LINE_OCTETS), "every line within the limit");
  assert.equal(Buffer.from(folded).toString("latin1").replace(/\r\n /g, ""), message.toString("latin1"), "unfolded, the message is what it was");
  const fine = Buffer.from("Subject: x\r\n\r\nshort\r\n");
  assert.equal(foldLongLines(fine), fine, "a message without long lines is not copied");
});
