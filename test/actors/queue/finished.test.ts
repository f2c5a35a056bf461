// Recipients that leave the queue are remembered with their outcome, in the transaction
// that records it, across a restart, until pruned; status reads them back (actors/status/view.ts).
import { test } from "node:test";
import assert from "node:assert/strict";
import { Effect } from "effect";
import type { AttemptRecord } from "../../../protocol/delivery.ts";
import { newMessageId, type QueueEntry } from "../../../actors/queue/entry.ts";
import { openSpool, type Spool } from "../../../actors/queue/spool.ts";
import { temporaryLmdb } from "../../support/lmdb.ts";
import { localStatus } from "../../../actors/status/server.ts";

const lmdb = temporaryLmdb("tern-finished-");

const openAt = (dir: string) => {
  const root = lmdb.openAt(dir);
  return { root, spool: openSpool(root) };
};

const fresh = async () => {
  const { dir } = await lmdb.fresh();
  return { dir, ...openAt(dir) };
};

const accept = async (spool: Spool, at: number, recipients: string[], attributes?: Record<string, unknown>) => {
  const id = newMessageId(at);
  const body = spool.openBody(id);
  body.append(Buffer.from(`Subject: ${id}\r\n\r\nbody\r\n`));
  const byDomain = new Map<string, string[]>();
  for (const r of recipients) byDomain.set(r.split("@")[1]!, [...(byDomain.get(r.split("@")[1]!) ?? []), r]);
  const routes = [...byDomain].map(([domain, rcpts]) => ({ route: { kind: "remote" as const, domain }, recipients: rcpts }));
  const entries = await Effect.runPromise(spool.accept({ id, sender: "s@x.test", receivedAt: at, body, routes, attributes }));
  return { id, entries };
};

const reply = (code: number, enhanced: string, text: string) => ({ _tag: "Reply" as const, code, enhanced, text });

/** An attempt at mx.a.test where each recipient got the reply given for it. */
const attemptAt = (at: number, results: Record<string, ReturnType<typeof reply>>): AttemptRecord => ({
  at,
  mx: "mx.a.test",
  ip: "192.0.2.1",
  results: Object.entries(results).map(([rcpt, result]) => ({
    rcpt,
    status: result.code < 300 ? "delivered" : result.code < 500 ? "deferred" : "failed",
    result,
    ...(result.code < 300 ? {} : { category: "other" as const }),
  })),
});

/** What settle is given after an attempt: the entry as it waits again, when some recipients still wait. */
const waitingAfter = (entry: QueueEntry, attempt: AttemptRecord, nextAt: number): QueueEntry | undefined => {
  const waiting = attempt.results.filter((r) => r.status === "deferred").map((r) => r.rcpt);
  return waiting.length === 0
    ? undefined
    : { ...entry, recipients: waiting, attempts: entry.attempts + 1, nextAttemptAt: nextAt, reason: "temporary-reply", history: [...(entry.history ?? []), attempt] };
};

const context = (spool: Spool) => ({ nodeId: "n1", spool, isSuspended: spool.isSuspended, isInFlight: () => false, tenantOf: () => "default", maxStatusBytes: 1024 * 1024 });

