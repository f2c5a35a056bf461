// Mailbox ownership in NATS KV, on a nats-server of the test's own: claims are sticky, a
// re-assert overwrites, and a bucket JetStream lost is noticed (on a check, or when a
// call fails) and created again with a new generation; NATS away makes it unreachable.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { jetstreamManager } from "@nats-io/jetstream";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { Effect, Exit, ManagedRuntime } from "effect";
import { TestClock } from "effect/testing";
import { openMailboxOwners, type MailboxOwners } from "../../cluster/ownership.ts";
import { startNatsServer, type TestNatsServer } from "../support/nats-server.ts";

let nats: TestNatsServer;
let nc: NatsConnection;
let owners: MailboxOwners;
const BUCKET = "tern_test_mailbox_owners";

before(async () => {
  nats = await startNatsServer();
  nc = await connect({ servers: [nats.url], maxReconnectAttempts: -1, reconnectTimeWait: 200 });
  owners = await Effect.runPromise(openMailboxOwners(nc, BUCKET));
});

after(async () => {
  await nc.close();
  await nats.dispose();
});

const generationOf = async () => {
  const state = await Effect.runPromise(owners.checkBucket());
  assert.notEqual(state._tag, "Unreachable");
  return state._tag === "Unreachable" ? "" : state.generation;
};

test("a claim is sticky; only a re-assert overwrites, and it says whom it replaced", async () => {
  assert.equal(await Effect.runPromise(owners.claim("alice@x", "a")), "a");
  assert.equal(await Effect.runPromise(owners.claim("alice@x", "b")), "a", "a second claim gets the first owner");
  assert.equal(await Effect.runPromise(owners.assert("alice@x", "b")), "a");
  assert.equal(await Effect.runPromise(owners.assert("alice@x", "b")), "b");
  assert.equal(await Effect.runPromise(owners.assert("new@x", "b")), undefined);
  assert.equal(await Effect.runPromise(owners.ownerOf("new@x")), "b");
});

test("an owner read from KV is trusted for 2 s of the Clock, then read again", async () => {
  const runtime = ManagedRuntime.make(TestClock.layer());
  try {
    await Effect.runPromise(owners.assert("cached@x", "a"));
    const reader = await runtime.runPromise(openMailboxOwners(nc, BUCKET));
    assert.equal(await runtime.runPromise(reader.ownerOf("cached@x")), "a");
    await Effect.runPromise(owners.assert("cached@x", "b"));
    assert.equal(await runtime.runPromise(reader.ownerOf("cached@x")), "a", "read from the cache");
    await runtime.runPromise(TestClock.adjust(2_001));
    assert.equal(await runtime.runPromise(reader.ownerOf("cached@x")), "b");
  } finally {
    await runtime.dispose();
  }
});

test("a lost bucket is created again on the next check, with a new generation", async () => {
  const before = await generationOf();
  await (await jetstreamManager(nc)).streams.delete(`KV_${BUCKET}`);
  const state = await Effect.runPromise(owners.checkBucket());
  assert.equal(state._tag, "Recreated");
  assert.notEqual(state._tag === "Recreated" ? state.generation : before, before);
  assert.equal(owners.problem(), undefined);
  assert.equal(await Effect.runPromise(owners.claim("bob@x", "a")), "a", "the recreated bucket takes claims");
});

test("a call that fails because the bucket is gone has the bucket recreated, and the next call works", async () => {
  const before = await generationOf();
  await Effect.runPromise(owners.assert("carol@x", "a"));
  await (await jetstreamManager(nc)).streams.delete(`KV_${BUCKET}`);
  await new Promise((resolve) => setTimeout(resolve, 2_100)); // past the owner cache
  const failed = await Effect.runPromiseExit(owners.ownerOf("carol@x"));
  assert.ok(Exit.isFailure(failed), "a call on the lost bucket fails: it cannot say who owns carol");
  assert.notEqual(await generationOf(), before, "the failure had the bucket recreated");
  assert.equal(await Effect.runPromise(owners.ownerOf("carol@x")), undefined, "the recreated bucket is empty");
});

test("while NATS is away the bucket is unreachable, and /readyz gets a reason", async () => {
  await nats.stop();
  try {
    const state = await Effect.runPromise(owners.checkBucket());
    assert.equal(state._tag, "Unreachable");
    assert.match(owners.problem() ?? "", /^nats: mailbox owners bucket tern_test_mailbox_owners unreachable/);
  } finally {
    await nats.restart();
  }
  await new Promise((resolve) => setTimeout(resolve, 1_000));
  assert.equal((await Effect.runPromise(owners.checkBucket()))._tag, "Present");
  assert.equal(owners.problem(), undefined);
});
