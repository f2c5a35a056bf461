// The chunked path for frames over NATS's max payload, on the real NATS at 127.0.0.1:4222:
// large requests and replies arrive whole, small ones stay inline (and interoperate with
// the plain endpoints), and a vanished or lying sender fails typed, never hangs.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { Clock, Deferred, Effect, Exit, Fiber, ManagedRuntime, Schema, Scope } from "effect";
import { TestClock } from "effect/testing";
import { connect, createInbox, type Msg, type NatsConnection } from "@nats-io/transport-node";
import { fetchBlob, makeBlobTransport, maxPayloadOf, MAX_BLOB_BYTES, offerBlob, type BlobTransport } from "../../../actors/runtime/blobs.ts";
import { makePullBudget, type PullLimits } from "../../../actors/runtime/pull-budget.ts";
import { callChunkedEndpoint, callEndpoint, serveChunkedEndpoint, serveEndpoint, servedInScope, type Endpoint } from "../../../actors/runtime/remote.ts";
import { MalformedMessage, StoreError } from "../../../protocol/errors.ts";
import { makeSubjects } from "../../../protocol/subjects.ts";
import { decodeFrame, encodeBlobFrame } from "../../../protocol/wire.ts";
import { eventually } from "../../support/tern-node.ts";

const subjects = makeSubjects(`t${randomBytes(5).toString("hex")}`);
const roomy: PullLimits = { maxBytes: 128 * 1024 * 1024, maxBytesPerPeer: 64 * 1024 * 1024, maxConcurrent: 8 };

let nc: NatsConnection;
/** A node's transport ("t1") with a budget that never gets in the way. */
let link: BlobTransport;
/** The transport of a node of this test's cluster, with a budget of its own. */
const nodeLink = (nodeId: string, limits: PullLimits = roomy) => makeBlobTransport(nc, subjects, nodeId, makePullBudget(limits));

before(async () => {
  nc = await connect({ servers: ["nats://127.0.0.1:4222"], name: "tern-test-chunked" });
  link = nodeLink("t1");
});

after(async () => {
  await nc.drain();
});

const Echo: Endpoint<{ tag: string; pad?: string | undefined }, { tag: string; size: number; sha256: string; pad?: string | undefined }, StoreError> = {
  request: Schema.Struct({ tag: Schema.String, pad: Schema.optional(Schema.String) }),
  response: Schema.Struct({ tag: Schema.String, size: Schema.Number, sha256: Schema.String, pad: Schema.optional(Schema.String) }),
  error: StoreError,
};

const sha256 = (bytes: Uint8Array) => createHash("sha256").update(bytes).digest("hex");

/** Answers with the hash of what arrived and that many bytes reversed. */
const echo = (request: { tag: string; pad?: string | undefined }, attachment: Uint8Array | undefined) => {
  const received = Buffer.from(attachment ?? new Uint8Array());
  return Effect.succeed({
    value: { tag: request.tag, size: received.length, sha256: sha256(received), ...(request.pad !== undefined && { pad: request.pad }) },
    attachment: Buffer.from(received).reverse(),
  });
};

test("the server's max payload is the 1 MB these tests are about", () => {
  assert.ok(maxPayloadOf(nc) <= 1024 * 1024, `max_payload ${maxPayloadOf(nc)}`);
});

test("a 12 MB request and its 12 MB reply cross NATS whole", async () => {
  const subject = createInbox();
  const subscription = serveChunkedEndpoint(link, subject, Echo, echo, { timeoutMs: 5_000 });
  try {
    const body = randomBytes(12 * 1024 * 1024 + 3);
    const reply = await Effect.runPromise(callChunkedEndpoint(link, subject, Echo, { tag: "big" }, { timeoutMs: 5_000, attachment: body }));
    assert.deepEqual(reply.value, { tag: "big", size: body.length, sha256: sha256(body) });
    assert.equal(sha256(reply.attachment!), sha256(Buffer.from(body).reverse()));
  } finally {
    subscription.unsubscribe();
  }
});

test("JSON larger than the max payload travels too", async () => {
  const subject = createInbox();
  const subscription = serveChunkedEndpoint(link, subject, Echo, echo, { timeoutMs: 5_000 });
  try {
    const pad = "x".repeat(3 * 1024 * 1024);
    const reply = await Effect.runPromise(callChunkedEndpoint(link, subject, Echo, { tag: "json", pad }, { timeoutMs: 5_000 }));
    assert.equal(reply.value.pad, pad);
  } finally {
    subscription.unsubscribe();
  }
});