test("a recipient delivered while another waits is remembered, and both once the message is gone, with labels and attempts", async () => {
  const { dir, root, spool } = await fresh();
  const t = 5_000_000;
  const { id, entries } = await accept(spool, t, ["r1@a.test", "r2@a.test"], { tags: ["welcome"], metadata: { user: "42" }, dsn: { ret: "FULL" } });
  const first = attemptAt(t + 100, { "r1@a.test": reply(250, "2.0.0", "ok"), "r2@a.test": reply(451, "4.3.0", "not now") });
  const next = waitingAfter(entries[0]!, first, t + 60_000)!;
  await Effect.runPromise(spool.settle(entries[0]!, next, [], { attempt: first }));

  const midway = localStatus(context(spool), id)!;
  assert.equal(midway.message.state, "pending");
  assert.deepEqual(midway.message.tags, ["welcome"]);
  assert.deepEqual(
    midway.recipients.map((r) => [r.recipient, r.state, r.attempts, r.nextAttemptAt, r.finishedAt]),
    [
      ["r1@a.test", "delivered", 1, undefined, t + 100],
      ["r2@a.test", "deferred", 1, t + 60_000, undefined],
    ],
  );
  assert.deepEqual(midway.recipients[1]!.history.map((a) => [a.mx, a.status, a.reply]), [["mx.a.test", "deferred", "451 4.3.0 not now"]]);

  const second = attemptAt(t + 60_100, { "r2@a.test": reply(550, "5.1.1", "no such user") });
  await Effect.runPromise(spool.settle(next, undefined, [], { attempt: second }));
  assert.equal(spool.hasMessage(id), false, "the spool let go of the message");
  assert.deepEqual(spool.entriesOf(id), []);

  // Kept durably: read again after the LMDB environment is reopened.
  await root.close();
  const reopened = openAt(dir).spool;
  const done = localStatus(context(reopened), id)!;
  assert.equal(done.message.state, "partial");
  assert.equal(done.message.sender, "s@x.test");
  assert.deepEqual(done.message.metadata, { user: "42" });
  assert.deepEqual(reopened.finished(id)!.labels, { tags: ["welcome"], metadata: { user: "42" } }, "DSN parameters are not copied");
  assert.deepEqual(
    done.recipients.map((r) => [r.recipient, r.state, r.finishedAt, r.history.map((a) => a.reply)]),
    [
      ["r1@a.test", "delivered", t + 100, ["250 2.0.0 ok"]],
      ["r2@a.test", "bounced", t + 60_100, ["451 4.3.0 not now", "550 5.1.1 no such user"]],
    ],
  );
});

test("an entry an operator removes is remembered as removed; a suspended queue's recipient shows held", async () => {
  const { spool } = await fresh();
  const { id, entries } = await accept(spool, 7_000_000, ["r@a.test", "r@b.test"]);
  await Effect.runPromise(spool.suspend("b.test"));
  await Effect.runPromise(spool.finish(entries[0]!));
  const status = localStatus(context(spool), id)!;
  assert.deepEqual(
    status.recipients.map((r) => [r.recipient, r.state, r.nextAttemptAt]),
    [
      ["r@a.test", "removed", undefined],
      ["r@b.test", "held", undefined],
    ],
  );
  assert.equal(localStatus(context(spool), newMessageId(7_000_000)), undefined, "a message this node never held");
});

test("pruning forgets finished messages older than the cut, and keeps those whose message still waits", async () => {
  const { spool } = await fresh();
  const t = 9_000_000;
  const gone = await accept(spool, t, ["r@a.test"]);
  const waiting = await accept(spool, t, ["r1@a.test", "r2@a.test"]);
  await Effect.runPromise(spool.settle(gone.entries[0]!, undefined, [], { attempt: attemptAt(t + 10, { "r@a.test": reply(250, "2.0.0", "ok") }) }));
  const partly = attemptAt(t + 10, { "r1@a.test": reply(250, "2.0.0", "ok"), "r2@a.test": reply(451, "4.3.0", "later") });
  await Effect.runPromise(spool.settle(waiting.entries[0]!, waitingAfter(waiting.entries[0]!, partly, t + 1_000), [], { attempt: partly }));
  assert.equal(spool.finishedCount(), 2);

  assert.equal(await Effect.runPromise(spool.pruneFinished(t + 5, 10)), 0, "nothing is older than the cut yet");
  assert.equal(await Effect.runPromise(spool.pruneFinished(t + 1_000, 10)), 1);
  assert.equal(spool.finished(gone.id), undefined);
  assert.equal(localStatus(context(spool), gone.id), undefined);
  assert.deepEqual(spool.finished(waiting.id)!.entries[0]!.recipients.map((r) => [r.rcpt, r.state]), [["r1@a.test", "delivered"]]);
  assert.equal(await Effect.runPromise(spool.pruneFinished(t + 1_000, 10)), 0, "the kept record was dated anew");
});
