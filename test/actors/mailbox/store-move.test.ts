// The store's part of a mailbox move, between two real LMDB environments: a snapshot of
// one, staged and replaced into the other, is the same mailbox (UIDs, UIDVALIDITY, flags,
// duplicate detection, subscriptions, the \Recent mark), with each body stored once;
// removing it leaves nothing behind.
import { test } from "node:test";
import assert from "node:assert/strict";
import { Effect } from "effect";
import { INBOX, openMailboxStore } from "../../../actors/mailbox/store.ts";
import { openHeldDatabase } from "../../../actors/mailbox/holdings.ts";
import { temporaryLmdb } from "../../support/lmdb.ts";

const lmdb = temporaryLmdb("tern-move-");
const run = <A, E>(effect: Effect.Effect<A, E>) => Effect.runPromise(effect);
const body = (text: string) => Buffer.from(`Subject: ${text}\r\n\r\n${text}\r\n`);

test("snapshot → stage → replace gives the same mailbox on the other node; remove clears the source", async () => {
  const [a, b] = [await lmdb.fresh(), await lmdb.fresh()];
  const source = openMailboxStore(a.root);
  const target = openMailboxStore(b.root);
  const user = "bob@example.test";
  for (const n of [1, 2, 3]) await run(source.deliver(user, `entry-${n}`, body(`m${n}`)));
  await run(source.createFolder(user, "Archive"));
  await run(source.copy(user, INBOX, [1], "Archive"));
  await run(source.setFlags(user, INBOX, [2], ["\\Seen"], "add"));
  await run(source.subscribe(user, "Archive"));
  await run(source.claimRecent(user, INBOX));

  // Pre-copy, then a message arrives and one is expunged before the final snapshot.
  const first = source.snapshot(user);
  const bodiesOf = (hashes: Iterable<string>) => new Map([...hashes].map((hash) => [hash, source.bodyByHash(hash)!]));
  await run(target.stage(user, first.messages, bodiesOf(new Set(first.messages.map((m) => m.body)))));
  assert.equal(target.folders(user).length, 0, "staged rows are not a mailbox yet");
  await run(source.deliver(user, "entry-4", body("m4")));
  await run(source.expunge(user, INBOX, [3]));
  const last = source.snapshot(user);
  const missing = last.messages.filter((m) => !target.hasBody(m.body)).map((m) => m.body);
  let inside = false;
  await run(target.replace(last, bodiesOf(missing), () => void (inside = true)));
  assert.ok(inside);

  assert.deepEqual(target.folders(user), source.folders(user));
  assert.deepEqual(target.list(user, INBOX), source.list(user, INBOX));
  assert.deepEqual(target.list(user, "Archive"), source.list(user, "Archive"));
  assert.deepEqual(target.usage(user), source.usage(user));
  assert.deepEqual(target.subscriptions(user), ["Archive", INBOX], "subscriptions come along");
  assert.equal(target.status(user, INBOX)!.recentFrom, 4, "what a session was told of as recent before the move stays told");
  assert.deepEqual(target.body(user, INBOX, 4), source.body(user, INBOX, 4));
  assert.equal(target.body(user, INBOX, 3), undefined, "the message expunged before the freeze did not come along");
  assert.ok(openHeldDatabase(b.root).get(user), "the target holds it");
  assert.equal((await run(target.deliver(user, "entry-2", body("m2")))).duplicate, true, "a redelivery is still a duplicate");
  // New mail on the target continues the UIDs.
  assert.equal((await run(target.deliver(user, "entry-5", body("m5")))).uid, 5);

  await run(source.remove(user, () => undefined));
  assert.deepEqual(source.folders(user), []);
  assert.deepEqual(source.snapshot(user).subscribed, undefined, "the subscriptions went with the rest");
  assert.equal(source.snapshot(user).messages.length, 0);
  assert.equal(source.snapshot(user).deliveries.length, 0);
  assert.equal(openHeldDatabase(a.root).get(user), undefined);
  for (const m of first.messages) assert.equal(source.hasBody(m.body), false, "no body left behind");
});

test("replace fails as a whole when a body is neither stored nor given", async () => {
  const [a, b] = [await lmdb.fresh(), await lmdb.fresh()];
  const source = openMailboxStore(a.root);
  const target = openMailboxStore(b.root);
  await run(source.deliver("eve@example.test", "e1", body("x")));
  const failed = await Effect.runPromise(Effect.result(target.replace(source.snapshot("eve@example.test"), new Map(), () => undefined)));
  assert.equal(failed._tag, "Failure");
  assert.deepEqual(target.folders("eve@example.test"), []);
  assert.equal(openHeldDatabase(b.root).get("eve@example.test"), undefined);
});