test("small frames stay inline, so chunked and plain endpoints talk to each other", async () => {
  const plainSubject = createInbox();
  const chunkedSubject = createInbox();
  const plain = serveEndpoint(nc, plainSubject, Echo, echo);
  const chunked = serveChunkedEndpoint(link, chunkedSubject, Echo, echo, { timeoutMs: 5_000 });
  try {
    const body = Buffer.from("small body");
    const one = await Effect.runPromise(callChunkedEndpoint(link, plainSubject, Echo, { tag: "1" }, { timeoutMs: 5_000, attachment: body }));
    const two = await Effect.runPromise(callEndpoint(nc, chunkedSubject, Echo, { tag: "2" }, { timeoutMs: 5_000, attachment: body }));
    for (const reply of [one, two]) assert.equal(Buffer.from(reply.attachment!).toString(), "ydob llams");
  } finally {
    plain.unsubscribe();
    chunked.unsubscribe();
  }
});

test("a plain endpoint whose reply is over the max payload answers at once that it is too large, instead of leaving the asker to time out", async () => {
  const subject = createInbox();
  // A small request, a reply padded past what NATS takes.
  const padded = (request: { tag: string }) => Effect.succeed({ value: { tag: request.tag, size: 0, sha256: "", pad: "x".repeat(maxPayloadOf(nc)) } });
  const plain = serveEndpoint(nc, subject, Echo, padded);
  try {
    const started = Date.now();
    const exit = await Effect.runPromiseExit(callEndpoint(nc, subject, Echo, { tag: "big" }, { timeoutMs: 10_000 }).pipe(Effect.flip));
    assert.ok(Exit.isSuccess(exit), "the call failed");
    assert.equal(exit.value._tag, "RemoteUnavailable");
    assert.match(String((exit.value as { detail?: string }).detail), /larger than NATS takes/);
    assert.ok(Date.now() - started < 5_000, `answered after ${Date.now() - started} ms`);
  } finally {
    plain.unsubscribe();
  }
});

/** An offer made outside any test clock (the live Clock). */
const offer = (bytes: Uint8Array, ttlMs: number) => Effect.runSync(offerBlob(nc, link.inboxPrefix, bytes, ttlMs));

/** The typed error a failed pull ended with. */
const pullError = async (ref: unknown) => {
  const exit = await Effect.runPromiseExit(Effect.scoped(fetchBlob(link, "test", ref, 1_000)));
  assert.ok(Exit.isFailure(exit), "the pull should fail");
  const reason = exit.cause.reasons.find((r) => r._tag === "Fail");
  assert.ok(reason?._tag === "Fail", "with a typed failure");
  return reason.error;
};

test("an offer that is gone fails the pull as RemoteUnavailable; a wrong checksum or size as MalformedMessage", async () => {
  const bytes = randomBytes(2_500_000);
  const gone = offer(bytes, 10_000);
  gone.close();
  assert.equal((await pullError(gone.ref))._tag, "RemoteUnavailable");

  // Each pull ends its offer (the puller says it is done), so each case gets its own.
  const lying = offer(bytes, 10_000);
  const corrupt = await pullError({ ...lying.ref, sha256: "0".repeat(64) });
  assert.deepEqual([corrupt._tag, /checksum/.test(corrupt.detail)], ["MalformedMessage", true]);
  const short = offer(bytes, 10_000);
  const longer = await pullError({ ...short.ref, size: bytes.length + 10 });
  assert.deepEqual([longer._tag, /chunk 2 has/.test(longer.detail)], ["MalformedMessage", true]);
});

test("a reference to an absurd size or of the wrong shape is refused before any pull", async () => {
  for (const ref of [
    { subject: `${link.inboxPrefix}.x`, size: MAX_BLOB_BYTES + 1, chunkSize: 1000, sha256: "0".repeat(64) },
    { subject: `${link.inboxPrefix}.x`, size: roomy.maxBytesPerPeer + 1, chunkSize: 1000, sha256: "0".repeat(64) },
    { subject: "", size: 10, chunkSize: 1000, sha256: "0".repeat(64) },
    { size: 10 },
    "not a ref",
  ]) {
    assert.ok((await pullError(ref)) instanceof MalformedMessage, JSON.stringify(ref));
  }
});

