// The status of a message from what one node holds: entries still queued and the record
// of finished recipients, merged per recipient; the message's state follows from theirs.
import { test } from "node:test";
import assert from "node:assert/strict";
import { fitStatus, statusView, type ViewContext } from "../../../actors/status/view.ts";
import type { QueueEntry } from "../../../actors/queue/entry.ts";
import type { FinishedMessage } from "../../../actors/queue/finished.ts";

const context: ViewContext = { nodeId: "n1", isSuspended: () => false, isInFlight: (id) => id === "M.1", tenantOf: () => "acme" };

const entry = (n: number, recipients: string[], attempts = 0): QueueEntry => ({
  id: `M.${n}`,
  messageId: "M",
  route: { kind: "remote", domain: `d${n}.test` },
  sender: "s@acme.test",
  recipients,
  createdAt: 1_000,
  attempts,
  nextAttemptAt: 2_000,
  reason: "received",
});

const finished = (states: Array<[string, "delivered" | "bounced" | "expired" | "removed"]>, labels?: Record<string, unknown>): FinishedMessage => ({
  id: "M",
  sender: "s@acme.test",
  receivedAt: 1_000,
  size: 10,
  ...(labels ? { labels } : {}),
  entries: [{ id: "M.0", route: { kind: "remote", domain: "d0.test" }, attempts: 2, recipients: states.map(([rcpt, state]) => ({ rcpt, state, at: 3_000 })) }],
  updatedAt: 3_000,
});

test("nothing held here: no status", () => {
  assert.equal(statusView("M", { message: undefined, entries: [], finished: undefined }, context), undefined);
});

test("a recipient not yet attempted is queued, one with an attempt in flight says so; the tenant comes from the sender", () => {
  const message = { id: "M", sender: "s@acme.test", receivedAt: 1_000, size: 10, openEntries: 2 };
  const view = statusView("M", { message, entries: [entry(0, ["a@d0.test"]), entry(1, ["b@d1.test"], 3)], finished: undefined }, context)!;
  assert.equal(view.message.tenant, "acme");
  assert.equal(view.message.state, "pending");
  assert.deepEqual(
    view.recipients.map((r) => [r.recipient, r.state, r.attempts, r.inFlight ?? false, r.nextAttemptAt]),
    [
      ["a@d0.test", "queued", 0, false, 2_000],
      ["b@d1.test", "deferred", 3, true, 2_000],
    ],
  );
});

test("once every recipient finished, the message is delivered, undelivered or partial; labels come from the record", () => {
  const state = (states: Array<[string, "delivered" | "bounced" | "expired" | "removed"]>) =>
    statusView("M", { message: undefined, entries: [], finished: finished(states) }, context)!.message.state;
  assert.equal(state([["a@d0.test", "delivered"], ["b@d0.test", "delivered"]]), "delivered");
  assert.equal(state([["a@d0.test", "bounced"], ["b@d0.test", "expired"]]), "undelivered");
  assert.equal(state([["a@d0.test", "delivered"], ["b@d0.test", "removed"]]), "partial");
  const labelled = statusView("M", { message: undefined, entries: [], finished: finished([["a@d0.test", "delivered"]], { tenant: "beta", tags: ["x"], metadata: { k: "v" } }) }, context)!;
  assert.deepEqual([labelled.message.tenant, labelled.message.tags, labelled.message.metadata], ["beta", ["x"], { k: "v" }]);
});

test("each attempt shows the MX it reached and the pool address it left from", () => {
  const record = finished([["a@d0.test", "delivered"]]);
  const history = [{ at: 2_500, mx: "mx.d0.test", ip: "192.0.2.1", source: "198.51.100.7", results: [{ rcpt: "a@d0.test", status: "delivered" as const, result: { _tag: "Reply" as const, code: 250, enhanced: "2.0.0", text: "ok" } }] }];
  const view = statusView("M", { message: undefined, entries: [], finished: { ...record, entries: [{ ...record.entries[0]!, history }] } }, context)!;
  assert.deepEqual(view.recipients[0]!.history.map((a) => [a.mx, a.ip, a.source, a.status, a.reply]), [["mx.d0.test", "192.0.2.1", "198.51.100.7", "delivered", "250 2.0.0 ok"]]);
});

test("a recipient whose entry an operator held, or whose queue is suspended, is held, without a next attempt", () => {
  const message = { id: "M", sender: "s@acme.test", receivedAt: 1_000, size: 10, openEntries: 3 };
  const held: QueueEntry = { ...entry(0, ["a@d0.test"]), heldAt: 1_500, nextAttemptAt: Number.MAX_SAFE_INTEGER, reason: "held" };
  const view = statusView("M", { message, entries: [held, entry(2, ["c@d2.test"]), entry(3, ["d@d3.test"])], finished: undefined }, { ...context, isSuspended: (queue) => queue === "d3.test" })!;
  assert.deepEqual(
    view.recipients.map((r) => [r.recipient, r.state, r.nextAttemptAt]),
    [
      ["a@d0.test", "held", undefined],
      ["c@d2.test", "queued", 2_000],
      ["d@d3.test", "held", undefined],
    ],
  );
  assert.equal(view.message.state, "pending");
});

test("a status too large for one NATS message keeps fewer of each recipient's most recent attempts until it fits; a small one is left whole", () => {
  // 100 recipients, each deferred 20 times with a long reply (a provider's rate-limit text): about 2 MB.
  const text = `4.7.28 Our system has detected an unusual rate of unsolicited mail originating from your IP address. ${"x".repeat(300)}`;
  const history = Array.from({ length: 20 }, (_, n) => ({
    at: 10_000 + n,
    mx: "mx.d0.test",
    ip: "192.0.2.1",
    results: Array.from({ length: 100 }, (_, r) => ({ rcpt: `r${r}@d0.test`, status: "deferred" as const, result: { _tag: "Reply" as const, code: 421, enhanced: "4.7.28", text: `${text} ${n}` } })),
  }));
  const recipients = Array.from({ length: 100 }, (_, r) => `r${r}@d0.test`);
  const message = { id: "M", sender: "s@acme.test", receivedAt: 1_000, size: 10, openEntries: 1 };
  const whole = statusView("M", { message, entries: [{ ...entry(0, recipients, 20), history }], finished: undefined }, context)!;
  const size = (status: object) => Buffer.byteLength(JSON.stringify(status));
  assert.ok(size(whole) > 1024 * 1024, `the whole status is ${size(whole)} bytes`);

  const fitted = fitStatus(whole, 1024 * 1024);
  assert.ok(size(fitted) <= 1024 * 1024, `${size(fitted)} bytes`);
  for (const r of fitted.recipients) {
    assert.equal(r.attempts, 20, "the count still says how many attempts there were");
    assert.ok(r.history.length > 0 && r.history.length < 20, `${r.history.length} attempts kept`);
    assert.deepEqual(r.history.map((a) => a.at), whole.recipients[0]!.history.slice(20 - r.history.length).map((a) => a.at), "the most recent ones");
  }
  assert.deepEqual(fitted.message, whole.message);
  assert.equal(fitStatus(fitted, 1024 * 1024), fitted, "a status that fits is returned as it is");
});
