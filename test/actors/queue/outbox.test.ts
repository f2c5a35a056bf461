// The event outbox is written by the spool's own transactions: an outcome and its events
// are committed together or not at all, and an outcome recorded for an entry that was
// already gone writes no event. Keys keep commit order across a restart; ids never repeat.
import { test } from "node:test";
import assert from "node:assert/strict";
import { Effect } from "effect";
import { newMessageId } from "../../../actors/queue/entry.ts";
import { openOutbox } from "../../../actors/queue/outbox.ts";
import { openSpool } from "../../../actors/queue/spool.ts";
import { temporaryLmdb } from "../../support/lmdb.ts";
import type { EventDraft } from "../../../protocol/events.ts";

const lmdb = temporaryLmdb("tern-outbox-");

const openAt = (dir: string) => {
  const root = lmdb.openAt(dir);
  const outbox = openOutbox(root, "n1");
  return { root, outbox, spool: openSpool(root, outbox) };
};

const fresh = async () => {
  const { dir } = await lmdb.fresh();
  return { dir, ...openAt(dir) };
};

const draft = (type: "accepted" | "delivered", msg: string, rcpt: string, time: number): EventDraft =>
  type === "accepted"
    ? { type, time, node: "n1", tenant: "default", msg, entry: `${msg}.0`, domain: "example.org", rcpt, sender: "s@example.net", size: 10 }
    : {
        type,
        time,
        node: "n1",
        tenant: "default",
        msg,
        entry: `${msg}.0`,
        domain: "example.org",
        rcpt,
        route: "remote",
        result: { _tag: "Reply", code: 250, text: "ok" },
        dsn: "2.0.0",
        reply: "250 ok",
        server: "mx",
        attempts: 1,
      };

const acceptWith = (spool: ReturnType<typeof openAt>["spool"], at: number, rcpt: string) => {
  const id = newMessageId(at);
  const body = spool.openBody(id);
  body.append(Buffer.from("Subject: x\r\n\r\nbody\r\n"));
  const routes = [{ route: { kind: "remote" as const, domain: "example.org" }, recipients: [rcpt] }];
  return Effect.runPromise(spool.accept({ id, sender: "s@example.net", receivedAt: at, body, routes }, [draft("accepted", id, rcpt, at)]));
};

test("accept and settle commit their events with the outcome, in commit order, each with its own id", async () => {
  const { spool, outbox } = await fresh();
  let woken = 0;
  outbox.onWritten(() => woken++);
  const [entry] = await acceptWith(spool, 1_000, "a@example.org");
  assert.equal(woken, 1, "the publisher hears of the commit");
  await Effect.runPromise(spool.settle(entry!, undefined, [], { events: [draft("delivered", entry!.messageId, "a@example.org", 2_000)] }));
  const items = outbox.oldest(10);
  assert.deepEqual(items.map((i) => i.event.type), ["accepted", "delivered"]);
  assert.ok(items[0]!.key < items[1]!.key);
  assert.notEqual(items[0]!.event.id, items[1]!.event.id);
  assert.match(items[0]!.event.id, /^n1\.[0-9a-f]{8}\.[0-9a-z]+$/);
  assert.equal(outbox.size(), 2);
  assert.equal(outbox.oldestTime(), 1_000);
  await outbox.remove(items.map((i) => i.key));
  assert.equal(outbox.size(), 0);
  assert.equal(outbox.oldestTime(), undefined);
});

test("an outcome for an entry already gone (an operator removed it) writes no event", async () => {
  const { spool, outbox } = await fresh();
  const [entry] = await acceptWith(spool, 1_000, "a@example.org");
  await Effect.runPromise(spool.finish(entry!));
  const before = outbox.size();
  await Effect.runPromise(spool.settle(entry!, undefined, [], { events: [draft("delivered", entry!.messageId, "a@example.org", 2_000)] }));
  await Effect.runPromise(spool.finish(entry!, [draft("delivered", entry!.messageId, "a@example.org", 2_000)]));
  assert.equal(outbox.size(), before);
});

test("a refused commit writes no event", async () => {
  const { spool, outbox } = await fresh();
  const id = newMessageId(1_000);
  const body = spool.openBody(id);
  body.discard();
  const refused = await Effect.runPromise(Effect.result(spool.accept({ id, sender: "", receivedAt: 1_000, body, routes: [] }, [draft("accepted", id, "a@example.org", 1_000)])));
  assert.equal(refused._tag, "Failure");
  assert.equal(outbox.size(), 0);
});

test("after a restart, keys continue after the events left and ids are new", async () => {
  const { dir, root, spool } = await fresh();
  await acceptWith(spool, 1_000, "a@example.org");
  await acceptWith(spool, 1_001, "b@example.org");
  const first = openOutbox(root, "n1").oldest(10);
  await lmdb.close(root);
  const again = openAt(dir);
  await acceptWith(again.spool, 1_002, "c@example.org");
  const items = again.outbox.oldest(10);
  assert.deepEqual(items.map((i) => i.event.type === "accepted" && i.event.rcpt), ["a@example.org", "b@example.org", "c@example.org"]);
  assert.ok(items[2]!.key > items[1]!.key);
  assert.equal(new Set(items.map((i) => i.event.id)).size, 3);
  assert.notEqual(items[2]!.event.id.split(".")[1], first[0]!.event.id.split(".")[1], "a new run has a new boot id");
});

test("append writes events that report no spool change (a site's back-off) in a transaction of their own", async () => {
  const { outbox } = await fresh();
  let woken = 0;
  outbox.onWritten(() => woken++);
  await outbox.append([
    { type: "site-backoff", time: 5_000, node: "n1", tenant: "cluster", domain: "", site: "mx.example.org", source: "203.0.113.10", change: "paused", level: 1, previousLevel: 0, connections: 2, gapMs: 1_000, pausedUntil: 905_000, rule: "yahoo-tss04", reply: "421 4.7.0 [TSS04] deferred" },
  ]);
  assert.equal(woken, 1, "the publisher hears of it once it is on disk");
  const [item] = outbox.oldest(10);
  assert.equal(item?.event.type, "site-backoff");
  assert.match(item!.event.id, /^n1\.[0-9a-f]{8}\.1$/);
  assert.equal(outbox.size(), 1);
});
