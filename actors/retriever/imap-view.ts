// A selected folder as one IMAP session sees it: messages in sequence order, the ones that
// are \Recent to this session, resolved sequence sets, the untagged updates (EXPUNGE,
// EXISTS, FETCH FLAGS) that bring the session up to date with the owner's state, and
// SEARCH evaluated over messages. Pure.
//
// \Recent is the session's, not the message's (RFC 3501 §2.3.2): the owner hands each
// message to one session as recent (the first SELECT, or the selected session that hears
// of it first and claims it); the view keeps those UIDs and adds \Recent to their flags
// wherever flags are shown, and SEARCH RECENT/NEW/OLD test it.
import type { SearchKey, SequenceSet } from "../../protocol/imap/command.ts";
import { headerFields } from "../../protocol/imap/mime.ts";
import type { FolderInfo, MessageInfo } from "../../protocol/mailbox.ts";

export interface SelectedView {
  readonly folder: string;
  readonly readOnly: boolean;
  uidValidity: number;
  uidNext: number;
  /** Sequence number n is messages[n - 1]. */
  messages: MessageInfo[];
  /** UIDs that are \Recent to this session. */
  recent: ReadonlySet<number>;
}

/** UIDs from `from` up to (not including) `to` (the owner's answer to a view ask). */
export interface RecentRange {
  readonly from: number;
  readonly to: number;
}

/** The UIDs of `messages` in `range`, added to `known`. */
const recentAmong = (known: ReadonlySet<number>, messages: ReadonlyArray<MessageInfo>, range: RecentRange | undefined): ReadonlySet<number> => {
  if (range === undefined || range.from >= range.to) return known;
  const inRange = messages.filter((message) => message.uid >= range.from && message.uid < range.to && !known.has(message.uid));
  return inRange.length === 0 ? known : new Set([...known, ...inRange.map((message) => message.uid)]);
};

export const viewOf = (folder: FolderInfo, messages: ReadonlyArray<MessageInfo>, readOnly: boolean, recent?: RecentRange): SelectedView => ({
  folder: folder.name,
  readOnly,
  uidValidity: folder.uidValidity,
  uidNext: folder.uidNext,
  messages: [...messages],
  recent: recentAmong(new Set(), messages, recent),
});

/** A message's flags as this session shows them: \Recent added when it is recent here. */
export const flagsOf = (view: SelectedView, message: MessageInfo): ReadonlyArray<string> =>
  view.recent.has(message.uid) ? [...message.flags, "\\Recent"] : message.flags;

/**
 * Membership in a sequence set, for a view: the set's ranges (`*` the largest number in
 * the view) sorted and merged once, then each number is a binary search. A client may
 * send thousands of ranges against thousands of messages: never ranges × messages work.
 */
export const setMembership = (view: SelectedView, set: SequenceSet, byUid: boolean): ((n: number) => boolean) => {
  const count = view.messages.length;
  const largest = count === 0 ? 0 : byUid ? view.messages[count - 1]!.uid : count;
  const ranges = set
    .map(({ from, to }) => {
      const a = from === "*" ? largest : from;
      const b = to === "*" ? largest : to;
      return [Math.min(a, b), Math.max(a, b)] as [number, number];
    })
    .sort((x, y) => x[0] - y[0]);
  const merged: Array<[number, number]> = [];
  for (const range of ranges) {
    const last = merged[merged.length - 1];
    if (last !== undefined && range[0] <= last[1] + 1) last[1] = Math.max(last[1], range[1]);
    else merged.push([range[0], range[1]]);
  }
  return (n) => {
    let low = 0;
    let high = merged.length - 1;
    while (low <= high) {
      const middle = (low + high) >>> 1;
      const [from, to] = merged[middle]!;
      if (n < from) high = middle - 1;
      else if (n > to) low = middle + 1;
      else return true;
    }
    return false;
  };
};

