// This node's durable record of the mailboxes it holds: marked by the store with the
// first thing stored for a user, recorded at claim time, derived from a store written
// before the record existed, and still there after a reopen.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Effect } from "effect";
import { open, type RootDatabase } from "lmdb";
import { HELD_DB, openHoldings } from "../../../actors/mailbox/holdings.ts";
import { openMailboxStore } from "../../../actors/mailbox/store.ts";

const withRoot = async (body: (root: () => RootDatabase, reopen: () => Promise<void>) => Promise<void>) => {
  const dir = await mkdtemp(join(tmpdir(), "tern-holdings-"));
  let root = open({ path: join(dir, "db") });
  try {
    await body(() => root, async () => {
      await root.close();
      root = open({ path: join(dir, "db") });
    });
  } finally {
    await root.close();
    await rm(dir, { recursive: true, force: true });
  }
};

test("the first message stored for a user marks the mailbox held, durably", async () => {
  await withRoot(async (root, reopen) => {
    const store = openMailboxStore(root());
    const holdings = await Effect.runPromise(openHoldings(root(), 1));
    assert.equal(holdings.holds("alice@x"), false);
    await Effect.runPromise(store.deliver("alice@x", "E1", Buffer.from("m\r\n")));
    assert.equal(holdings.holds("alice@x"), true);
    // A message refused for quota stores nothing, and marks nothing.
    await Effect.runPromiseExit(store.deliver("bob@x", "E2", Buffer.from("too big\r\n"), { quotaBytes: 1 }));
    assert.equal(holdings.holds("bob@x"), false);
    // Emptied by POP3, still held: its UIDVALIDITY history lives here.
    await Effect.runPromise(store.expunge("alice@x", "INBOX", [1]));
    await reopen();
    const reopened = await Effect.runPromise(openHoldings(root(), 2));
    assert.deepEqual(reopened.users(), ["alice@x"]);
  });
});

test("a claim is recorded before anything is stored, and survives a reopen", async () => {
  await withRoot(async (root, reopen) => {
    const holdings = await Effect.runPromise(openHoldings(root(), 1));
    await Effect.runPromise(holdings.record("carol@x", 5));
    await reopen();
    assert.equal((await Effect.runPromise(openHoldings(root(), 2))).holds("carol@x"), true);
  });
});

test("mailboxes stored before the record existed are derived from the store when it is opened", async () => {
  await withRoot(async (root) => {
    const store = openMailboxStore(root());
    await Effect.runPromise(store.deliver("dave@x", "E1", Buffer.from("m\r\n")));
    await Effect.runPromise(store.createFolder("erin@x", "Archive"));
    // As a store written by a version without the record would be.
    await root().openDB({ name: HELD_DB }).clearAsync();
    const holdings = await Effect.runPromise(openHoldings(root(), 3));
    assert.deepEqual(holdings.users(), ["dave@x", "erin@x"]);
  });
});
