// The LMDB mailbox store on its own: UIDs and UIDVALIDITY, idempotent delivery, bodies
// stored once, quota, folders and flags (what IMAP will need), atomic expunge.
import { after, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { randomBytes } from "node:crypto";
import { Effect, Exit, ManagedRuntime } from "effect";
import { TestClock } from "effect/testing";
import { open, type RootDatabase } from "lmdb";
import { imapOperations } from "../../../actors/mailbox/imap-operations.ts";
import { INBOX, openMailboxStore, type MailboxStore } from "../../../actors/mailbox/store.ts";
import { openHeldDatabase } from "../../../actors/mailbox/holdings.ts";

// The store's writes read the time from the Clock: here a TestClock, moved by hand.
const runtime = ManagedRuntime.make(TestClock.layer());
after(() => runtime.dispose());
const run = <A, E>(effect: Effect.Effect<A, E>) => runtime.runPromise(effect);
const advance = (ms: number) => run(TestClock.adjust(ms));

const withStore = async (body: (store: MailboxStore, root: RootDatabase, reopen: () => MailboxStore) => Promise<void>) => {
  const dir = await mkdtemp(join(tmpdir(), "tern-mbox-"));
  await run(TestClock.setTime(1_700_000_000_000));
  let root = open({ path: join(dir, "db") });
  const reopen = () => {
    void root.close();
    root = open({ path: join(dir, "db") });
    return openMailboxStore(root);
  };
  try {
    await body(openMailboxStore(root), root, reopen);
  } finally {
    await root.close();
    await rm(dir, { recursive: true, force: true });
  }
};

const failure = async <A, E>(effect: Effect.Effect<A, E>): Promise<E> => {
  const exit = await runtime.runPromiseExit(effect);
  assert.ok(Exit.isFailure(exit), "expected a failure");
  const error = exit.cause.reasons.find((reason) => reason._tag === "Fail");
  assert.ok(error && error._tag === "Fail", "expected a typed failure");
  return error.error;
};

const text = (s: string) => Buffer.from(s, "latin1");
const bodyRefCount = (root: RootDatabase) => root.openDB({ name: "mbox.bodyrefs" }).getKeysCount();
const bodyChunkCount = (root: RootDatabase) => root.openDB({ name: "mbox.bodies", encoding: "binary" }).getKeysCount();

test("deliveries get increasing UIDs under one UIDVALIDITY, with size and internal date", () =>
  withStore(async (store) => {
    const first = await run(store.deliver("a@x", "E1.1", text("one\r\n")));
    await advance(5_000);
    const second = await run(store.deliver("a@x", "E2.1", text("second\r\n")));
    assert.deepEqual([first.uid, second.uid], [1, 2]);
    assert.equal(first.uidValidity, second.uidValidity);
    assert.equal(first.uidValidity, 1_700_000_000);
    assert.deepEqual(
      store.list("a@x", "inbox").map((m) => [m.uid, m.size, m.internalDate, m.flags, m.entryId]),
      [
        [1, 5, 1_700_000_000_000, [], "E1.1"],
        [2, 8, 1_700_000_005_000, [], "E2.1"],
      ],
    );
    assert.deepEqual(store.status("a@x", INBOX), { name: INBOX, uidValidity: 1_700_000_000, uidNext: 3, messages: 2, bytes: 13, highestModSeq: 3, recentFrom: 1 });
    assert.deepEqual(store.usage("a@x"), { bytes: 13, messages: 2 });
    assert.equal(store.list("b@x", INBOX).length, 0, "another user's mailbox is separate");
  }));

test("a redelivered queue entry is not stored twice and reports the first copy", () =>
  withStore(async (store, _root, reopen) => {
    const first = await run(store.deliver("a@x", "E1.1", text("hello\r\n")));
    const again = await run(store.deliver("a@x", "E1.1", text("hello\r\n")));
    assert.equal(first.duplicate, false);
    assert.deepEqual(again, { ...first, duplicate: true });
    // Also after a restart (the crash case): the record is durable.
    const reopened = reopen();
    assert.deepEqual(await run(reopened.deliver("a@x", "E1.1", text("hello\r\n"))), { ...first, duplicate: true });
    assert.equal(reopened.list("a@x", INBOX).length, 1);
    assert.deepEqual(reopened.usage("a@x"), { bytes: 7, messages: 1 });
    // The same entry id for another user is another delivery.
    assert.equal((await run(reopened.deliver("b@x", "E1.1", text("hello\r\n")))).duplicate, false);
  }));

test("a body is stored once however many messages share it, and removed with the last", () =>
  withStore(async (store, root) => {
    const body = randomBytes(600 * 1024); // three chunks
    await run(store.deliver("a@x", "E1.1", body));
    await run(store.deliver("b@x", "E1.2", body));
    await run(store.createFolder("a@x", "Archive"));
    const [copied] = await run(store.copy("a@x", INBOX, [1], "Archive"));
    assert.equal(copied, 1);
    assert.equal(bodyRefCount(root), 1);
    assert.equal(bodyChunkCount(root), 3);
    assert.ok(Buffer.from(store.body("a@x", "Archive", 1)!).equals(body));

    assert.equal(await run(store.expunge("a@x", INBOX, [1])), 1);
    assert.equal(await run(store.expunge("b@x", INBOX, [1])), 1);
    assert.ok(Buffer.from(store.body("a@x", "Archive", 1)!).equals(body), "the copy still reads");
    assert.equal(bodyChunkCount(root), 3);
    await run(store.expunge("a@x", "Archive", [1]));
    assert.equal(bodyRefCount(root), 0);
    assert.equal(bodyChunkCount(root), 0, "the last reference removes the chunks");
  }));

test("a large body reads back byte for byte", () =>
  withStore(async (store) => {
    const body = randomBytes(5 * 1024 * 1024 + 17);
    const { uid } = await run(store.deliver("a@x", "big", body));
    assert.ok(Buffer.from(store.body("a@x", INBOX, uid)!).equals(body));
    assert.equal(store.message("a@x", INBOX, uid)!.size, body.length);
  }));

test("quota: a message that would exceed it is refused OverQuota, a redelivery is not, and deleting makes room", () =>
  withStore(async (store) => {
    const quotaBytes = 100;
    await run(store.deliver("a@x", "E1", Buffer.alloc(60), { quotaBytes }));
    const refused = await failure(store.deliver("a@x", "E2", Buffer.alloc(50), { quotaBytes }));
    assert.equal(refused._tag, "OverQuota");
    assert.ok(refused._tag === "OverQuota");
    assert.deepEqual([refused.usedBytes, refused.quotaBytes, refused.messageBytes], [60, 100, 50]);
    assert.equal(refused.detail, "60 of 100 bytes used, message is 50");
    assert.equal(store.list("a@x", INBOX).length, 1, "nothing was stored");
    // A redelivery of what is already stored succeeds whatever the quota.
    assert.equal((await run(store.deliver("a@x", "E1", Buffer.alloc(60), { quotaBytes: 10 }))).duplicate, true);
    await run(store.expunge("a@x", INBOX, [1]));
    assert.equal((await run(store.deliver("a@x", "E2", Buffer.alloc(50), { quotaBytes }))).uid, 2);
  }));

test("expunge removes and marks \\Seen in one step; UIDs are never reused", () =>
  withStore(async (store) => {
    for (const n of [1, 2, 3]) await run(store.deliver("a@x", `E${n}`, text(`m${n}\r\n`)));
    assert.equal(await run(store.expunge("a@x", INBOX, [2, 3, 99], [1])), 2);
    assert.deepEqual(store.list("a@x", INBOX).map((m) => [m.uid, m.flags]), [[1, ["\\Seen"]]]);
    const next = await run(store.deliver("a@x", "E4", text("m4\r\n")));
    assert.equal(next.uid, 4, "UID 4, not a reused 2 or 3");
    assert.equal(store.status("a@x", INBOX)!.uidNext, 5);
  }));

test("folders: create, flags, copy, delete; a recreated folder gets a new UIDVALIDITY", () =>
  withStore(async (store) => {
    await run(store.deliver("a@x", "E1", text("m1\r\n")));
    const archive = await run(store.createFolder("a@x", "Archive"));
    assert.equal((await failure(store.createFolder("a@x", "Archive")))._tag, "FolderExists");
    assert.equal((await failure(store.createFolder("a@x", "inbox")))._tag, "FolderExists", "INBOX is case-insensitive");
    assert.deepEqual(store.folders("a@x").map((f) => f.name), ["Archive", INBOX]);

    await run(store.setFlags("a@x", INBOX, [1], ["\\Flagged", "$Label1"], "add"));
    await run(store.setFlags("a@x", INBOX, [1], ["$Label1"], "remove"));
    assert.deepEqual(store.message("a@x", INBOX, 1)!.flags, ["\\Flagged"]);
    await run(store.setFlags("a@x", INBOX, [1], ["\\Answered"], "replace"));
    assert.deepEqual(store.message("a@x", INBOX, 1)!.flags, ["\\Answered"]);

    assert.deepEqual(await run(store.copy("a@x", INBOX, [1], "Archive")), [1]);
    assert.deepEqual(store.list("a@x", "Archive").map((m) => [m.uid, m.flags]), [[1, ["\\Answered"]]]);
    assert.equal((await failure(store.copy("a@x", INBOX, [1], "Nowhere")))._tag, "NoSuchFolder");
    assert.deepEqual(store.usage("a@x"), { bytes: 8, messages: 2 });

    await run(store.deleteFolder("a@x", "Archive"));
    assert.equal(store.status("a@x", "Archive"), undefined);
    assert.deepEqual(store.usage("a@x"), { bytes: 4, messages: 1 });
    const recreated = await run(store.createFolder("a@x", "Archive"));
    assert.ok(recreated.uidValidity > archive.uidValidity, "a recreated folder must not repeat a UIDVALIDITY");
    assert.equal(recreated.uidNext, 1);
    assert.equal((await failure(store.deleteFolder("a@x", "Nowhere")))._tag, "NoSuchFolder");
  }));

test("CONDSTORE: each append, flag change and expunge takes the folder's next MODSEQ; UNCHANGEDSINCE is tested in the same write", () =>
  withStore(async (store) => {
    await run(store.deliver("a@x", "E1", text("m1\r\n")));
    await run(store.deliver("a@x", "E2", text("m2\r\n")));
    const modSeqs = () => store.list("a@x", INBOX).map((m) => [m.uid, m.modSeq]);
    assert.deepEqual(modSeqs(), [[1, 2], [2, 3]]);
    assert.equal(store.status("a@x", INBOX)!.highestModSeq, 3);

    assert.deepEqual(await run(store.setFlags("a@x", INBOX, [1], ["\\Seen"], "add")), { modified: [] });
    assert.deepEqual(modSeqs(), [[1, 4], [2, 3]]);
    // Setting a flag that is already set changes nothing, so no new MODSEQ.
    await run(store.setFlags("a@x", INBOX, [1], ["\\Seen"], "add"));
    assert.equal(store.status("a@x", INBOX)!.highestModSeq, 4);

    // UNCHANGEDSINCE 3: message 1 (MODSEQ 4) changed since and is left alone; message 2 is flagged.
    assert.deepEqual(await run(store.setFlags("a@x", INBOX, [1, 2], ["\\Flagged"], "add", 3)), { modified: [1] });
    assert.deepEqual(store.list("a@x", INBOX).map((m) => [m.uid, m.flags, m.modSeq]), [[1, ["\\Seen"], 4], [2, ["\\Flagged"], 5]]);

    await run(store.expunge("a@x", INBOX, [2]));
    assert.equal(store.status("a@x", INBOX)!.highestModSeq, 6, "an expunge moves HIGHESTMODSEQ");
    // POP3's UPDATE marks \Seen: a flag change like any other.
    await run(store.deliver("a@x", "E3", text("m3\r\n")));
    await run(store.expunge("a@x", INBOX, [], [3]));
    assert.deepEqual(modSeqs(), [[1, 4], [3, 8]]);
  }));

test("CONDSTORE: records written before MODSEQs were kept count as 1 and go on from there", () =>
  withStore(async (store, root) => {
    // A folder and a message as an older Tern wrote them: no highestModSeq, no modSeq.
    await run(store.deliver("a@x", "E1", text("old\r\n")));
    const folders = root.openDB<Record<string, unknown>, [string, string]>({ name: "mbox.folders" });
    const messages = root.openDB<Record<string, unknown>, [string, string, number]>({ name: "mbox.messages" });
    const { highestModSeq: _h, ...oldFolder } = folders.get(["a@x", INBOX])!;
    const { modSeq: _m, ...oldMessage } = messages.get(["a@x", INBOX, 1])!;
    await folders.put(["a@x", INBOX], oldFolder);
    await messages.put(["a@x", INBOX, 1], oldMessage);
    assert.equal(store.message("a@x", INBOX, 1)!.modSeq, undefined);

    assert.deepEqual(await run(store.setFlags("a@x", INBOX, [1], ["\\Seen"], "add", 1)), { modified: [] }, "MODSEQ 1 is unchanged since 1");
    assert.equal(store.message("a@x", INBOX, 1)!.modSeq, 2);
    await run(store.deliver("a@x", "E2", text("new\r\n")));
    assert.deepEqual(store.list("a@x", INBOX).map((m) => m.modSeq), [2, 3]);
    assert.equal(store.status("a@x", INBOX)!.highestModSeq, 3);
  }));

test("IMAP EXPUNGE removes only what carries \\Deleted now: a session asking from a stale view does not remove a message undeleted meanwhile", () =>
  withStore(async (store) => {
    const ops = imapOperations({ store, user: "a@x", knows: () => true, quotaBytes: () => undefined, changed: () => undefined });
    for (const n of [1, 2, 3]) await run(store.deliver("a@x", `E${n}`, text(`m${n}\r\n`)));
    // Session A saw 1 and 2 \Deleted; session B took \Deleted off 2 since.
    await run(store.setFlags("a@x", INBOX, [1, 2], ["\\Deleted"], "add"));
    await run(store.setFlags("a@x", INBOX, [2], ["\\Deleted"], "remove"));
    const expunged = await run(ops.expunge({ user: "a@x", folder: INBOX, uids: [1, 2] }));
    assert.equal(expunged.value.removed, 1);
    assert.deepEqual(store.list("a@x", INBOX).map((m) => m.uid), [2, 3]);
  }));

test("IMAP MOVE is one transaction: the originals go with the copies, and a move near the quota is not refused", () =>
  withStore(async (store, root) => {
    const quotaBytes = 100;
    const ops = imapOperations({ store, user: "a@x", knows: () => true, quotaBytes: () => quotaBytes, changed: () => undefined });
    await run(store.deliver("a@x", "E1", Buffer.alloc(40), { quotaBytes }));
    await run(store.deliver("a@x", "E2", Buffer.alloc(40), { quotaBytes }));
    await run(store.createFolder("a@x", "Archive"));
    const moved = await run(ops.copy({ user: "a@x", from: INBOX, uids: [1, 2], to: "Archive", move: true }));
    assert.deepEqual([moved.value.source, moved.value.target], [[1, 2], [1, 2]]);
    assert.deepEqual(store.list("a@x", INBOX), []);
    assert.deepEqual(store.list("a@x", "Archive").map((m) => m.size), [40, 40]);
    assert.deepEqual(store.usage("a@x"), { bytes: 80, messages: 2 });
    assert.equal(bodyRefCount(root), 1);
  }));

test("a folder whose name begins above U+FFFF (an emoji) is listed and snapshotted like any other", () =>
  withStore(async (store) => {
    await run(store.createFolder("a@x", "\u{1F4E6} Parcels"));
    await run(store.deliver("a@x", "E1.1", text("one\r\n")));
    assert.ok(store.folders("a@x").some((f) => f.name === "\u{1F4E6} Parcels"), "listed");
    assert.ok(store.snapshot("a@x").folders.some((f) => f.name === "\u{1F4E6} Parcels"), "carried by a move");
  }));

test("a delivery into a folder that does not exist (Junk, for quarantined mail) makes it, subscribed; one that exists keeps its subscription as it is", () =>
  withStore(async (store) => {
    const junk = await run(store.deliver("a@x", "E1", text("m1\r\n"), { folder: "Junk" }));
    assert.deepEqual(store.list("a@x", "Junk").map((m) => [m.uid, m.entryId]), [[junk.uid, "E1"]]);
    assert.deepEqual(store.list("a@x", INBOX), []);
    assert.deepEqual(store.subscriptions("a@x"), [INBOX, "Junk"]);
    await run(store.unsubscribe("a@x", "Junk"));
    await run(store.deliver("a@x", "E2", text("m2\r\n"), { folder: "Junk" }));
    assert.deepEqual(store.subscriptions("a@x"), [INBOX], "the user's choice stands");
    assert.equal((await run(store.deliver("a@x", "E1", text("m1\r\n"), { folder: "Junk" }))).duplicate, true);
  }));

test("subscriptions: a new mailbox starts with INBOX subscribed; SUBSCRIBE needs a folder, UNSUBSCRIBE does not; RENAME takes it along, DELETE leaves it; a reopened store keeps them", () =>
  withStore(async (store, _root, reopen) => {
    await run(store.deliver("a@x", "E1", text("m1\r\n")));
    assert.deepEqual(store.subscriptions("a@x"), [INBOX]);
    await run(store.createFolder("a@x", "Archive"));
    await run(store.createFolder("a@x", "Drafts"));
    assert.deepEqual(store.subscriptions("a@x"), [INBOX], "CREATE does not subscribe");
    await run(store.subscribe("a@x", "Archive"));
    await run(store.subscribe("a@x", "Archive"));
    await run(store.subscribe("a@x", "inbox"));
    assert.equal((await failure(store.subscribe("a@x", "Nowhere")))._tag, "NoSuchFolder");
    assert.deepEqual(store.subscriptions("a@x"), ["Archive", INBOX]);

    await run(store.renameFolder("a@x", "Archive", "Old"));
    assert.deepEqual(store.subscriptions("a@x"), [INBOX, "Old"]);
    await run(store.renameFolder("a@x", "Drafts", "Templates"));
    assert.deepEqual(store.subscriptions("a@x"), [INBOX, "Old"], "an unsubscribed folder renamed stays unsubscribed");
    await run(store.renameFolder("a@x", INBOX, "Saved"));
    assert.deepEqual(store.subscriptions("a@x"), [INBOX, "Old", "Saved"], "INBOX keeps its subscription, the renamed copy gets one");

    await run(store.deleteFolder("a@x", "Old"));
    assert.deepEqual(store.subscriptions("a@x"), [INBOX, "Old", "Saved"], "a deleted folder's subscription stays (RFC 3501 §6.3.4)");
    await run(store.unsubscribe("a@x", "Old"));
    await run(store.unsubscribe("a@x", "Never"));
    assert.deepEqual(reopen().subscriptions("a@x"), [INBOX, "Saved"]);
  }));

test("subscriptions of a mailbox from before they were kept: every folder counts as subscribed until the first change", () =>
  withStore(async (store, root) => {
    await run(store.deliver("a@x", "E1", text("m1\r\n")));
    await run(store.createFolder("a@x", "Archive"));
    await run(store.createFolder("a@x", "Sent"));
    const subscribed = root.openDB({ name: "mbox.subscribed" });
    await subscribed.remove("a@x");
    assert.deepEqual(store.subscriptions("a@x"), ["Archive", INBOX, "Sent"]);
    await run(store.createFolder("a@x", "New"));
    assert.deepEqual(store.subscriptions("a@x"), ["Archive", INBOX, "Sent"], "the folders there before stay subscribed, the new one is not");
    await subscribed.remove("a@x");
    await run(store.unsubscribe("a@x", "Sent"));
    assert.deepEqual(store.subscriptions("a@x"), ["Archive", INBOX, "New"]);
  }));

test("\\Recent: a claim takes the UIDs no one claimed and moves the mark to UIDNEXT; concurrent claims never share a message; no write when there is nothing to take", () =>
  withStore(async (store) => {
    for (const n of [1, 2, 3]) await run(store.deliver("a@x", `E${n}`, text(`m${n}\r\n`)));
    const [first, second] = await run(Effect.all([store.claimRecent("a@x", INBOX), store.claimRecent("a@x", "inbox")], { concurrency: "unbounded" }));
    const ranges = [first, second].map(({ from, to }) => [from, to]);
    assert.deepEqual(ranges.sort(), [[1, 4], [4, 4]], "one claim got 1..3, the other none");
    assert.equal(store.status("a@x", INBOX)!.recentFrom, 4);
    await run(store.deliver("a@x", "E4", text("m4\r\n")));
    const next = await run(store.claimRecent("a@x", INBOX, first.uidValidity));
    assert.deepEqual([next.from, next.to], [4, 5]);
    assert.deepEqual(store.snapshot("a@x").folders.find((f) => f.name === INBOX)?.recentFrom, 5, "a move carries the mark");
    assert.equal((await failure(store.claimRecent("a@x", INBOX, first.uidValidity - 1)))._tag, "UidValidityChanged");
    assert.equal((await failure(store.claimRecent("a@x", "Nowhere")))._tag, "NoSuchFolder");
  }));

test("\\Recent on a folder from before the mark was kept: nothing old is recent, the next new message is", () =>
  withStore(async (store, root) => {
    await run(store.deliver("a@x", "E1", text("old\r\n")));
    const folders = root.openDB<Record<string, unknown>, [string, string]>({ name: "mbox.folders" });
    const { recentFrom: _r, ...oldFolder } = folders.get(["a@x", INBOX])!;
    await folders.put(["a@x", INBOX], oldFolder);
    await run(store.deliver("a@x", "E2", text("new\r\n")));
    const claim = await run(store.claimRecent("a@x", INBOX));
    assert.deepEqual([claim.from, claim.to], [2, 3]);
  }));

test("asks naming the UIDVALIDITY a session selected are refused once the folder was made anew, and act on nothing", () =>
  withStore(async (store) => {
    const ops = imapOperations({ store, user: "a@x", knows: () => true, quotaBytes: () => undefined, changed: () => undefined });
    await run(store.createFolder("a@x", "Work"));
    await run(store.append("a@x", text("old one\r\n"), { folder: "Work" }));
    const selected = (await run(ops.view({ user: "a@x", folder: "Work", claimRecent: true }))).value;
    assert.deepEqual(selected.recent, { from: 1, to: 2 });
    const old = selected.folder.uidValidity;
    // Deleted and made again by another session; a new message takes UID 1 again.
    await run(store.deleteFolder("a@x", "Work"));
    const uidValidity = old;
    assert.equal((await failure(ops.view({ user: "a@x", folder: "Work", uidValidity })))._tag, "NoSuchFolder");
    await run(store.createFolder("a@x", "Work"));
    await run(store.append("a@x", text("new one\r\n"), { folder: "Work" }));
    const asks: ReadonlyArray<Effect.Effect<unknown, { readonly _tag: string }>> = [
      ops.view({ user: "a@x", folder: "Work", uidValidity, claimRecent: true }),
      ops.body({ user: "a@x", folder: "Work", uid: 1, uidValidity }),
      ops.flags({ user: "a@x", folder: "Work", uids: [1], flags: ["\\Deleted"], change: "add", uidValidity }),
      ops.expunge({ user: "a@x", folder: "Work", uids: [1], uidValidity }),
      ops.copy({ user: "a@x", from: "Work", uids: [1], to: INBOX, move: true, uidValidity }),
    ];
    for (const ask of asks) assert.equal((await failure(ask))._tag, "UidValidityChanged");
    assert.deepEqual(store.list("a@x", "Work").map((m) => [m.uid, m.flags]), [[1, []]], "the new folder's message is untouched");
    assert.equal(store.status("a@x", "Work")!.recentFrom, 1, "and still recent for the next SELECT");
    const fresh = await run(ops.flags({ user: "a@x", folder: "Work", uids: [1], flags: ["\\Seen"], change: "add", uidValidity: store.status("a@x", "Work")!.uidValidity }));
    assert.deepEqual(fresh.value.messages.map((m) => m.flags), [["\\Seen"]], "with the current UIDVALIDITY the ask goes through");
  }));

test("a SUBSCRIBE as the very first ask of a new mailbox makes its INBOX first, so the mailbox is held here like any other", () =>
  withStore(async (store, root) => {
    const ops = imapOperations({ store, user: "new@x", knows: () => true, quotaBytes: () => undefined, changed: () => undefined });
    await run(ops.folder({ user: "new@x", folder: "inbox", action: "subscribe" }));
    assert.deepEqual(store.subscriptions("new@x"), [INBOX]);
    assert.ok(openHeldDatabase(root).get("new@x"), "held");
    assert.equal((await failure(ops.folder({ user: "new@x", folder: "Nowhere", action: "subscribe" })))._tag, "NoSuchFolder");
  }));
