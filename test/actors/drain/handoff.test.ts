// The hand-off commit protocol between two real spools (LMDB) over the real NATS at
// 127.0.0.1:4222: the receiver commits before the sender removes its copy; a hand-off
// retried after the sender "crashed" between the two is answered duplicate and leaves one
// copy at the receiver (also once the receiver delivered it); a large body crosses as a
// blob; a receiver that drains itself refuses.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { Effect, Exit, Scope } from "effect";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { handOff, handOffEndpoint, prepareHandOff, serveHandOff, type ReceiverDeps } from "../../../actors/drain/handoff.ts";
import { openSpool, type Spool } from "../../../actors/queue/spool.ts";
import { makeBlobTransport } from "../../../actors/runtime/blobs.ts";
import { makePullBudget } from "../../../actors/runtime/pull-budget.ts";
import { callChunkedEndpoint } from "../../../actors/runtime/remote.ts";
import { makeSubjects } from "../../../protocol/subjects.ts";
import { temporaryLmdb } from "../../support/lmdb.ts";
import { acceptMessage } from "../../support/spool.ts";

const subjects = makeSubjects(`t${randomBytes(5).toString("hex")}`);
const lmdb = temporaryLmdb("tern-handoff-");
const limits = { maxBytes: 64 * 1024 * 1024, maxBytesPerPeer: 32 * 1024 * 1024, maxConcurrent: 4 };

let nc: NatsConnection;
let scope: Scope.Closeable;
let sender: Spool;
let receiver: Spool;
let receiverDraining = false;
const received: Array<"committed" | "duplicate"> = [];

before(async () => {
  nc = await connect({ servers: ["nats://127.0.0.1:4222"], name: "tern-test-handoff" });
  sender = openSpool((await lmdb.fresh()).root);
  receiver = openSpool((await lmdb.fresh()).root);
  const deps: ReceiverDeps = {
    nodeId: "b",
    spool: receiver,
    refusal: () => (receiverDraining ? "draining" : undefined),
    rememberMs: 3_600_000,
    now: () => Date.now(),
    received: (outcome) => received.push(outcome),
  };
  scope = Effect.runSync(Scope.make());
  await Effect.runPromise(Scope.provide(serveHandOff(makeBlobTransport(nc, subjects, "b", makePullBudget(limits)), subjects, deps, 5_000), scope));
});

after(async () => {
  await Effect.runPromise(Scope.close(scope, Exit.void));
  await nc.drain();
});

const transportA = () => makeBlobTransport(nc, subjects, "a", makePullBudget(limits));

/** A message queued at the sender for two domains, with an attempt on record for the first. */
const queueAtSender = async () => {
  const entries = await Effect.runPromise(acceptMessage(sender, "from@example.org", ["x@one.test", "y@two.test"]));
  const first = entries[0]!;
  const attempt = { at: Date.now(), via: "dns", results: [{ rcpt: "x@one.test", status: "deferred" as const, result: { _tag: "Timeout" as const, detail: "dns timeout" } }] };
  await Effect.runPromise(sender.settle(first, { ...first, attempts: 1, nextAttemptAt: first.nextAttemptAt + 60_000, reason: "dns-temporary", history: [attempt] }, [], {}));
  return first.messageId;
};

const ready = (messageId: string) => {
  const prepared = prepareHandOff(sender, "a", messageId);
  assert.equal(prepared._tag, "Ready");
  return prepared as Extract<typeof prepared, { _tag: "Ready" }>;
};

test("the receiver commits the message with its entries and attempt state before the sender removes its copy", async () => {
  const id = await queueAtSender();
  const body = sender.body(id)!;
  const outcome = await Effect.runPromise(handOff(transportA(), subjects, sender, ready(id), "b", 5_000));
  assert.deepEqual(outcome, { outcome: "committed", entries: 2 });
  // At the receiver: same message id, entry ids, recipients, attempts and due times.
  const there = receiver.entriesOf(id);
  assert.deepEqual(there.map((e) => [e.id, e.recipients, e.attempts, e.reason]), [
    [`${id}.0`, ["x@one.test"], 1, "dns-temporary"],
    [`${id}.1`, ["y@two.test"], 0, "received"],
  ]);
  assert.equal(there[0]!.history?.length, 1);
  assert.deepEqual(Buffer.from(receiver.body(id)!), Buffer.from(body));
  assert.equal(receiver.message(id)?.attributes?.handoffs, 1);
  // At the sender: gone, with a record of where it went.
  assert.equal(sender.entriesOf(id).length, 0);
  assert.equal(sender.hasMessage(id), false);
  const finished = sender.finished(id)!;
  assert.deepEqual(finished.entries.flatMap((e) => e.recipients.map((r) => [r.rcpt, r.state, r.to])), [
    ["x@one.test", "handed-off", "b"],
    ["y@two.test", "handed-off", "b"],
  ]);
});

