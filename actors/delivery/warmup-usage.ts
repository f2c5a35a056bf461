// What each cold source address has sent to each destination provider this UTC day and
// this hour, against its warm-up caps (actors/delivery/warmup.ts), and the choice of an
// attempt's source address that follows from it.
//
// Counting: an attempt from a cold address takes one message of its allowance before it
// starts (held as pending, so concurrent attempts cannot overshoot the cap) and settles it
// when it ends: spent when the remote server took the message for at least one recipient,
// given back otherwise (no connection, a 4xx or 5xx, the node stopping). What a provider
// counts is the mail it accepted from the address; a refused connection spends nothing.
// A message with several recipients at one provider is one transaction and counts once.
//
// Durability: counts are kept in the node's LMDB (`warmup.usage`, key [address, provider,
// window, window number]), so a restart does not reset today's usage. A source address is
// bound to one machine, so one node's counts are the address's counts. A count's write is
// queued before the spool commits the attempt's outcome, and lmdb-js commits queued writes
// in order: a crash loses a count only with the outcome it belongs to (the message is
// then sent again and counted again). Warm addresses are not counted: no cost for them.
import type { Database, RootDatabase } from "lmdb";
import type { Overflow, SourceAddress } from "./pools.ts";
import { pickSource } from "./pools.ts";
import { capsAt, dayOf, hourOf, reopensAt, type Caps, type CapWindow } from "./warmup.ts";

/** One window's count, as stored. */
export interface UsageRecord {
  readonly address: string;
  readonly provider: string;
  readonly window: CapWindow;
  /** The UTC day number (window "day") or hour number (window "hour"). */
  readonly index: number;
  readonly count: number;
}

export interface UsageStore {
  /** Every stored count (at start). */
  readonly load: () => ReadonlyArray<UsageRecord>;
  /** Stores a window's count; `replaces`: the earlier window of the same kind, whose key goes. */
  readonly write: (record: UsageRecord, replaces?: number) => void;
  /** Removes counts of windows that are over. */
  readonly forget: (records: ReadonlyArray<UsageRecord>) => void;
}

type UsageKey = [address: string, provider: string, window: CapWindow, index: number];

/** Counts in the node's LMDB. Writes are not awaited (see above); a failed one is reported to `failed`. */
export const openUsageStore = (root: RootDatabase, failed: (error: unknown) => void): UsageStore => {
  const db: Database<number, UsageKey> = root.openDB({ name: "warmup.usage" });
  const keyOf = (r: Pick<UsageRecord, "address" | "provider" | "window" | "index">): UsageKey => [r.address, r.provider, r.window, r.index];
  return {
    load: () => [...db.getRange({})].map(({ key, value }) => ({ address: key[0], provider: key[1], window: key[2], index: key[3], count: value })),
    write: (record, replaces) => {
      db.put(keyOf(record), record.count).catch(failed);
      if (replaces !== undefined) db.remove(keyOf({ ...record, index: replaces })).catch(failed);
    },
    forget: (records) => {
      for (const record of records) db.remove(keyOf(record)).catch(failed);
    },
  };
};

/** Counts in memory only (tests). */
export const memoryUsageStore = (): UsageStore & { readonly records: () => ReadonlyArray<UsageRecord> } => {
  const kept = new Map<string, UsageRecord>();
  const keyOf = (r: Pick<UsageRecord, "address" | "provider" | "window" | "index">) => `${r.address} ${r.provider} ${r.window} ${r.index}`;
  return {
    load: () => [...kept.values()],
    write: (record, replaces) => {
      kept.set(keyOf(record), record);
      if (replaces !== undefined) kept.delete(keyOf({ ...record, index: replaces }));
    },
    forget: (records) => records.forEach((record) => kept.delete(keyOf(record))),
    records: () => [...kept.values()],
  };
};

/** A message of an address's allowance taken for one attempt. */
export interface Spend {
  /** The attempt ended: `sent` when the remote server took the message (then it counts). Once only. */
  readonly settle: (sent: boolean, now: number) => void;
}

/** A cold address's cap for a provider is used up. */
export interface CapReached {
  readonly source: SourceAddress;
  readonly provider: string;
  readonly window: CapWindow;
  readonly cap: number;
  /** When the window opens again. */
  readonly until: number;
}

export interface Used {
  readonly day: number;
  readonly hour: number;
}

export interface WarmupUsage {
  /** Takes one message of the allowance (undefined spend: a warm address, nothing counted), or says which cap is reached. */
  readonly take: (source: SourceAddress, provider: string, now: number) => { readonly spend: Spend | undefined } | { readonly full: CapReached };
  /** Whether `take` would succeed now. */
  readonly hasRoom: (source: SourceAddress, provider: string, now: number) => boolean;
  /** What a cold address has sent to a provider this UTC day and this hour (in-flight attempts not included). */
  readonly used: (address: string, provider: string, now: number) => Used;
  /** The providers an address sent to this UTC day. */
  readonly providersOf: (address: string, now: number) => ReadonlyArray<string>;
}

interface Counter {
  day: number;
  dayUsed: number;
  hour: number;
  hourUsed: number;
  /** Attempts under way that took a message of the allowance. */
  pending: number;
}

const counterKey = (address: string, provider: string) => `${address}\n${provider}`;

