// LSUB: only subscribed names, \Noselect for the gone and for levels `%` stops at.
import { test } from "node:test";
import assert from "node:assert/strict";
import { listPattern } from "../../../protocol/imap/list-pattern.ts";
import { lsubEntries } from "../../../protocol/imap/lsub.ts";

const existing = ["INBOX", "Archive", "Archive/2024", "Sent", "Work", "Work/Projects"];
const lsub = (pattern: string, subscribed: string[]) =>
  lsubEntries(listPattern(pattern), subscribed, existing).map((entry) => `${entry.name}${entry.noselect ? " \\Noselect" : ""}${entry.children ? " +" : ""}`);

test("only subscribed names are listed, folders that are gone with \\Noselect", () => {
  assert.deepEqual(lsub("*", ["INBOX", "Sent", "Deleted/Old"]), ["Deleted/Old \\Noselect", "INBOX", "Sent"]);
  assert.deepEqual(lsub("*", []), []);
  assert.deepEqual(lsub("S*", ["INBOX", "Sent"]), ["Sent"]);
});

test("a level `%` stops at, above subscribed names, is listed \\Noselect; not with `*`, nor when subscribed itself", () => {
  assert.deepEqual(lsub("%", ["Work/Projects"]), ["Work \\Noselect +"]);
  assert.deepEqual(lsub("*", ["Work/Projects"]), ["Work/Projects"]);
  assert.deepEqual(lsub("%", ["Archive", "Archive/2024"]), ["Archive +"]);
  assert.deepEqual(lsub("Work/%", ["Work/Projects/a/b"]), ["Work/Projects \\Noselect"]);
  assert.deepEqual(lsub("%", ["Gone/child"]), ["Gone \\Noselect"]);
});

test("INBOX in any case", () => {
  assert.deepEqual(lsub("inbox", ["INBOX"]), ["INBOX"]);
});