test("the offer stops serving once the puller is done", async () => {
  const offered = offer(randomBytes(100_000), 10_000);
  const pulled = await Effect.runPromise(Effect.scoped(fetchBlob(link, "test", offered.ref, 1_000)));
  assert.equal(pulled.length, 100_000);
  await nc.flush();
  await assert.rejects(nc.request(offered.ref.subject, Buffer.alloc(4), { timeout: 1_000 }), /no responders|503|timeout/i);
});

test("a reference to a subject that is not a node inbox of this cluster is refused, and nothing is sent there", async () => {
  const token = randomBytes(4).toString("hex");
  const foreign = [
    `_INBOX.${token}`,
    `evil.subject.${token}`,
    `tern.other${token}.inbox.t1.${token}`, // another cluster's node inbox
    `${subjects.nodeInboxes}.t1.${token}.deeper`,
    `${subjects.nodeInboxes}.${token}`,
  ];
  const heard: string[] = [];
  const listeners = foreign.map((subject) => nc.subscribe(subject, { callback: (_error, msg) => void heard.push(msg.subject) }));
  const subject = createInbox();
  const served = serveChunkedEndpoint(link, subject, Echo, echo, { timeoutMs: 5_000 });
  try {
    await nc.flush();
    for (const offer of foreign) {
      const ref = { subject: offer, size: 2_000_000, chunkSize: 1_000_000, sha256: "0".repeat(64) };
      const refused = await pullError(ref);
      assert.deepEqual([refused._tag, /not a node inbox/.test(refused.detail)], ["MalformedMessage", true], offer);
      // The same reference as a request to a served endpoint: answered malformed, not followed.
      const reply = decodeFrame((await nc.request(subject, encodeBlobFrame(ref), { timeout: 5_000 })).data);
      assert.ok(typeof reply !== "string");
      assert.match(String((reply.json as { malformed?: string }).malformed), /not a node inbox/);
    }
    await nc.flush();
    await new Promise((resolve) => setTimeout(resolve, 200));
    assert.deepEqual(heard, [], "no chunk request and no 'done' was published on a foreign subject");
  } finally {
    served.unsubscribe();
    for (const listener of listeners) listener.unsubscribe();
  }
});

/** What a call ended with: the reply's tag, or the failure's tag and detail. */
const outcomeOf = (exit: Exit.Exit<{ value: { tag: string } }, unknown>) => {
  if (Exit.isSuccess(exit)) return { tag: exit.value.value.tag };
  const reason = exit.cause.reasons.find((r) => r._tag === "Fail");
  const error = reason?._tag === "Fail" ? (reason.error as { _tag: string; detail?: string }) : { _tag: "defect" };
  return { error: error._tag, detail: error.detail ?? "" };
};

/** Serves Echo, but holds every pulled request at a gate: its reservation stays taken until the gate opens. */
const serveHeld = (server: BlobTransport) => {
  const gate = Deferred.makeUnsafe<void>();
  const subject = createInbox();
  const held = (request: { tag: string }, attachment: Uint8Array | undefined) => Deferred.await(gate).pipe(Effect.andThen(echo(request, attachment)));
  const subscription = serveChunkedEndpoint(server, subject, Echo, held, { timeoutMs: 5_000 });
  return { subject, open: () => Effect.runSync(Deferred.succeed(gate, undefined)), close: () => subscription.unsubscribe() };
};

/** Starts calls with 2 MB bodies (each takes the chunked path); `outcomes` fills as they end. */
const callMany = (from: BlobTransport, subject: string, count: number, outcomes: Array<ReturnType<typeof outcomeOf>>) =>
  Array.from({ length: count }, (_, i) =>
    Effect.runPromiseExit(callChunkedEndpoint(from, subject, Echo, { tag: `${i}` }, { timeoutMs: 10_000, attachment: randomBytes(2 * 1024 * 1024) })).then(
      (exit) => void outcomes.push(outcomeOf(exit)),
    ),
  );