/** The messages a sequence set names, in sequence order, each with its sequence number. */
export const resolveSet = (view: SelectedView, set: SequenceSet, byUid: boolean): ReadonlyArray<{ readonly seq: number; readonly message: MessageInfo }> => {
  if (view.messages.length === 0) return [];
  const has = setMembership(view, set, byUid);
  const picked: Array<{ seq: number; message: MessageInfo }> = [];
  view.messages.forEach((message, index) => {
    if (has(byUid ? message.uid : index + 1)) picked.push({ seq: index + 1, message });
  });
  return picked;
};

const flagList = (flags: ReadonlyArray<string>) => `(${flags.join(" ")})`;

/** CONDSTORE: a message from a node that does not keep modification sequences counts as 1. */
export const modSeqOf = (message: MessageInfo): number => message.modSeq ?? 1;

export type Synced =
  | { readonly _tag: "Synced"; readonly lines: string[]; readonly view: SelectedView }
  /** The folder was made anew (a new UIDVALIDITY): nothing the client knows holds. */
  | { readonly _tag: "Recreated" };

/**
 * The untagged responses that take the session from `view` to `fresh`, and the view
 * after them. Without `expunges` (during FETCH, STORE, SEARCH: RFC 3501 §7.4.1) messages
 * removed meanwhile stay in the view and no EXPUNGE is sent. With `condstore` (RFC 7162)
 * a flag update also carries the message's MODSEQ. `recent`: the UIDs the owner says are
 * \Recent to this session now (those it claimed on this resync).
 */
export const syncView = (
  view: SelectedView,
  fresh: FolderInfo,
  latest: ReadonlyArray<MessageInfo>,
  expunges: boolean,
  condstore = false,
  recent?: RecentRange,
): Synced => {
  const lines: string[] = [];
  const byUid = new Map(latest.map((message) => [message.uid, message]));
  let messages = view.messages;
  // Owners that test the UIDVALIDITY an ask names refuse it before this; older ones answer.
  if (fresh.uidValidity !== view.uidValidity) return { _tag: "Recreated" };
  const recentNow = recentAmong(view.recent, latest, recent);
  if (expunges) {
    for (let index = messages.length - 1; index >= 0; index--) if (!byUid.has(messages[index]!.uid)) lines.push(`* ${index + 1} EXPUNGE`);
    messages = messages.filter((message) => byUid.has(message.uid));
  }
  messages = messages.map((message, index) => {
    const now = byUid.get(message.uid);
    if (now === undefined) return message;
    const wasRecent = view.recent.has(message.uid);
    const isRecent = recentNow.has(message.uid);
    if (now.flags.join(" ") !== message.flags.join(" ") || wasRecent !== isRecent) {
      const flags = isRecent ? [...now.flags, "\\Recent"] : now.flags;
      lines.push(`* ${index + 1} FETCH (UID ${message.uid} FLAGS ${flagList(flags)}${condstore ? ` MODSEQ (${modSeqOf(now)})` : ""})`);
    }
    return now;
  });
  const last = messages.length > 0 ? messages[messages.length - 1]!.uid : 0;
  const added = latest.filter((message) => message.uid > last);
  if (added.length > 0 || lines.some((line) => line.endsWith("EXPUNGE"))) {
    messages = [...messages, ...added];
    lines.push(`* ${messages.length} EXISTS`);
    // RECENT goes with EXISTS when the mailbox's size changes (RFC 3501 §7.3.2).
    lines.push(`* ${messages.filter((message) => recentNow.has(message.uid)).length} RECENT`);
  }
  return { _tag: "Synced", lines, view: { ...view, uidNext: fresh.uidNext, messages, recent: recentNow } };
};

// ---------------------------------------------------------------------------
// SEARCH

/** Does `key` search by MODSEQ (so the answer names the highest MODSEQ found)? */
export const usesModSeq = (key: SearchKey): boolean => {
  switch (key._tag) {
    case "ModSeq":
      return true;
    case "Not":
      return usesModSeq(key.key);
    case "Or":
      return usesModSeq(key.left) || usesModSeq(key.right);
    case "And":
      return key.keys.some(usesModSeq);
    default:
      return false;
  }
};

