// The chunked path for frames over NATS's max payload, on the real NATS at 127.0.0.1:4222:
// large requests and replies arrive whole, small ones stay inline (and interoperate with
// the plain endpoints), and a vanished or lying sender fails typed, never hangs.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { Clock, Deferred, Effect, Exit, ManagedRuntime, Schema, Scope } from "effect";
import { TestClock } from "effect/testing";
import { connect, createInbox, type NatsConnection } from "@nats-io/transport-node";
import { fetchBlob, maxPayloadOf, MAX_BLOB_BYTES, offerBlob } from "../../../actors/runtime/blobs.ts";
import { callChunkedEndpoint, callEndpoint, serveChunkedEndpoint, serveEndpoint, servedInScope, type Endpoint } from "../../../actors/runtime/remote.ts";
import { MalformedMessage, StoreError } from "../../../protocol/errors.ts";

let nc: NatsConnection;

before(async () => {
  nc = await connect({ servers: ["nats://127.0.0.1:4222"], name: "tern-test-chunked" });
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
  const subscription = serveChunkedEndpoint(nc, subject, Echo, echo, { timeoutMs: 5_000 });
  try {
    const body = randomBytes(12 * 1024 * 1024 + 3);
    const reply = await Effect.runPromise(callChunkedEndpoint(nc, subject, Echo, { tag: "big" }, { timeoutMs: 5_000, attachment: body }));
    assert.deepEqual(reply.value, { tag: "big", size: body.length, sha256: sha256(body) });
    assert.equal(sha256(reply.attachment!), sha256(Buffer.from(body).reverse()));
  } finally {
    subscription.unsubscribe();
  }
});

test("JSON larger than the max payload travels too", async () => {
  const subject = createInbox();
  const subscription = serveChunkedEndpoint(nc, subject, Echo, echo, { timeoutMs: 5_000 });
  try {
    const pad = "x".repeat(3 * 1024 * 1024);
    const reply = await Effect.runPromise(callChunkedEndpoint(nc, subject, Echo, { tag: "json", pad }, { timeoutMs: 5_000 }));
    assert.equal(reply.value.pad, pad);
  } finally {
    subscription.unsubscribe();
  }
});

test("small frames stay inline, so chunked and plain endpoints talk to each other", async () => {
  const plainSubject = createInbox();
  const chunkedSubject = createInbox();
  const plain = serveEndpoint(nc, plainSubject, Echo, echo);
  const chunked = serveChunkedEndpoint(nc, chunkedSubject, Echo, echo, { timeoutMs: 5_000 });
  try {
    const body = Buffer.from("small body");
    const one = await Effect.runPromise(callChunkedEndpoint(nc, plainSubject, Echo, { tag: "1" }, { timeoutMs: 5_000, attachment: body }));
    const two = await Effect.runPromise(callEndpoint(nc, chunkedSubject, Echo, { tag: "2" }, { timeoutMs: 5_000, attachment: body }));
    for (const reply of [one, two]) assert.equal(Buffer.from(reply.attachment!).toString(), "ydob llams");
  } finally {
    plain.unsubscribe();
    chunked.unsubscribe();
  }
});

/** An offer made outside any test clock (the live Clock). */
const offer = (bytes: Uint8Array, ttlMs: number) => Effect.runSync(offerBlob(nc, bytes, ttlMs));

/** The typed error a failed pull ended with. */
const pullError = async (ref: unknown) => {
  const exit = await Effect.runPromiseExit(fetchBlob(nc, "test", ref, 1_000));
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
    { subject: "_INBOX.x", size: MAX_BLOB_BYTES + 1, chunkSize: 1000, sha256: "0".repeat(64) },
    { subject: "", size: 10, chunkSize: 1000, sha256: "0".repeat(64) },
    { size: 10 },
    "not a ref",
  ]) {
    assert.ok((await pullError(ref)) instanceof MalformedMessage, JSON.stringify(ref));
  }
});

test("the offer stops serving once the puller is done", async () => {
  const offered = offer(randomBytes(100_000), 10_000);
  const pulled = await Effect.runPromise(fetchBlob(nc, "test", offered.ref, 1_000));
  assert.equal(pulled.length, 100_000);
  await nc.flush();
  await assert.rejects(nc.request(offered.ref.subject, Buffer.alloc(4), { timeout: 1_000 }), /no responders|503|timeout/i);
});

// Time under control: a TestClock is the Clock of everything run through `testRuntime`.
const testRuntime = ManagedRuntime.make(TestClock.layer());
after(() => testRuntime.dispose());

test("an offer nobody pulls is withdrawn when its TTL runs out (TestClock)", async () => {
  const offered = await testRuntime.runPromise(offerBlob(nc, randomBytes(10_000), 30_000));
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
      yield* servedInScope((run) => serveChunkedEndpoint(nc, subject, Clocked, whatTimeIsIt, { timeoutMs: 5_000, run }));
    }).pipe(Scope.provide(scope)),
  );
  const reply = await Effect.runPromise(callChunkedEndpoint(nc, subject, Clocked, { tag: "t" }, { timeoutMs: 5_000 }));
  assert.equal(reply.value.now, 1_234_000, "the test clock's time, not the live clock's");

  await Effect.runPromise(Scope.close(scope, Exit.void));
  await nc.flush();
  const gone = await Effect.runPromiseExit(callChunkedEndpoint(nc, subject, Clocked, { tag: "t" }, { timeoutMs: 1_000 }));
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
  await testRuntime.runPromise(servedInScope((run) => serveChunkedEndpoint(nc, subject, Clocked, slow, { timeoutMs: 5_000, run })).pipe(Scope.provide(scope)));
  const asked = Effect.runPromiseExit(callChunkedEndpoint(nc, subject, Clocked, { tag: "t" }, { timeoutMs: 2_000 }));
  await Effect.runPromise(Deferred.await(started));
  await Effect.runPromise(Scope.close(scope, Exit.void));
  await Effect.runPromise(Deferred.await(interrupted).pipe(Effect.timeout(1_000)));
  assert.ok(Exit.isFailure(await asked), "the asker gets no answer from a handler that was stopped");
});
