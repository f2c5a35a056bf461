// A selected view's sequence sets: what they name, and in time that does not grow with
// ranges × messages (a client chooses both); resyncs with \Recent and a folder made anew.
import { test } from "node:test";
import assert from "node:assert/strict";
import { flagsOf, matches, resolveSet, syncView, viewOf } from "../../../actors/retriever/imap-view.ts";
import type { SequenceSet } from "../../../protocol/imap/command.ts";

const viewWith = (count: number) =>
  viewOf(
    { name: "INBOX", uidValidity: 1, uidNext: count * 2 + 1, messages: count, bytes: 0, unseen: 0 },
    Array.from({ length: count }, (_, index) => ({ uid: (index + 1) * 2, size: 1, internalDate: 0, flags: [], body: "" })),
    false,
  );

test("sequence sets: ranges either way round, `*`, UIDs beyond the last", () => {
  const view = viewWith(5); // UIDs 2 4 6 8 10
  const seqs = (set: SequenceSet, byUid: boolean) => resolveSet(view, set, byUid).map((hit) => hit.seq);
  assert.deepEqual(seqs([{ from: 4, to: 2 }], false), [2, 3, 4]);
  assert.deepEqual(seqs([{ from: 5, to: "*" }, { from: 1, to: 1 }], false), [1, 5]);
  assert.deepEqual(seqs([{ from: 3, to: 7 }], true), [2, 3]);
  assert.deepEqual(seqs([{ from: 20, to: "*" }], true), [5]);
  assert.deepEqual(seqs([{ from: 1, to: 3 }, { from: 2, to: 9 }], true), [1, 2, 3, 4]);
});

test("a set of thousands of ranges over thousands of messages, in FETCH and in SEARCH, is resolved promptly", { timeout: 10_000 }, () => {
  const view = viewWith(20_000);
  const set: SequenceSet = Array.from({ length: 10_000 }, (_, index) => ({ from: index * 4 + 1, to: index * 4 + 1 }));
  const started = performance.now();
  assert.equal(resolveSet(view, set, false).length, 5_000);
  const key = { _tag: "Uid", set } as const;
  const found = view.messages.filter((message, index) => matches(key, { seq: index + 1, message }, view));
  assert.equal(found.length, 0); // UIDs are even, the set names odd numbers
  const bySeq = { _tag: "Sequence", set } as const;
  assert.equal(view.messages.filter((message, index) => matches(bySeq, { seq: index + 1, message }, view)).length, 5_000);
  assert.ok(performance.now() - started < 2_000, `took ${performance.now() - started} ms`);
});

test("resync: new mail the session claimed comes as EXISTS with RECENT and shows \\Recent; a folder made anew is Recreated", () => {
  const view = viewWith(2); // UIDs 2 4, none recent
  const folder = { name: "INBOX", uidValidity: 1, uidNext: 8, messages: 3, bytes: 0, unseen: 0 };
  const latest = [...view.messages, { uid: 6, size: 1, internalDate: 0, flags: [], body: "" }];
  const synced = syncView(view, folder, latest, true, false, { from: 5, to: 8 });
  assert.equal(synced._tag, "Synced");
  if (synced._tag !== "Synced") return;
  assert.deepEqual(synced.lines, ["* 3 EXISTS", "* 1 RECENT"]);
  assert.deepEqual(flagsOf(synced.view, synced.view.messages[2]!), ["\\Recent"]);
  assert.deepEqual(flagsOf(synced.view, synced.view.messages[0]!), []);
  const elsewhere = syncView(view, folder, latest, true, false, { from: 8, to: 8 });
  assert.deepEqual(elsewhere._tag === "Synced" && elsewhere.lines, ["* 3 EXISTS", "* 0 RECENT"], "claimed by another session: not recent here");
  assert.equal(syncView(view, { ...folder, uidValidity: 2 }, latest, true)._tag, "Recreated");
});
