// The mailbox actors of one node: typed answers, the maildrop lock and its lease,
// passivation when idle (under TestClock, no sleeps), concurrent deliveries, and the
// mailboxes' scope: closing it stops them.
import { after, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Effect, Exit, ManagedRuntime, Scope } from "effect";
import { TestClock } from "effect/testing";
import { open } from "lmdb";
import { makeLocalMailboxes, passivateIdle, type LocalMailboxes } from "../../../actors/mailbox/actor.ts";
import { openMailboxStore } from "../../../actors/mailbox/store.ts";
import { makeSupervisor } from "../../../actors/runtime/supervisor.ts";

interface Harness {
  readonly mailboxes: LocalMailboxes;
  /** The scope the mailboxes were made in; the harness closes it at the end. */
  readonly scope: Scope.Closeable;
  readonly seen: { passivated: string[]; duplicates: string[]; overQuota: string[]; stored: number };
}

const IDLE_MS = 60_000;

// Everything runs with a TestClock as the Clock: time moves only when a test says so.
const runtime = ManagedRuntime.make(TestClock.layer());
after(() => runtime.dispose());
const run = <A, E>(effect: Effect.Effect<A, E>) => runtime.runPromise(effect);
const advance = (ms: number) => run(TestClock.adjust(ms));

const withMailboxes = async (body: (harness: Harness) => Promise<void>, changed?: (user: string) => void) => {
  const dir = await mkdtemp(join(tmpdir(), "tern-mbox-actor-"));
  const root = open({ path: join(dir, "db") });
  await run(TestClock.setTime(1_700_000_000_000));
  const seen: Harness["seen"] = { passivated: [], duplicates: [], overQuota: [], stored: 0 };
  const scope = Scope.makeUnsafe();
  const mailboxes = await run(
    makeLocalMailboxes({
      store: openMailboxStore(root),
      supervisor: makeSupervisor(),
      knows: (user) => user.endsWith("@x"),
      quotaOf: (user) => (user === "small@x" ? 10 : undefined),
      idleMs: IDLE_MS,
      askTimeoutMs: 5_000,
      stopGraceMs: 1_000,
      observer: {
        stored: () => void seen.stored++,
        duplicate: (_user, entryId) => void seen.duplicates.push(entryId),
        overQuota: (user) => void seen.overQuota.push(user),
        passivated: (user) => void seen.passivated.push(user),
        ...(changed && { changed }),
      },
    }).pipe(Scope.provide(scope)),
  );
  try {
    await body({ mailboxes, scope, seen });
  } finally {
    await run(Scope.close(scope, Exit.void));
    await root.close();
    await rm(dir, { recursive: true, force: true });
  }
};

const failure = async <A, E extends { _tag: string }>(effect: Effect.Effect<A, E>): Promise<E> => {
  const exit = await runtime.runPromiseExit(effect);
  assert.ok(Exit.isFailure(exit), "expected a failure");
  const reason = exit.cause.reasons.find((r) => r._tag === "Fail");
  assert.ok(reason && reason._tag === "Fail", "expected a typed failure");
  return reason.error;
};

const deliver = (mailboxes: LocalMailboxes, user: string, entryId: string, text: string) =>
  run(mailboxes.deliver({ user, entryId }, Buffer.from(text, "latin1")));

test("deliver answers a UIDL; a redelivery is answered as a duplicate and counted", () =>
  withMailboxes(async ({ mailboxes, seen }) => {
    const first = await deliver(mailboxes, "a@x", "E1.1", "Subject: one\r\n\r\nbody\r\n");
    assert.match(first.value.uid, /^1700000000\.1$/);
    assert.equal(first.value.duplicate, false);
    const again = await deliver(mailboxes, "a@x", "E1.1", "Subject: one\r\n\r\nbody\r\n");
    assert.deepEqual(again.value, { uid: first.value.uid, duplicate: true });
    assert.deepEqual(seen.duplicates, ["E1.1"]);
    assert.equal(seen.stored, 1);
    const listed = await run(mailboxes.list({ user: "a@x" }));
    assert.deepEqual(listed.value.messages, [{ uid: first.value.uid, size: 22 }]);
  }));

