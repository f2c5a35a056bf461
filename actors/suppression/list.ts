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
  scopeTokenOfKey,
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

  const match = (key: string, scope: string): SuppressionMatch | undefined => {
    const code = entries.get(key);
    return code === undefined ? undefined : { scope, reason: suppressionReasons[code]! };
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
    put: (key, reason) => void entries.set(key, codeOf.get(reason)!),
    remove: (key) => void entries.delete(key),
    reload: () => {
      const fresh = new Map<string, number>();
      return {
        put: (key, reason) => void fresh.set(key, codeOf.get(reason)!),
        remove: (key) => void fresh.delete(key),
        finish: () => {
          entries = fresh;
          loaded = true;
        },
      };
    },
    loaded: () => loaded,
    size: () => entries.size,
    page: ({ scopes, address, after, limit }) => {
      const hash = address === undefined ? undefined : addressHash(address);
      const selected: string[] = [];
      for (const key of entries.keys()) {
        if (hash !== undefined && hashOfKey(key) !== hash) continue;
        if (scopes !== undefined && !scopes.has(scopeTokenOfKey(key))) continue;
        selected.push(key);
      }
      selected.sort();
      const start = after === undefined ? 0 : firstAfter(selected, after);
      return { keys: selected.slice(start, start + limit), total: selected.length };
    },
  };
};

/** The index of the first key greater than `after` (binary search over sorted keys). */
const firstAfter = (sorted: ReadonlyArray<string>, after: string): number => {
  let low = 0;
  let high = sorted.length;
  while (low < high) {
    const mid = (low + high) >>> 1;
    if (sorted[mid]! <= after) low = mid + 1;
    else high = mid;
  }
  return low;
};