test("concurrent requests with large blobs past the cap are answered busy at once; the others succeed; the budget empties after", async () => {
  const server = nodeLink("srv", { maxBytes: 64 * 1024 * 1024, maxBytesPerPeer: 64 * 1024 * 1024, maxConcurrent: 3 });
  const asker = nodeLink("asker");
  const endpoint = serveHeld(server);
  try {
    const outcomes: Array<ReturnType<typeof outcomeOf>> = [];
    const calls = callMany(asker, endpoint.subject, 10, outcomes);
    // Three pulls fill the server; the seven others are refused while those three wait at the gate.
    await eventually(() => (outcomes.length >= 7 ? true : undefined), 10_000, "the refusals");
    assert.equal(outcomes.length, 7, "nothing past the cap waited");
    for (const outcome of outcomes) assert.deepEqual([outcome.error, /pulls in progress/.test(outcome.detail ?? "")], ["RemoteBusy", true]);
    const held = server.budget.inUse();
    assert.equal(held.pulls, 3);
    assert.ok(held.bytes > 3 * 2 * 1024 * 1024 && held.bytes < 3 * (2 * 1024 * 1024 + 1024), `${held.bytes} bytes held`);

    endpoint.open();
    await Promise.all(calls);
    assert.equal(outcomes.filter((o) => o.tag !== undefined).length, 3, "the three held requests were answered");
    assert.deepEqual(server.budget.inUse(), { bytes: 0, pulls: 0 }, "nothing left reserved on the server");
    assert.deepEqual(asker.budget.inUse(), { bytes: 0, pulls: 0 }, "nor on the asker that pulled the replies");
  } finally {
    endpoint.close();
  }
});

test("one peer cannot take a node's whole budget: over its share it is busy while another peer still gets through", async () => {
  const server = nodeLink("srv2", { maxBytes: 64 * 1024 * 1024, maxBytesPerPeer: 5 * 1024 * 1024, maxConcurrent: 8 });
  const greedy = nodeLink("greedy");
  const other = nodeLink("other");
  const endpoint = serveHeld(server);
  try {
    const outcomes: Array<ReturnType<typeof outcomeOf>> = [];
    const calls = callMany(greedy, endpoint.subject, 3, outcomes);
    await eventually(() => (outcomes.length >= 1 ? true : undefined), 10_000, "the refusal");
    assert.deepEqual([outcomes[0]?.error, /from greedy.*per peer/.test(outcomes[0]?.detail ?? "")], ["RemoteBusy", true]);
    const others: Array<ReturnType<typeof outcomeOf>> = [];
    const otherCalls = callMany(other, endpoint.subject, 1, others);
    await eventually(() => (server.budget.inUseBy("other").pulls === 1 ? true : undefined), 10_000, "the other peer's pull");
    assert.equal(server.budget.inUseBy("greedy").pulls, 2);
    endpoint.open();
    await Promise.all([...calls, ...otherCalls]);
    assert.deepEqual(others, [{ tag: "0" }]);
    assert.deepEqual(server.budget.inUse(), { bytes: 0, pulls: 0 });
  } finally {
    endpoint.close();
  }
});

test("an interrupted pull stops asking for chunks at once, tells the offer it is done, and gives its reservation back", async () => {
  // A slow offer: every chunk is answered, 20 ms late, so a pull of 1,000 chunks takes seconds.
  const offerSubject = createInbox(subjects.nodeInbox("slow"));
  const asked: number[] = [];
  let done = 0;
  const slow = nc.subscribe(offerSubject, {
    callback: (_error, msg: Msg) => {
      const seq = Buffer.from(msg.data).readUInt32BE(0);
      if (seq === 0xffff_ffff) return void done++;
      asked.push(seq);
      setTimeout(() => msg.respond(new Uint8Array(1_000)), 20);
    },
  });
  try {
    await nc.flush();
    const puller = nodeLink("puller");
    const ref = { subject: offerSubject, size: 1_000_000, chunkSize: 1_000, sha256: "0".repeat(64) };
    const pulling = Effect.runFork(Effect.scoped(fetchBlob(puller, "test", ref, 30_000)));
    await eventually(() => (asked.length >= 20 ? true : undefined), 5_000, "the chunk requests");
    assert.deepEqual(puller.budget.inUse(), { bytes: 1_000_000, pulls: 1 });
    const interrupting = Date.now();
    await Effect.runPromise(Fiber.interrupt(pulling));
    assert.ok(Date.now() - interrupting < 1_000, "the interruption did not wait for the chunks in flight");
    assert.deepEqual(puller.budget.inUse(), { bytes: 0, pulls: 0 }, "released when interrupted");
    const askedWhenInterrupted = asked.length;
    await nc.flush();
    await new Promise((resolve) => setTimeout(resolve, 300));
    assert.equal(asked.length, askedWhenInterrupted, "no chunk asked for after the interruption");
    assert.ok(askedWhenInterrupted < 1_000, "the pull was still going when interrupted");
    assert.equal(done, 1, "the offer was told the puller is done");
  } finally {
    slow.unsubscribe();
  }
});