test("typed errors: unknown user, over quota, no such message", () =>
  withMailboxes(async ({ mailboxes, seen }) => {
    assert.equal((await failure(mailboxes.deliver({ user: "nobody@elsewhere", entryId: "E1" }, Buffer.from("x"))))._tag, "UnknownUser");
    assert.equal((await failure(mailboxes.open({ user: "nobody@elsewhere", holder: "t", leaseMs: 5_000 })))._tag, "UnknownUser");
    const overQuota = await failure(mailboxes.deliver({ user: "small@x", entryId: "E2" }, Buffer.alloc(11)));
    assert.equal(overQuota._tag, "OverQuota");
    assert.deepEqual(seen.overQuota, ["small@x"]);
    await deliver(mailboxes, "a@x", "E3", "m\r\n");
    for (const uid of ["1700000000.2", "1.1", "garbage", "1700000000"]) {
      assert.equal((await failure(mailboxes.retrieve({ user: "a@x", uid })))._tag, "NoSuchMessage", uid);
    }
  }));

test("retrieve returns the body, or its header and the first lines for TOP", () =>
  withMailboxes(async ({ mailboxes }) => {
    const { value } = await deliver(mailboxes, "a@x", "E1", "Subject: s\r\n\r\nl1\r\nl2\r\nl3\r\n");
    const full = await run(mailboxes.retrieve({ user: "a@x", uid: value.uid }));
    assert.equal(Buffer.from(full.attachment!).toString(), "Subject: s\r\n\r\nl1\r\nl2\r\nl3\r\n");
    const top = await run(mailboxes.retrieve({ user: "a@x", uid: value.uid, topLines: 1 }));
    assert.equal(Buffer.from(top.attachment!).toString(), "Subject: s\r\n\r\nl1\r\n");
    assert.equal(top.value.size, top.attachment!.length);
  }));

test("the maildrop lock: one holder at a time, renewed by use, lost when its lease runs out and another takes it", () =>
  withMailboxes(async ({ mailboxes }) => {
    await deliver(mailboxes, "a@x", "E1", "m1\r\n");
    await deliver(mailboxes, "a@x", "E2", "m2\r\n");
    const first = await run(mailboxes.open({ user: "a@x", holder: "n1/pop3/1", leaseMs: 10_000 }));
    assert.equal(first.value.messages.length, 2);
    const busy = await failure(mailboxes.open({ user: "a@x", holder: "n2/pop3/7", leaseMs: 10_000 }));
    assert.deepEqual([busy._tag, "holder" in busy && busy.holder], ["MaildropInUse", "n1/pop3/1"]);
    assert.equal((await failure(mailboxes.renew({ user: "a@x", lock: "not-the-token" })))._tag, "LockLost");

    // Use renews the lease: 8 s + 8 s is past the first lease, but the lock is still held.
    await advance(8_000);
    await run(mailboxes.retrieve({ user: "a@x", uid: first.value.messages[0]!.uid, lock: first.value.lock }));
    await advance(8_000);
    assert.equal((await failure(mailboxes.open({ user: "a@x", holder: "n2/pop3/7", leaseMs: 10_000 })))._tag, "MaildropInUse");

    // Left alone past its lease, the lock goes to the next session; the old one can change nothing.
    await advance(10_001);
    const second = await run(mailboxes.open({ user: "a@x", holder: "n2/pop3/7", leaseMs: 10_000 }));
    const removeFirst = { user: "a@x", lock: first.value.lock, remove: [first.value.messages[0]!.uid], seen: [] };
    assert.equal((await failure(mailboxes.commit(removeFirst)))._tag, "LockLost");
    assert.equal((await run(mailboxes.list({ user: "a@x" }))).value.messages.length, 2, "a lost lock's commit removes nothing");

    // Commit applies and releases in one go.
    const committed = await run(mailboxes.commit({ ...removeFirst, lock: second.value.lock }));
    assert.equal(committed.value.removed, 1);
    const third = await run(mailboxes.open({ user: "a@x", holder: "n1/pop3/2", leaseMs: 10_000 }));
    assert.deepEqual(third.value.messages.map((m) => m.uid), [first.value.messages[1]!.uid]);
    await run(mailboxes.release({ user: "a@x", lock: third.value.lock }));
    await run(mailboxes.release({ user: "a@x", lock: third.value.lock })); // twice is harmless
    await run(mailboxes.open({ user: "a@x", holder: "n1/pop3/3", leaseMs: 10_000 }));
  }));

test("renew keeps an idle session's lock past its first lease; an unrenewed lock expires and goes to the next session", () =>
  withMailboxes(async ({ mailboxes }) => {
    const held = await run(mailboxes.open({ user: "a@x", holder: "n1/pop3/1", leaseMs: 10_000 }));
    for (let n = 0; n < 5; n++) {
      await advance(9_000);
      await run(mailboxes.renew({ user: "a@x", lock: held.value.lock }));
    }
    assert.equal((await failure(mailboxes.open({ user: "a@x", holder: "n2/pop3/1", leaseMs: 10_000 })))._tag, "MaildropInUse", "45 s on, still held");

    await advance(9_999);
    assert.equal((await failure(mailboxes.open({ user: "a@x", holder: "n2/pop3/1", leaseMs: 10_000 })))._tag, "MaildropInUse", "one ms left");
    await advance(1);
    await run(mailboxes.open({ user: "a@x", holder: "n2/pop3/1", leaseMs: 10_000 }));
    assert.equal((await failure(mailboxes.renew({ user: "a@x", lock: held.value.lock })))._tag, "LockLost");
  }));

