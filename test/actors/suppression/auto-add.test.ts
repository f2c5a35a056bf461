// Automatic adds: a hard bounce (bad mailbox, bad domain) or a complaint adds its
// recipient, scoped by the sender's domain or globally; nothing else does. Wrapped around
// the event publisher's sink, an acknowledged event whose add fails is reported failed,
// so the publisher keeps it in the outbox and tries again.
import { test } from "node:test";
import assert from "node:assert/strict";
import { Effect } from "effect";
import { addingSuppressions, autoAddOf, type AutoAddPolicy, type SuppressionAdd } from "../../../actors/suppression/auto-add.ts";
import type { EventSink } from "../../../actors/events/publisher.ts";
import type { RecipientEvent, TernEvent } from "../../../protocol/events.ts";
import { suppressionKey } from "../../../protocol/suppression.ts";

const perDomain: AutoAddPolicy = { scope: "sender-domain", kinds: new Set(["bad-mailbox", "bad-domain", "complaint"]) };
const global: AutoAddPolicy = { ...perDomain, scope: "global" };

const common = { id: "n1.b.1", time: 5_000, node: "n1", tenant: "acme", msg: "M1", entry: "M1.0", domain: "dest.test" };
const bounced = (category: "bad-mailbox" | "bad-domain" | "policy" | "quota", sender: string | null = "news@Acme.Example"): TernEvent => ({
  type: "bounced",
  ...common,
  rcpt: "Gone@dest.test",
  ...(sender !== null ? { sender } : {}),
  route: "remote",
  result: { _tag: "Reply", code: 550, enhanced: "5.1.1", text: "no such user" },
  dsn: "5.1.1",
  reply: "550 5.1.1 no such user",
  category,
  server: "mx.dest.test[192.0.2.1]",
  attempts: 1,
});
const complained: TernEvent = { type: "complained", ...common, rcpt: "angry@dest.test", sender: "promo@acme.example", feedbackType: "abuse" };

test("a bad-mailbox bounce adds its recipient in the sender domain's scope, with the reply and message", () => {
  assert.deepEqual(autoAddOf(bounced("bad-mailbox"), perDomain), {
    key: suppressionKey("acme.example", "gone@dest.test"),
    record: { address: "Gone@dest.test", scope: "acme.example", reason: "bad-mailbox", at: 5_000, msg: "M1", node: "n1", detail: "550 5.1.1 no such user" },
  });
  assert.equal(autoAddOf(bounced("bad-domain"), global)?.key, suppressionKey("global", "gone@dest.test"));
  assert.equal(autoAddOf(bounced("bad-domain"), global)?.record.reason, "bad-domain");
});

test("a complaint adds its recipient; policy and quota bounces, deferrals and deliveries do not", () => {
  assert.deepEqual(autoAddOf(complained, perDomain)?.record, {
    address: "angry@dest.test",
    scope: "acme.example",
    reason: "complaint",
    at: 5_000,
    msg: "M1",
    node: "n1",
    detail: "feedback abuse",
  });
  assert.equal(autoAddOf(bounced("policy"), global), undefined);
  assert.equal(autoAddOf(bounced("quota"), global), undefined);
  const deferred = { ...(bounced("bad-mailbox") as RecipientEvent), type: "deferred" as const };
  assert.equal(autoAddOf(deferred, global), undefined);
});

test("only the configured kinds add, and a sender-domain add needs a sender domain", () => {
  assert.equal(autoAddOf(complained, { ...perDomain, kinds: new Set(["bad-mailbox"]) }), undefined);
  assert.equal(autoAddOf(bounced("bad-domain"), { ...perDomain, kinds: new Set(["bad-mailbox"]) }), undefined);
  assert.equal(autoAddOf(bounced("bad-mailbox", ""), perDomain), undefined, "the null sender has no domain");
  assert.equal(autoAddOf(bounced("bad-mailbox", null), perDomain), undefined);
  assert.ok(autoAddOf(bounced("bad-mailbox", ""), global), "a global add needs none");
});

test("published events add; an add that fails reports its event failed, so it stays in the outbox", async () => {
  const events = [bounced("bad-mailbox"), complained, bounced("policy"), bounced("bad-domain")];
  const sink: EventSink = {
    ensure: () => Effect.succeed("present"),
    // The last publish failed: its event is not added (it will come round again).
    publish: (batch) => Effect.succeed(batch.map((_, n) => (n === 3 ? { _tag: "Failed" as const, detail: "timeout" } : { _tag: "Acked" as const, seq: n + 1, duplicate: false }))),
  };
  const added: SuppressionAdd[] = [];
  const add = (wanted: SuppressionAdd) =>
    wanted.record.reason === "complaint" ? Effect.fail({ detail: "bucket away" }) : Effect.sync(() => void added.push(wanted));
  const outcomes = await Effect.runPromise(addingSuppressions(sink, perDomain, add).publish(events));
  assert.deepEqual(outcomes, [
    { _tag: "Acked", seq: 1, duplicate: false },
    { _tag: "Failed", detail: "suppression list: bucket away" },
    { _tag: "Acked", seq: 3, duplicate: false },
    { _tag: "Failed", detail: "timeout" },
  ]);
  assert.deepEqual(added.map((a) => a.record.address), ["Gone@dest.test"]);
});
