// Queue entries as spools hold them: attempt history written before results were values
// (a reply string per recipient) reads into the current shape.
import { test } from "node:test";
import assert from "node:assert/strict";
import { Schema } from "effect";
import { historyOf, type QueueEntry } from "../../../actors/queue/entry.ts";
import { AttemptRecord } from "../../../protocol/delivery.ts";

const entry: QueueEntry = {
  id: "M1.0",
  messageId: "M1",
  route: { kind: "remote", domain: "remote.test" },
  sender: "s@origin.test",
  recipients: ["a@remote.test"],
  createdAt: 0,
  attempts: 3,
  nextAttemptAt: 1,
  reason: "temporary-reply",
};

test("history written by older versions (reply text) reads as values; current records pass through unchanged", () => {
  const current = { at: 3, mx: "mx.remote.test", ip: "192.0.2.1", results: [{ rcpt: "a@remote.test", status: "deferred" as const, result: { _tag: "Timeout" as const, detail: "ETIMEDOUT: Timeout" }, category: "other" as const }], requeued: "connection-failed" as const };
  const history = historyOf({
    ...entry,
    history: [
      { at: 1, mx: "mx.remote.test", ip: "192.0.2.1", results: [{ rcpt: "a@remote.test", status: "deferred", reply: "451 4.3.0 try later", category: "other" }], requeued: "temporary-reply" },
      { at: 2, via: "dns", results: [{ rcpt: "a@remote.test", status: "deferred", reply: "451 4.4.3 MX remote.test: SERVFAIL", category: "dns" }], requeued: "dns-temporary" },
      { at: 2, mx: "mx.remote.test", ip: "192.0.2.1", results: [{ rcpt: "a@remote.test", status: "deferred", reply: "ECONNREFUSED: connect ECONNREFUSED 192.0.2.1:25" }], requeued: "connection-failed" },
      current,
    ],
  });
  assert.deepEqual(history.map((a) => a.results[0]!.result), [
    { _tag: "Reply", code: 451, enhanced: "4.3.0", text: "try later" },
    { _tag: "Reply", code: 451, enhanced: "4.4.3", text: "MX remote.test: SERVFAIL" },
    { _tag: "ConnectionFailed", detail: "ECONNREFUSED: connect ECONNREFUSED 192.0.2.1:25" },
    current.results[0]!.result,
  ]);
  assert.equal(history[3], current, "a current record is not copied");
  assert.deepEqual(history[0]!.results[0]!.category, "other");
  assert.equal(history[2]!.results[0]!.category, undefined);
  // What queue administration sends must encode with the shared Schema.
  for (const record of history) Schema.encodeSync(AttemptRecord)(record);
  assert.deepEqual(historyOf(entry), []);
});
