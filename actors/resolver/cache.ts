// One cache of DNS answers per node, in front of the transport: keyed by (type, name),
// TTLs clamped to configured bounds, negative answers kept per RFC 2308, LRU-bounded,
// and concurrent lookups of one question coalesced into a single query.
// Expiry reads the Clock captured when the cache is made (`peek` is synchronous), so
// TestClock drives TTLs in tests.
import { Clock, Deferred, Effect } from "effect";
import { normalizeName, type DnsQueryType, type QueryOptions } from "./dns-client.ts";
import type { DnsLookupError, RecordSet, RecordSource } from "./records.ts";

export interface RecordCacheOptions {
  readonly maxEntries: number;
  readonly minTtlSec: number;
  readonly maxTtlSec: number;
  /** Upper bound on negative answers (NXDOMAIN, no data); RFC 2308 suggests hours at most. */
  readonly maxNegativeTtlSec: number;
  readonly observer?: RecordCacheObserver;
}

export interface RecordCacheObserver {
  /** hit: answered from the cache; coalesced: joined a lookup already under way; miss: sent a query. */
  readonly looked?: (type: DnsQueryType, result: "hit" | "miss" | "coalesced") => void;
  readonly size?: (entries: number) => void;
}

export interface RecordCache extends RecordSource {
  /** Entries held, fresh or not yet evicted. */
  size(): number;
}

interface CacheEntry {
  readonly expiresAtMs: number;
  readonly value: RecordSet;
}

/** Temporary failures are never cached: the next try may work, and coalescing already spares the servers. */
export const makeRecordCache = (source: RecordSource, options: RecordCacheOptions): Effect.Effect<RecordCache> =>
  Clock.Clock.useSync((clock) => recordCache(source, options, () => clock.currentTimeMillisUnsafe()));

const recordCache = (source: RecordSource, options: RecordCacheOptions, now: () => number): RecordCache => {
  const observer = options.observer ?? {};
  const entries = new Map<string, CacheEntry>(); // insertion order = least recently used first
  const inFlight = new Map<string, Deferred.Deferred<RecordSet, DnsLookupError>>();

  const readFresh = (key: string): RecordSet | undefined => {
    const entry = entries.get(key);
    if (entry === undefined) return undefined;
    entries.delete(key);
    if (entry.expiresAtMs <= now()) {
      observer.size?.(entries.size);
      return undefined;
    }
    entries.set(key, entry); // re-inserted at the recent end: LRU order
    return entry.value;
  };

  const remember = (key: string, value: RecordSet): void => {
    const ttlSec = cacheTtl(value, options);
    if (ttlSec === undefined || ttlSec <= 0) return;
    entries.delete(key);
    entries.set(key, { expiresAtMs: now() + ttlSec * 1000, value });
    for (const oldest of entries.keys()) {
      if (entries.size <= options.maxEntries) break;
      entries.delete(oldest);
    }
    observer.size?.(entries.size);
  };

  // The lookup runs detached so a caller that gives up does not cancel it for the others waiting.
  const startLookup = (key: string, name: string, type: DnsQueryType, queryOptions: QueryOptions | undefined) => {
    const done = Deferred.makeUnsafe<RecordSet, DnsLookupError>();
    inFlight.set(key, done);
    const run = source.lookup(name, type, queryOptions).pipe(
      Effect.tap((value) => Effect.sync(() => remember(key, value))),
      Effect.onExit((exit) =>
        Effect.sync(() => {
          inFlight.delete(key);
          Deferred.doneUnsafe(done, exit);
        })),
    );
    return Effect.andThen(Effect.forkDetach(run), Deferred.await(done));
  };

  const lookup = (name: string, type: DnsQueryType, queryOptions?: QueryOptions): Effect.Effect<RecordSet, DnsLookupError> =>
    Effect.suspend(() => {
      const normalized = normalizeName(name);
      const key = `${type} ${normalized}`;
      const cached = readFresh(key);
      if (cached !== undefined) {
        observer.looked?.(type, "hit");
        return Effect.succeed(cached);
      }
      const pending = inFlight.get(key);
      observer.looked?.(type, pending !== undefined ? "coalesced" : "miss");
      return pending !== undefined ? Deferred.await(pending) : startLookup(key, normalized, type, queryOptions);
    });

  const peek = (name: string, type: DnsQueryType): RecordSet | undefined => {
    const found = readFresh(`${type} ${normalizeName(name)}`);
    if (found !== undefined) observer.looked?.(type, "hit");
    return found;
  };

  return { lookup, peek, size: () => entries.size };
};

/** The TTL a result is kept for: clamped, with negative answers under their own cap. */
const cacheTtl = (value: RecordSet, options: RecordCacheOptions): number | undefined => {
  if (value.ttlSec === undefined) return undefined; // RFC 2308 §5: no SOA, no negative caching
  const negative = value.records.length === 0;
  const max = negative ? Math.min(options.maxNegativeTtlSec, options.maxTtlSec) : options.maxTtlSec;
  return Math.min(max, Math.max(options.minTtlSec, value.ttlSec));
};