test("an operator's hold crosses with its entry: held at the receiver, never due, with the time it was held", async () => {
  const id = await queueAtSender();
  const [first, second] = sender.entriesOf(id);
  await Effect.runPromise(sender.hold([first!, second!], 1_000));
  await Effect.runPromise(sender.release([second!], 6_000)); // held for 5 s, then released
  await Effect.runPromise(handOff(transportA(), subjects, sender, ready(id), "b", 5_000));
  const there = receiver.entriesOf(id);
  assert.deepEqual(there.map((e) => [e.id, e.heldAt, e.heldMs, e.reason]), [
    [`${id}.0`, 1_000, undefined, "held"],
    [`${id}.1`, undefined, 5_000, "released"],
  ]);
  const due = (queue: string) => receiver.dueIn(queue, Date.now() + 86_400_000, 100).filter((e) => e.messageId === id).map((e) => e.id);
  assert.deepEqual(due("one.test"), [], "the held entry is not due at the receiver");
  assert.deepEqual(due("two.test"), [`${id}.1`]);
});

test("a hand-off retried after the sender crashed before removing its copy is a counted duplicate, not a second copy", async () => {
  const id = await queueAtSender();
  const prepared = ready(id);
  received.length = 0;
  // The first try reaches the receiver's commit; the sender dies before `handOver`.
  const first = await Effect.runPromise(callChunkedEndpoint(transportA(), subjects.handOff("b"), handOffEndpoint, prepared.request, { timeoutMs: 5_000, attachment: prepared.body }));
  assert.equal(first.value.outcome, "committed");
  assert.equal(sender.entriesOf(id).length, 2, "the sender still holds its copy");
  const depth = receiver.depth();
  // After the restart the drain tries again: duplicate, and the sender lets go.
  const retry = await Effect.runPromise(handOff(transportA(), subjects, sender, ready(id), "b", 5_000));
  assert.deepEqual(retry, { outcome: "duplicate", entries: 2 });
  assert.deepEqual(received, ["committed", "duplicate"]);
  assert.equal(receiver.depth(), depth, "no second copy at the receiver");
  assert.equal(receiver.entriesOf(id).length, 2);
  assert.equal(sender.entriesOf(id).length, 0);
});

test("a retry that arrives after the receiver delivered the message is still a duplicate", async () => {
  const id = await queueAtSender();
  const prepared = ready(id);
  await Effect.runPromise(callChunkedEndpoint(transportA(), subjects.handOff("b"), handOffEndpoint, prepared.request, { timeoutMs: 5_000, attachment: prepared.body }));
  // The receiver delivers both entries: the message leaves its spool.
  for (const entry of receiver.entriesOf(id)) await Effect.runPromise(receiver.settle(entry, undefined, []));
  assert.equal(receiver.hasMessage(id), false);
  const retry = await Effect.runPromise(handOff(transportA(), subjects, sender, ready(id), "b", 5_000));
  assert.equal(retry.outcome, "duplicate");
  assert.equal(receiver.hasMessage(id), false, "not queued again for a second delivery");
});

test("a body larger than NATS's max payload crosses whole, as a pulled blob", async () => {
  const now = Date.now();
  const id = `${now.toString(36).padStart(9, "0")}BIGBODY1`.toUpperCase();
  const writer = sender.openBody(id);
  const big = randomBytes(3 * 1024 * 1024);
  await writer.append(big);
  await Effect.runPromise(sender.accept({ id, sender: "", receivedAt: now, body: writer, routes: [{ route: { kind: "remote", domain: "big.test" }, recipients: ["z@big.test"] }] }));
  const outcome = await Effect.runPromise(handOff(transportA(), subjects, sender, ready(id), "b", 5_000));
  assert.equal(outcome.outcome, "committed");
  assert.ok(Buffer.from(receiver.body(id)!).equals(big));
  assert.equal(receiver.message(id)?.size, big.length);
});

test("a receiver that drains itself refuses, and the sender keeps its copy", async () => {
  const id = await queueAtSender();
  receiverDraining = true;
  try {
    const exit = await Effect.runPromiseExit(handOff(transportA(), subjects, sender, ready(id), "b", 5_000));
    assert.ok(Exit.isFailure(exit));
    assert.match(String(exit.cause), /HandOffRefused/);
    assert.equal(sender.entriesOf(id).length, 2);
    assert.equal(receiver.hasMessage(id), false);
  } finally {
    receiverDraining = false;
  }
});
