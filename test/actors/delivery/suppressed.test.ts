// The suppression list's check before each delivery attempt: listed recipients are not
// handed to the next hop and fail with `Suppressed` (5.7.1, category policy, no DSN, a
// "suppressed" event instead of "bounced"); the entry's other recipients go on as usual.
import { test } from "node:test";
import assert from "node:assert/strict";
import { Effect } from "effect";
import { makeClassifier } from "../../../actors/delivery/classify.ts";
import { dsnParamsOf } from "../../../actors/delivery/dsn.ts";
import type { Dispatch } from "../../../actors/delivery/dispatch.ts";
import { outcomeEvents } from "../../../actors/delivery/events.ts";
import { decide, type OutcomePolicy } from "../../../actors/delivery/outcome.ts";
import { checkingSuppressions } from "../../../actors/delivery/suppressed.ts";
import { makeSuppressionList } from "../../../actors/suppression/list.ts";
import type { QueueEntry } from "../../../actors/queue/entry.ts";
import { enhancedStatus, renderResult } from "../../../protocol/delivery.ts";
import { suppressionKey } from "../../../protocol/suppression.ts";

/** The scheduler's gate, open: no operator's hold. */
const mayStart = () => true;

const entry: QueueEntry = {
  id: "M1.0",
  messageId: "M1",
  route: { kind: "remote", domain: "dest.test" },
  sender: "news@acme.example",
  recipients: ["ok@dest.test", "gone@dest.test", "angry@dest.test"],
  createdAt: 1_000,
  attempts: 0,
  nextAttemptAt: 1_000,
  reason: "received",
};
const message = { id: "M1", sender: entry.sender, receivedAt: 1_000 } as Parameters<Dispatch>[1];
const policy: OutcomePolicy = { maxAgeMs: 3_600_000, delayNoticeMs: 600_000, retry: { baseMs: 60_000, maxMs: 600_000 }, classify: makeClassifier() };

const listed = () => {
  const list = makeSuppressionList();
  list.put(suppressionKey("global", "gone@dest.test"), "bad-mailbox");
  list.put(suppressionKey("acme.example", "angry@dest.test"), "complaint");
  return list;
};

/** A next hop that accepts everyone it is given, and remembers whom. */
const nextHop = () => {
  const given: string[][] = [];
  const dispatch: Dispatch = (e) =>
    Effect.sync(() => {
      given.push([...e.recipients]);
      return { server: "mx.dest.test[192.0.2.1]", results: e.recipients.map((recipient) => ({ recipient, result: { _tag: "Reply" as const, code: 250, text: "ok" } })) };
    });
  return { dispatch, given };
};

test("listed recipients are not sent; the others are, in one attempt", async () => {
  const hop = nextHop();
  const attempt = await Effect.runPromise(checkingSuppressions(hop.dispatch, listed().lookup)(entry, message, () => new Uint8Array(), mayStart));
  assert.deepEqual(hop.given, [["ok@dest.test"]]);
  assert.deepEqual(
    attempt.results.map((r) => [r.recipient, r.result._tag]),
    [["gone@dest.test", "Suppressed"], ["angry@dest.test", "Suppressed"], ["ok@dest.test", "Reply"]],
  );
  const suppressed = attempt.results[0]!.result;
  assert.equal(enhancedStatus(suppressed), "5.7.1");
  assert.match(renderResult(suppressed), /^5\.7\.1 not sent: the recipient is on the suppression list \(bad-mailbox, scope global\)/);
});

test("an entry whose every recipient is listed makes no attempt; one with none is dispatched untouched", async () => {
  const hop = nextHop();
  const check = checkingSuppressions(hop.dispatch, listed().lookup);
  const all = await Effect.runPromise(check({ ...entry, recipients: ["gone@dest.test"] }, message, () => new Uint8Array(), mayStart));
  assert.deepEqual(hop.given, []);
  assert.equal(all.server, "suppression-list");
  // Another sender's mail to the complaint's recipient goes: that entry was scoped to acme.example.
  await Effect.runPromise(check({ ...entry, sender: "shop@other.example", recipients: ["angry@dest.test"] }, message, () => new Uint8Array(), mayStart));
  assert.deepEqual(hop.given, [["angry@dest.test"]]);
});

test("a suppressed recipient fails without a DSN and is reported as a suppressed event, not a bounce", async () => {
  const hop = nextHop();
  const attempt = await Effect.runPromise(checkingSuppressions(hop.dispatch, listed().lookup)(entry, message, () => new Uint8Array(), mayStart));
  const decision = decide(entry, attempt, 2_000, 0.5, policy, dsnParamsOf(undefined));
  assert.equal(decision.next, undefined);
  assert.deepEqual(decision.outcomes.map((o) => [o.recipient, o.status, o.category]), [
    ["gone@dest.test", "failed", "policy"],
    ["angry@dest.test", "failed", "policy"],
    ["ok@dest.test", "delivered", undefined],
  ]);
  assert.deepEqual(decision.notices, [], "no failure DSN for a suppressed recipient");
  const events = outcomeEvents({ node: "n1", tenantOf: () => "acme" }, entry, undefined, attempt, decision, [], 2_000);
  assert.deepEqual(
    events.map((e) => [e.type, "rcpt" in e && e.rcpt, e.type === "suppressed" ? [e.where, e.scope, e.reason, e.msg, e.sender] : undefined]),
    [
      ["suppressed", "gone@dest.test", ["delivery", "global", "bad-mailbox", "M1", "news@acme.example"]],
      ["suppressed", "angry@dest.test", ["delivery", "acme.example", "complaint", "M1", "news@acme.example"]],
      ["delivered", "ok@dest.test", undefined],
    ],
  );
});

test("an entry for a local mailbox is never checked: the list is about mail leaving the cluster", async () => {
  const hop = nextHop();
  const list = listed();
  list.put(suppressionKey("global", "bob@example.test"), "manual");
  const local: QueueEntry = { ...entry, route: { kind: "local", user: "bob@example.test" }, recipients: ["bob@example.test"] };
  await Effect.runPromise(checkingSuppressions(hop.dispatch, list.lookup)(local, message, () => new Uint8Array(), mayStart));
  assert.deepEqual(hop.given, [["bob@example.test"]]);
});