/** The ledger, started from the store's counts of the current windows (those of windows that are over are removed). */
export const makeWarmupUsage = (store: UsageStore, now: number): WarmupUsage => {
  const counters = new Map<string, Counter>();
  const byAddress = new Map<string, Set<string>>();
  const counterOf = (address: string, provider: string): Counter => {
    const key = counterKey(address, provider);
    let counter = counters.get(key);
    if (counter === undefined) {
      counter = { day: 0, dayUsed: 0, hour: 0, hourUsed: 0, pending: 0 };
      counters.set(key, counter);
      const providers = byAddress.get(address) ?? new Set<string>();
      providers.add(provider);
      byAddress.set(address, providers);
    }
    return counter;
  };
  const today = dayOf(now);
  const thisHour = hourOf(now);
  const over: UsageRecord[] = [];
  for (const record of store.load()) {
    const current = record.window === "day" ? record.index === today : record.index === thisHour;
    if (!current) {
      over.push(record);
      continue;
    }
    const counter = counterOf(record.address, record.provider);
    if (record.window === "day") Object.assign(counter, { day: record.index, dayUsed: record.count });
    else Object.assign(counter, { hour: record.index, hourUsed: record.count });
  }
  if (over.length > 0) store.forget(over);

  /** Usage in the windows of `now` (a counter of an earlier window reads 0). */
  const usedIn = (counter: Counter | undefined, now: number): Used => ({
    day: counter !== undefined && counter.day === dayOf(now) ? counter.dayUsed : 0,
    hour: counter !== undefined && counter.hour === hourOf(now) ? counter.hourUsed : 0,
  });

  /** The window whose cap is reached, if one is (in-flight attempts count). */
  const fullWindow = (caps: Caps, counter: Counter | undefined, now: number): CapWindow | undefined => {
    const used = usedIn(counter, now);
    const pending = counter?.pending ?? 0;
    if (used.day + pending >= caps.daily) return "day";
    if (caps.hourly !== undefined && used.hour + pending >= caps.hourly) return "hour";
    return undefined;
  };

  const spent = (address: string, provider: string, counter: Counter, now: number) => {
    const [day, hour] = [dayOf(now), hourOf(now)];
    const replacesDay = counter.day !== day && counter.dayUsed > 0 ? counter.day : undefined;
    const replacesHour = counter.hour !== hour && counter.hourUsed > 0 ? counter.hour : undefined;
    const used = usedIn(counter, now);
    Object.assign(counter, { day, dayUsed: used.day + 1, hour, hourUsed: used.hour + 1 });
    store.write({ address, provider, window: "day", index: day, count: counter.dayUsed }, replacesDay);
    store.write({ address, provider, window: "hour", index: hour, count: counter.hourUsed }, replacesHour);
  };

  return {
    take: (source, provider, now) => {
      const caps = capsAt(source.warmup, now);
      if (caps === undefined) return { spend: undefined };
      const counter = counterOf(source.address, provider);
      const full = fullWindow(caps, counter, now);
      if (full !== undefined) {
        return { full: { source, provider, window: full, cap: full === "day" ? caps.daily : caps.hourly!, until: reopensAt(source.warmup!, full, now) } };
      }
      counter.pending++;
      let settled = false;
      return {
        spend: {
          settle: (sent, at) => {
            if (settled) return;
            settled = true;
            counter.pending--;
            if (sent) spent(source.address, provider, counter, at);
          },
        },
      };
    },
    hasRoom: (source, provider, now) => {
      const caps = capsAt(source.warmup, now);
      return caps === undefined || fullWindow(caps, counters.get(counterKey(source.address, provider)), now) === undefined;
    },
    used: (address, provider, now) => usedIn(counters.get(counterKey(address, provider)), now),
    providersOf: (address, now) =>
      [...(byAddress.get(address) ?? [])].filter((provider) => usedIn(counters.get(counterKey(address, provider)), now).day > 0).sort(),
  };
};

/** The source of one attempt: an address (with the allowance it took, if cold), or a wait for a cap. */
export type SourceChoice = { readonly source: SourceAddress; readonly spend: Spend | undefined } | { readonly wait: CapReached };

/**
 * Chooses an attempt's source address from a pool with cold addresses: one by weight
 * (`random`); when that one has used its cap for the provider, the attempt overflows
 * ("warm") to the pool's other addresses that still have room, by weight (`overflowRandom`;
 * warm addresses always have room, a cold one until its own cap), or it waits ("wait", or
 * no address has room) until the cap's window opens again.
 */
export const chooseSource = (
  usage: WarmupUsage,
  pool: ReadonlyArray<SourceAddress>,
  overflow: Overflow,
  provider: string,
  now: number,
  random: number,
  overflowRandom: number,
): SourceChoice | undefined => {
  const first = pickSource(pool, random);
  if (first === undefined) return undefined;
  const taken = usage.take(first, provider, now);
  if ("spend" in taken) return { source: first, spend: taken.spend };
  if (overflow === "wait") return { wait: taken.full };
  const others = pool.filter((source) => source !== first && usage.hasRoom(source, provider, now));
  const second = pickSource(others, overflowRandom);
  if (second === undefined) return { wait: taken.full };
  const again = usage.take(second, provider, now);
  return "spend" in again ? { source: second, spend: again.spend } : { wait: taken.full };
};
