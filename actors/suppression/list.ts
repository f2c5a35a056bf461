// Every node's in-memory view of the suppression list, fed by a watch of the KV bucket
// (cluster/suppressions.ts): a map from KV key (scope token and address hash, see
// protocol/suppression.ts) to the entry's reason. Checks are synchronous map lookups, so
// the hot paths (RCPT TO, an API submit, each delivery attempt) never wait for NATS; the
// price is that a change made on one node reaches the others within the watch's delay
// (milliseconds), and memory: about 100 bytes per entry (a million entries: ~100 MB).
//
// Only the key and the reason are kept: a listing reads the records it shows from the
// bucket. A reload (the watch started again after trouble) fills a fresh map while the
// current one still answers, then swaps them, so an entry removed while the watch was
// down does not linger.
import {
  GLOBAL_SCOPE,
  hashOfKey,
  normalScope,
  scopeToken,
  suppressionReasons,
  addressHash,
  type SuppressionMatch,
  type SuppressionReason,
} from "../../protocol/suppression.ts";
import { domainOf } from "../common/domains.ts";

/** Fills a fresh map from a snapshot of the bucket; `finish` makes it the view. */
export interface Reload {
  readonly put: (key: string, reason: SuppressionReason) => void;
  readonly remove: (key: string) => void;
  readonly finish: () => void;
}

export interface SuppressionList {
  /** The entry that refuses mail from `sender` to `recipient`: the global one first, then the sender domain's. */
  readonly lookup: (sender: string, recipient: string) => SuppressionMatch | undefined;
  readonly has: (key: string) => boolean;
  readonly put: (key: string, reason: SuppressionReason) => void;
  readonly remove: (key: string) => void;
  readonly reload: () => Reload;
  /** Whether a first snapshot was loaded (before that, every lookup finds nothing). */
  readonly loaded: () => boolean;
  readonly size: () => number;
  /**
   * Keys in key order after `after`, at most `limit`, whose scope token is one of
   * `scopes` (all when undefined) and, with `address`, of that address only; with the
   * number of such keys in all. A scan of the whole map: listing is for operators, not
   * the hot path.
   */
  readonly page: (selection: { readonly scopes?: ReadonlySet<string> | undefined; readonly address?: string | undefined; readonly after?: string | undefined; readonly limit: number }) => {
    readonly keys: ReadonlyArray<string>;
    readonly total: number;
  };
}

/** Reasons are kept as small numbers: one map value per entry, no object. */
const codeOf = new Map(suppressionReasons.map((reason, n) => [reason, n]));

/** The sender domain whose scope applies to mail from `sender`, if it has one that can be a scope. */
export const senderScope = (sender: string): string | undefined => (sender.includes("@") ? normalScope(domainOf(sender)) : undefined);