test("idle mailbox actors are passivated, but not while a session holds the lock; they come back on demand", () =>
  withMailboxes(async ({ mailboxes, seen }) => {
    await deliver(mailboxes, "a@x", "E1", "m1\r\n");
    const opened = await run(mailboxes.open({ user: "b@x", holder: "t", leaseMs: 120_000 }));
    assert.equal(mailboxes.active(), 2);
    await run(mailboxes.sweep());
    assert.equal(mailboxes.active(), 2, "nothing is idle yet");

    await advance(IDLE_MS + 1);
    await run(mailboxes.sweep());
    assert.deepEqual(seen.passivated, ["a@x"], "b@x holds a lock and stays");
    assert.equal(mailboxes.active(), 1);

    // The passivated mailbox answers again, from the store.
    assert.equal((await run(mailboxes.list({ user: "a@x" }))).value.messages.length, 1);
    assert.equal(mailboxes.active(), 2);

    await run(mailboxes.release({ user: "b@x", lock: opened.value.lock }));
    await advance(IDLE_MS + 1);
    await run(mailboxes.sweep());
    assert.equal(mailboxes.active(), 0);
  }));

test("passivateIdle sweeps on its schedule for as long as its scope is open", () =>
  withMailboxes(async ({ mailboxes, seen }) => {
    const passivating = Scope.makeUnsafe();
    await run(passivateIdle(mailboxes, 10_000).pipe(Scope.provide(passivating)));
    await deliver(mailboxes, "a@x", "E1", "m1\r\n");
    await advance(IDLE_MS - 10_000);
    assert.equal(mailboxes.active(), 1, "not idle long enough yet");
    await advance(20_000); // past IDLE_MS, and a sweep came due
    assert.deepEqual(seen.passivated, ["a@x"]);
    assert.equal(mailboxes.active(), 0);

    await run(Scope.close(passivating, Exit.void));
    await deliver(mailboxes, "b@x", "E2", "m2\r\n");
    await advance(10 * IDLE_MS);
    assert.equal(mailboxes.active(), 1, "no sweeps after the scope closed");
  }));

test("closing the mailboxes' scope stops every actor, and asks are answered MailboxUnavailable", () =>
  withMailboxes(async ({ mailboxes, scope }) => {
    await deliver(mailboxes, "a@x", "E1", "m1\r\n");
    await deliver(mailboxes, "b@x", "E2", "m2\r\n");
    assert.equal(mailboxes.active(), 2);
    await run(Scope.close(scope, Exit.void));
    assert.equal(mailboxes.active(), 0);
    assert.equal((await failure(mailboxes.list({ user: "a@x" })))._tag, "MailboxUnavailable");
  }));

test("concurrent deliveries to one mailbox get distinct UIDs and all land", () =>
  withMailboxes(async ({ mailboxes }) => {
    const replies = await Promise.all(Array.from({ length: 300 }, (_, n) => deliver(mailboxes, "a@x", `E${n}`, `message ${n}\r\n`)));
    assert.equal(new Set(replies.map((r) => r.value.uid)).size, 300);
    assert.equal((await run(mailboxes.list({ user: "a@x" }))).value.messages.length, 300);
  }));

test("after stop, asks are answered MailboxUnavailable", () =>
  withMailboxes(async ({ mailboxes }) => {
    await deliver(mailboxes, "a@x", "E1", "m\r\n");
    await run(mailboxes.stop(1_000));
    const refused = await failure(mailboxes.list({ user: "a@x" }));
    assert.equal(refused._tag, "MailboxUnavailable");
  }));

test("a change notice that throws (NATS closed at shutdown) does not turn a committed write into a failure", () =>
  withMailboxes(
    async ({ mailboxes }) => {
      const stored = await deliver(mailboxes, "a@x", "E9.1", "Subject: kept\r\n\r\nbody\r\n");
      assert.equal(stored.value.duplicate, false);
      const listed = await run(mailboxes.list({ user: "a@x" }));
      assert.equal(listed.value.messages.length, 1);
    },
    () => {
      throw new Error("CONNECTION_CLOSED");
    },
  ));
