// LIST patterns: `*` and `%`, the delimiter, INBOX in any case, and hostile patterns in bounded time.
import { test } from "node:test";
import assert from "node:assert/strict";
import { listPattern } from "../../../protocol/imap/list-pattern.ts";

const names = ["INBOX", "Archive", "Archive/2024", "Archive/2024/Q1", "Sent", "Work/Projects/x"];
const listed = (pattern: string) => names.filter(listPattern(pattern).matches);

test("`*` crosses the delimiter, `%` does not", () => {
  assert.deepEqual(listed("*"), names);
  assert.deepEqual(listed("%"), ["INBOX", "Archive", "Sent"]);
  assert.deepEqual(listed("Archive/*"), ["Archive/2024", "Archive/2024/Q1"]);
  assert.deepEqual(listed("Archive/%"), ["Archive/2024"]);
  assert.deepEqual(listed("%/%"), ["Archive/2024"]);
  assert.deepEqual(listed("*/x"), ["Work/Projects/x"]);
  assert.deepEqual(listed("%/x"), []);
  assert.deepEqual(listed("A%e"), ["Archive"]);
  assert.deepEqual(listed("*%*"), names);
  assert.deepEqual(listed("%%%"), ["INBOX", "Archive", "Sent"]);
  assert.deepEqual(listed("Sent"), ["Sent"]);
  assert.deepEqual(listed("sent"), []);
  assert.deepEqual(listed("A*4"), ["Archive/2024"]);
  assert.deepEqual(listed("A*4*"), ["Archive/2024", "Archive/2024/Q1"]);
});

test("INBOX matches in any case", () => {
  assert.deepEqual(listed("inbox"), ["INBOX"]);
  assert.deepEqual(listed("Inbox%"), ["INBOX"]);
  assert.deepEqual(listed("I*"), ["INBOX"]);
});

test("hostile patterns are matched in bounded time", () => {
  const started = performance.now();
  const long = `Work/${"a".repeat(200)}`;
  for (const pattern of [`${"*".repeat(5_000)}x`, `${"%*".repeat(5_000)}y`, `${"*a".repeat(100)}b`, `${"%a".repeat(100)}b`]) {
    assert.equal(listPattern(pattern).matches(long), false);
  }
  assert.equal(listPattern(`${"*".repeat(5_000)}x`).matches("x".repeat(300)), true);
  assert.equal(listPattern(`${"%".repeat(5_000)}x`).matches(`${"x".repeat(300)}/x`), false);
  assert.ok(performance.now() - started < 1_000, `took ${performance.now() - started} ms`);
});