// Time under control: a TestClock is the Clock of everything run through `testRuntime`.
const testRuntime = ManagedRuntime.make(TestClock.layer());
after(() => testRuntime.dispose());

test("an offer nobody pulls is withdrawn when its TTL runs out (TestClock)", async () => {
  const offered = await testRuntime.runPromise(offerBlob(nc, link.inboxPrefix, randomBytes(10_000), 30_000));
  const firstChunk = () => nc.request(offered.ref.subject, Buffer.alloc(4), { timeout: 1_000 });
  await testRuntime.runPromise(TestClock.adjust(29_999));
  assert.equal((await firstChunk()).data.length, 10_000, "still offered just before the TTL");
  await testRuntime.runPromise(TestClock.adjust(1));
  await nc.flush();
  await assert.rejects(firstChunk(), /no responders|503|timeout/i);
});

const Clocked: Endpoint<{ tag: string }, { now: number }, StoreError> = {
  request: Schema.Struct({ tag: Schema.String }),
  response: Schema.Struct({ now: Schema.Number }),
  error: StoreError,
};

test("a handler served in a scope runs with the services of the fiber that served it, until the scope closes", async () => {
  const subject = createInbox();
  const scope = Scope.makeUnsafe();
  const whatTimeIsIt = () => Effect.map(Clock.currentTimeMillis, (now) => ({ value: { now } }));
  await testRuntime.runPromise(
    Effect.gen(function* () {
      yield* TestClock.setTime(1_234_000);
      yield* servedInScope((run) => serveChunkedEndpoint(link, subject, Clocked, whatTimeIsIt, { timeoutMs: 5_000, run }));
    }).pipe(Scope.provide(scope)),
  );
  const reply = await Effect.runPromise(callChunkedEndpoint(link, subject, Clocked, { tag: "t" }, { timeoutMs: 5_000 }));
  assert.equal(reply.value.now, 1_234_000, "the test clock's time, not the live clock's");

  await Effect.runPromise(Scope.close(scope, Exit.void));
  await nc.flush();
  const gone = await Effect.runPromiseExit(callChunkedEndpoint(link, subject, Clocked, { tag: "t" }, { timeoutMs: 1_000 }));
  assert.ok(Exit.isFailure(gone), "unsubscribed when the scope closed");
});

test("closing the scope interrupts a handler still running: it outlives nothing it uses", async () => {
  const subject = createInbox();
  const scope = Scope.makeUnsafe();
  const started = Deferred.makeUnsafe<void>();
  const interrupted = Deferred.makeUnsafe<void>();
  // A handler that would wait forever (an hour on the test clock nobody moves).
  const slow = () =>
    Deferred.succeed(started, undefined).pipe(
      Effect.andThen(Effect.sleep(3_600_000)),
      Effect.as({ value: { now: 0 } }),
      Effect.onInterrupt(() => Deferred.succeed(interrupted, undefined)),
    );
  await testRuntime.runPromise(servedInScope((run) => serveChunkedEndpoint(link, subject, Clocked, slow, { timeoutMs: 5_000, run })).pipe(Scope.provide(scope)));
  const asked = Effect.runPromiseExit(callChunkedEndpoint(link, subject, Clocked, { tag: "t" }, { timeoutMs: 2_000 }));
  await Effect.runPromise(Deferred.await(started));
  await Effect.runPromise(Scope.close(scope, Exit.void));
  await Effect.runPromise(Deferred.await(interrupted).pipe(Effect.timeout(1_000)));
  assert.ok(Exit.isFailure(await asked), "the asker gets no answer from a handler that was stopped");
});