/** Does evaluating `key` need the message's bytes (headers or body)? */
export const needsBody = (key: SearchKey): boolean => {
  switch (key._tag) {
    case "Header":
    case "Body":
    case "Text":
      return true;
    case "Date":
      return key.of === "sent";
    case "Not":
      return needsBody(key.key);
    case "Or":
      return needsBody(key.left) || needsBody(key.right);
    case "And":
      return key.keys.some(needsBody);
    default:
      return false;
  }
};

export interface SearchSubject {
  readonly seq: number;
  readonly message: MessageInfo;
  /** The message's bytes, when the key needs them. */
  readonly bytes?: Buffer | undefined;
}

const DAY_MS = 86_400_000;
const dayOf = (ms: number) => Math.floor(ms / DAY_MS) * DAY_MS;

const compareDay = (ms: number | undefined, relation: "before" | "on" | "since", day: number): boolean => {
  if (ms === undefined || Number.isNaN(ms)) return false;
  const d = dayOf(ms);
  return relation === "before" ? d < day : relation === "on" ? d === day : d >= day;
};

const headerBlock = (bytes: Buffer): Buffer => {
  const end = bytes.indexOf("\r\n\r\n");
  return end === -1 ? bytes : bytes.subarray(0, end + 2);
};

const contains = (haystack: string, needle: string) => haystack.toLowerCase().includes(needle.toLowerCase());

/**
 * A SEARCH key's sequence set resolved once per command (keys are parsed anew for each
 * command, and the view does not change while one is evaluated), not once per message.
 */
const memberships = new WeakMap<SearchKey, { readonly view: SelectedView; readonly messages: ReadonlyArray<MessageInfo>; readonly has: (n: number) => boolean }>();
const membershipOf = (key: Extract<SearchKey, { _tag: "Uid" | "Sequence" }>, view: SelectedView, byUid: boolean) => {
  const known = memberships.get(key);
  if (known !== undefined && known.view === view && known.messages === view.messages) return known.has;
  const has = setMembership(view, key.set, byUid);
  memberships.set(key, { view, messages: view.messages, has });
  return has;
};

export const matches = (key: SearchKey, subject: SearchSubject, view: SelectedView): boolean => {
  const { message } = subject;
  switch (key._tag) {
    case "All":
      return true;
    case "Flag":
      if (key.flag === "\\Recent") return view.recent.has(message.uid) === key.set;
      return message.flags.includes(key.flag) === key.set;
    case "Size":
      return key.relation === "larger" ? message.size > key.octets : message.size < key.octets;
    case "Uid":
      return membershipOf(key, view, true)(message.uid);
    case "Sequence":
      return membershipOf(key, view, false)(subject.seq);
    case "ModSeq":
      return modSeqOf(message) >= key.modseq;
    case "Date":
      if (key.of === "internal") return compareDay(message.internalDate, key.relation, key.day);
      return compareDay(Date.parse(headerFields(headerBlock(subject.bytes ?? Buffer.alloc(0))).find(([name]) => name === "date")?.[1] ?? ""), key.relation, key.day);
    case "Header": {
      const field = key.field.toLowerCase();
      const values = headerFields(headerBlock(subject.bytes ?? Buffer.alloc(0))).filter(([name]) => name === field);
      return values.some(([, value]) => contains(value, key.value));
    }
    case "Body": {
      const bytes = subject.bytes ?? Buffer.alloc(0);
      const end = bytes.indexOf("\r\n\r\n");
      return contains(bytes.toString("utf8", end === -1 ? bytes.length : end + 4), key.value);
    }
    case "Text":
      return contains((subject.bytes ?? Buffer.alloc(0)).toString("utf8"), key.value);
    case "Not":
      return !matches(key.key, subject, view);
    case "Or":
      return matches(key.left, subject, view) || matches(key.right, subject, view);
    case "And":
      return key.keys.every((inner) => matches(inner, subject, view));
  }
};
