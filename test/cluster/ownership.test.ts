// Mailbox ownership in NATS KV, on a nats-server of the test's own: claims are sticky, a
// re-assert overwrites, and a bucket JetStream lost is noticed (on a check, or when a
// call fails) and created again with a new generation; NATS away makes it unreachable.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { jetstreamManager, JetStreamApiCodes, JetStreamApiError } from "@nats-io/jetstream";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { Effect, Exit, ManagedRuntime } from "effect";
import { TestClock } from "effect/testing";
import { openMailboxOwners, type MailboxOwners } from "../../cluster/ownership.ts";
import { startNatsServer, type TestNatsServer } from "../support/nats-server.ts";
import { eventually } from "../support/tern-node.ts";

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

/**
 * When JetStream created the bucket's stream (what the code calls its generation), read
 * straight from JetStream so that observing it never makes the code check (and recreate)
 * the bucket; undefined when the stream does not exist.
 */
const streamCreated = async () => {
  const jsm = await jetstreamManager(nc);
  return jsm.streams.info(`KV_${BUCKET}`).then(
    (info) => info.created,
    (error: unknown) => {
      if (error instanceof JetStreamApiError && error.code === JetStreamApiCodes.StreamNotFound) return undefined;
      throw error;
    },
  );
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
  const before = await streamCreated();
  assert.notEqual(before, undefined);
  await (await jetstreamManager(nc)).streams.delete(`KV_${BUCKET}`);
  const state = await Effect.runPromise(owners.checkBucket());
  assert.equal(state._tag, "Recreated");
  assert.equal(state._tag === "Recreated" ? state.generation : undefined, await streamCreated(), "the generation is the new stream's");
  assert.notEqual(await streamCreated(), before);
  assert.equal(owners.problem(), undefined);
  assert.equal(await Effect.runPromise(owners.claim("bob@x", "a")), "a", "the recreated bucket takes claims");
});

test("a call that fails because the bucket is gone has the bucket recreated, and the next call works", async () => {
  // A reader on the TestClock: its cache and its "check at most once a second" both run on it.
  const runtime = ManagedRuntime.make(TestClock.layer());
  try {
    const reader = await runtime.runPromise(openMailboxOwners(nc, BUCKET));
    const before = await streamCreated();
    await runtime.runPromise(reader.assert("carol@x", "a"));
    await (await jetstreamManager(nc)).streams.delete(`KV_${BUCKET}`);
    assert.equal(await runtime.runPromise(reader.ownerOf("carol@x")), "a", "within 2 s the owner comes from the cache");
    assert.equal(await streamCreated(), undefined, "a cached answer checks nothing");
    await runtime.runPromise(TestClock.adjust(2_001)); // past the owner cache and the recheck interval
    const failed = await runtime.runPromiseExit(reader.ownerOf("carol@x"));
    assert.ok(Exit.isFailure(failed), "a call on the lost bucket fails: it cannot say who owns carol");
    const after = await streamCreated();
    assert.notEqual(after, undefined, "the failure had the bucket recreated");
    assert.notEqual(after, before);
    assert.equal(reader.problem(), undefined);
    assert.equal(await runtime.runPromise(reader.ownerOf("carol@x")), undefined, "the recreated bucket is empty");
  } finally {
    await runtime.dispose();
  }
});

test("while NATS is away the bucket is unreachable, and /readyz gets a reason", async () => {
  // Learn the generation as it is now (a reader in the test before recreated the bucket).
  await Effect.runPromise(owners.checkBucket());
  await nats.stop();
  try {
    const state = await Effect.runPromise(owners.checkBucket());
    assert.equal(state._tag, "Unreachable");
    assert.match(owners.problem() ?? "", /^nats: mailbox owners bucket tern_test_mailbox_owners unreachable/);
  } finally {
    await nats.restart();
  }
  // Back on the same store: the bucket is there again, not recreated, once the client has reconnected.
  const state = await eventually(async () => {
    const checked = await Effect.runPromise(owners.checkBucket());
    return checked._tag === "Unreachable" ? undefined : checked;
  }, 10_000, "the bucket reachable again");
  assert.equal(state._tag, "Present");
  assert.equal(owners.problem(), undefined);
});