export const makeSuppressionList = (): SuppressionList => {
  let entries = new Map<string, number>();
  let loaded = false;
  // For pages in key order without sorting the whole map each time: the keys as last
  // sorted, and the keys put since (unsorted). A key removed since stays in `sorted` and is
  // skipped (it is no longer in `entries`); the snapshot is sorted again once enough changed.
  let sorted: string[] = [];
  let since: string[] = [];
  let changes = 0;

  const match = (key: string, scope: string): SuppressionMatch | undefined => {
    const code = entries.get(key);
    return code === undefined ? undefined : { scope, reason: suppressionReasons[code]! };
  };

  const put = (key: string, reason: SuppressionReason) => {
    // Past RESORT_AFTER changes the snapshot is sorted again anyway: `since` stays bounded.
    if (!entries.has(key) && ++changes <= RESORT_AFTER) since.push(key);
    entries.set(key, codeOf.get(reason)!);
  };

  /** The snapshot and the keys put since, both sorted; the snapshot is made again after many changes. */
  const ordered = (): { readonly sorted: ReadonlyArray<string>; readonly since: ReadonlyArray<string> } => {
    if (changes > RESORT_AFTER) {
      sorted = [...entries.keys()].sort();
      since = [];
      changes = 0;
    }
    return { sorted, since: [...since].sort() };
  };

  return {
    lookup: (sender, recipient) => {
      if (entries.size === 0) return undefined;
      const hash = addressHash(recipient);
      const global = match(`${GLOBAL_SCOPE}.${hash}`, GLOBAL_SCOPE);
      if (global) return global;
      const scope = senderScope(sender);
      return scope === undefined ? undefined : match(`${scopeToken(scope)}.${hash}`, scope);
    },
    has: (key) => entries.has(key),
    put,
    remove: (key) => {
      if (entries.delete(key)) changes++;
    },
    reload: () => {
      const fresh = new Map<string, number>();
      return {
        put: (key, reason) => void fresh.set(key, codeOf.get(reason)!),
        remove: (key) => void fresh.delete(key),
        finish: () => {
          entries = fresh;
          // Sorted when a page is first asked for, not here: a million keys take a second or more.
          sorted = [];
          since = [];
          changes = Infinity;
          loaded = true;
        },
      };
    },
    loaded: () => loaded,
    size: () => entries.size,
    page: ({ scopes, address, after, limit }) => {
      const live = (key: string) => entries.has(key);
      if (address !== undefined) {
        // One address: its key in each scope asked for, or (every scope) a scan for its hash.
        const hash = addressHash(address);
        const keys: string[] = [];
        if (scopes !== undefined) keys.push(...[...scopes].sort().map((token) => `${token}.${hash}`).filter(live));
        else for (const key of entries.keys()) if (hashOfKey(key) === hash) keys.push(key);
        keys.sort();
        const start = after === undefined ? 0 : firstAfter(keys, after);
        return { keys: keys.slice(start, start + limit), total: keys.length };
      }
      const view = ordered();
      // A scope's keys are one range of the order: "<token>." up to "<token>/" ('/' follows '.').
      const ranges = scopes === undefined ? [["", "\uffff"] as const] : [...scopes].sort().map((token) => [`${token}.`, `${token}/`] as const);
      const keys: string[] = [];
      let total = 0;
      for (const [from, to] of ranges) {
        const old = { list: view.sorted, from: firstAfter(view.sorted, from, true), to: firstAfter(view.sorted, to, true) };
        const added = { list: view.since, from: firstAfter(view.since, from, true), to: firstAfter(view.since, to, true) };
        if (scopes !== undefined) total += countLive(old, added, live);
        if (keys.length >= limit) continue;
        for (const key of merged(old, added, after)) {
          if (!live(key)) continue;
          keys.push(key);
          if (keys.length >= limit) break;
        }
      }
      return { keys, total: scopes === undefined ? entries.size : total };
    },
  };
};

/** Changes (puts of new keys, removals) after which the order is sorted again from the map. */
const RESORT_AFTER = 10_000;

/** Part of a sorted list: indexes `from` (included) to `to` (excluded). */
interface Range {
  readonly list: ReadonlyArray<string>;
  readonly from: number;
  readonly to: number;
}

/** Keys of the two ranges still in the map, each once. */
const countLive = (old: Range, added: Range, live: (key: string) => boolean) => {
  let n = 0;
  for (let i = old.from; i < old.to; i++) if (live(old.list[i]!)) n++;
  let previous: string | undefined;
  for (let i = added.from; i < added.to; i++) {
    const key = added.list[i]!;
    // Put again after a removal: in the snapshot too (counted there), or twice in `since`.
    if (key !== previous && live(key) && old.list[firstAfter(old.list, key, true)] !== key) n++;
    previous = key;
  }
  return n;
};

/** Two sorted ranges as one, in order, each key once, from the first key greater than `after`. */
function* merged(a: Range, b: Range, after: string | undefined): Generator<string> {
  let i = after === undefined ? a.from : Math.max(a.from, firstAfter(a.list, after));
  let j = after === undefined ? b.from : Math.max(b.from, firstAfter(b.list, after));
  let previous: string | undefined;
  while (i < a.to || j < b.to) {
    const next = j >= b.to || (i < a.to && a.list[i]! <= b.list[j]!) ? a.list[i++]! : b.list[j++]!;
    if (next === previous) continue;
    previous = next;
    yield next;
  }
}

/** The index of the first key greater than `after` (or, `inclusive`, not less than it): a binary search over sorted keys. */
const firstAfter = (sorted: ReadonlyArray<string>, after: string, inclusive = false): number => {
  let low = 0;
  let high = sorted.length;
  while (low < high) {
    const mid = (low + high) >>> 1;
    if (inclusive ? sorted[mid]! < after : sorted[mid]! <= after) low = mid + 1;
    else high = mid;
  }
  return low;
};
