// The events of a recorded attempt and of an accepted message: one per recipient, the
// submit's tags and metadata and the tenant on every one, failures reported as "bounced"
// with their category, a "dsn-queued" per DSN; each decodes with the protocol's Schema.
import { test } from "node:test";
import assert from "node:assert/strict";
import { Schema } from "effect";
import { outcomeEvents } from "../../../actors/delivery/events.ts";
import type { Decision } from "../../../actors/delivery/outcome.ts";
import { tenantOf } from "../../../actors/common/tenants.ts";
import { acceptedEvents } from "../../../actors/queue/events.ts";
import type { QueueEntry } from "../../../actors/queue/entry.ts";
import { TernEvent } from "../../../protocol/events.ts";

const tenants = [{ name: "acme", senderDomains: ["Acme.Example"] }];
const source = { node: "n1", tenantOf: (sender: string) => tenantOf(sender, tenants) };
const labels = { tags: ["welcome", "batch-7"], metadata: { customer: "42" } };
const decodes = (event: object) => Schema.decodeUnknownSync(TernEvent)({ id: "n1.x.1", ...event });

const entry: QueueEntry = {
  id: "M1.0",
  messageId: "M1",
  route: { kind: "remote", domain: "dest.example" },
  sender: "news@acme.example",
  recipients: ["a@dest.example", "b@dest.example"],
  createdAt: 1_000,
  attempts: 2,
  nextAttemptAt: 1_000,
  reason: "received",
};

test("accepted: one event per recipient with its entry, destination domain, tenant and labels", () => {
  const events = acceptedEvents(
    source,
    {
      id: "M1",
      sender: "news@acme.example",
      routes: [
        { route: { kind: "remote", domain: "dest.example" }, recipients: ["a@dest.example", "b@dest.example"] },
        { route: { kind: "local", user: "bob@local.example" }, recipients: ["bob@local.example"] },
      ],
      attributes: labels,
    },
    123,
    5_000,
  );
  assert.deepEqual(
    events.map((e) => [e.type, "rcpt" in e && e.rcpt, e.entry, e.domain, e.tenant]),
    [
      ["accepted", "a@dest.example", "M1.0", "dest.example", "acme"],
      ["accepted", "b@dest.example", "M1.0", "dest.example", "acme"],
      ["accepted", "bob@local.example", "M1.1", "local.example", "acme"],
    ],
  );
  for (const event of events) {
    assert.deepEqual(event.tags, labels.tags);
    assert.deepEqual(event.metadata, labels.metadata);
    decodes(event);
  }
});

test("labels of the wrong shape are left out; a tenant recorded with the message wins", () => {
  const [event] = acceptedEvents(
    source,
    { id: "M2", sender: "x@other.example", routes: [{ route: { kind: "remote", domain: "d.example" }, recipients: ["r@d.example"] }], attributes: { tags: "x", metadata: { n: 1 }, tenant: "beta" } },
    1,
    1,
  );
  assert.equal(event!.tags, undefined);
  assert.equal(event!.metadata, undefined);
  assert.equal(event!.tenant, "beta");
});

test("an attempt: delivered, bounced with its category, then one dsn-queued per DSN, all with the message's labels", () => {
  const decision: Decision = {
    outcomes: [
      { recipient: "a@dest.example", status: "delivered", result: { _tag: "Reply", code: 250, text: "ok" } },
      { recipient: "b@dest.example", status: "failed", result: { _tag: "Reply", code: 550, enhanced: "5.1.1", text: "no such user" }, category: "bad-mailbox" },
    ],
    record: { at: 9_000, results: [] },
    next: undefined,
    notices: [],
    holdQueue: undefined,
  };
  const dsn = { id: "D1", sender: "", receivedAt: 9_000, body: new Uint8Array(), routes: [], attributes: { dsnFor: "M1", action: "failed" } };
  const events = outcomeEvents(source, entry, labels, { results: [], server: "mx.dest.example[192.0.2.1]", mx: { host: "mx.dest.example", ip: "192.0.2.1" } }, decision, [dsn], 9_000);
  assert.deepEqual(events.map((e) => e.type), ["delivered", "bounced", "dsn-queued"]);
  const [delivered, bounced, queued] = events.map(decodes);
  assert.equal(delivered!.type === "delivered" && delivered!.attempts, 3);
  assert.ok(bounced !== undefined && bounced.type === "bounced");
  assert.equal(bounced.category, "bad-mailbox");
  assert.equal(bounced.dsn, "5.1.1");
  assert.equal(bounced.reply, "550 5.1.1 no such user");
  assert.equal(bounced.rcpt, "b@dest.example");
  assert.deepEqual(queued, { ...queued, type: "dsn-queued", msg: "M1", notice: "D1", action: "failed", to: "news@acme.example", domain: "dest.example" });
  for (const event of events) {
    assert.equal(event.tenant, "acme");
    assert.deepEqual(event.tags, labels.tags);
    assert.equal(event.time, 9_000);
    assert.equal(event.node, "n1");
  }
});
