// From a recipient domain to the ordered hosts delivery must try (RFC 5321 §5.1),
// with every DNS outcome classified as temporary (retry later) or permanent (bounce).
import { isIP } from "node:net";
import { Deferred, Effect } from "effect";
import { DnsPermanentFailure, DnsTemporaryFailure, type MailHost, type MailRoute } from "../../protocol/route.ts";
import { normalizeName, type DnsAnswer, type DnsClient, type DnsQueryType, type DnsRecord } from "./dns-client.ts";

export type ResolveFailure = DnsTemporaryFailure | DnsPermanentFailure;

/** A route plus how long it may be reused: the smallest TTL among the records it rests on. */
export interface ResolvedRoute {
  readonly route: MailRoute;
  readonly ttlSec: number;
}

type MxRecord = Extract<DnsRecord, { type: "MX" }>;
type AddressRecord = Extract<DnsRecord, { address: string }>;

/** How one host's address lookup ended; a failed host is skipped unless every host fails. */
type HostLookup =
  | { readonly ok: true; readonly host: MailHost; readonly ttlSec: number }
  | { readonly ok: false; readonly temporary: boolean; readonly detail: string };

// Parallel A lookups for MX hosts, bounded so one domain with many MX cannot flood the server.
const HOST_LOOKUP_CONCURRENCY = 4;

export const resolveMailRoute = (client: DnsClient, domain: string): Effect.Effect<MailRoute, ResolveFailure> =>
  Effect.map(resolveMailRouteWithTtl(client, domain), (resolved) => resolved.route);

export const resolveMailRouteWithTtl = Effect.fn("Resolver.resolveMailRoute")(function* (client: DnsClient, domain: string) {
  const name = normalizeName(domain);
  const literal = addressLiteral(name);
  if (literal !== undefined) return literalRoute(name, literal);
  const mx = yield* lookup(client, name, "MX");
  const mxRecords = mx.answers.filter((record): record is MxRecord => record.type === "MX");
  if (mxRecords.length === 0) return yield* implicitMxRoute(client, name);
  if (mxRecords.some((record) => record.exchange === "")) {
    return yield* new DnsPermanentFailure({ domain: name, detail: "null MX: the domain accepts no mail (RFC 7505)" });
  }
  return yield* explicitMxRoute(client, name, mxRecords, mx.additionals);
});

/** `[192.0.2.1]` or `[IPv6:2001:db8::1]` (RFC 5321 §4.1.3): no DNS at all. */
const addressLiteral = (name: string): string | undefined => {
  const inner = /^\[(?:ipv6:)?(.+)\]$/.exec(name)?.[1];
  return inner !== undefined && isIP(inner) !== 0 ? inner : undefined;
};

const literalRoute = (domain: string, address: string): ResolvedRoute => ({
  route: { domain, hosts: [{ name: address, preference: 0, addresses: [address] }], implicitMx: true },
  ttlSec: Number.POSITIVE_INFINITY,
});

/** One query, with every rcode but NOERROR turned into the failure the caller must report. */
const lookup = (client: DnsClient, name: string, type: DnsQueryType) =>
  client.query(name, type).pipe(
    Effect.mapError((error) => new DnsTemporaryFailure({ domain: name, detail: `${type} ${error.reason}: ${error.detail}` })),
    Effect.flatMap((answer) => requireNoError(name, type, answer)),
  );

const requireNoError = (name: string, type: DnsQueryType, answer: DnsAnswer): Effect.Effect<DnsAnswer, ResolveFailure> => {
  if (answer.rcode === "NOERROR") return Effect.succeed(answer);
  const detail = `${type} ${name}: ${answer.rcode} from ${answer.server}`;
  // Only NXDOMAIN says the name does not exist; SERVFAIL, REFUSED and the rest may heal.
  return answer.rcode === "NXDOMAIN"
    ? Effect.fail(new DnsPermanentFailure({ domain: name, detail }))
    : Effect.fail(new DnsTemporaryFailure({ domain: name, detail }));
};

/** No MX: the domain itself is the one host, at preference 0 (RFC 5321 §5.1). */
const implicitMxRoute = (client: DnsClient, domain: string) =>
  Effect.flatMap(lookupHost(client, domain, domain, 0, []), (result): Effect.Effect<ResolvedRoute, ResolveFailure> => {
    if (result.ok) return Effect.succeed({ route: { domain, hosts: [result.host], implicitMx: true }, ttlSec: result.ttlSec });
    const detail = `no MX, and ${result.detail}`;
    return Effect.fail(result.temporary ? new DnsTemporaryFailure({ domain, detail }) : new DnsPermanentFailure({ domain, detail }));
  });

const explicitMxRoute = (client: DnsClient, domain: string, mxRecords: ReadonlyArray<MxRecord>, glue: ReadonlyArray<DnsRecord>) =>
  Effect.gen(function* () {
    const exchanges = byPreference(mxRecords);
    const lookups = yield* Effect.forEach(exchanges, (mx) => lookupHost(client, domain, mx.exchange, mx.preference, glue), {
      concurrency: HOST_LOOKUP_CONCURRENCY,
    });
    const found = lookups.filter((result) => result.ok);
    if (found.length === 0) return yield* allHostsFailed(domain, lookups);
    const ttlSec = Math.min(...mxRecords.map((mx) => mx.ttl), ...found.map((result) => result.ttlSec));
    return { route: { domain, hosts: found.map((result) => result.host), implicitMx: false }, ttlSec } satisfies ResolvedRoute;
  });

/** Lowest preference first; Array.sort is stable, so equal preferences keep DNS order. Duplicates dropped. */
const byPreference = (mxRecords: ReadonlyArray<MxRecord>): ReadonlyArray<MxRecord> => {
  const sorted = [...mxRecords].sort((a, b) => a.preference - b.preference);
  return sorted.filter((mx, index) => sorted.findIndex((other) => other.exchange === mx.exchange) === index);
};

const allHostsFailed = (domain: string, lookups: ReadonlyArray<HostLookup>) => {
  const failures = lookups.filter((result) => !result.ok);
  const detail = `no MX host has an address: ${failures.map((failure) => failure.detail).join("; ")}`;
  // One host failing temporarily may have an address tomorrow: do not bounce yet.
  return failures.some((failure) => failure.temporary)
    ? Effect.fail(new DnsTemporaryFailure({ domain, detail }))
    : Effect.fail(new DnsPermanentFailure({ domain, detail }));
};

/** Addresses of one host: an IP literal as is, glue from the MX answer if present, else an A query. */
const lookupHost = (
  client: DnsClient,
  domain: string,
  hostName: string,
  preference: number,
  glue: ReadonlyArray<DnsRecord>,
): Effect.Effect<HostLookup> => {
  const found = (records: ReadonlyArray<AddressRecord>): HostLookup => ({
    ok: true,
    host: { name: hostName, preference, addresses: records.map((record) => record.address) },
    ttlSec: Math.min(...records.map((record) => record.ttl)),
  });
  // Some MX records name an IP instead of a host (RFC-violating but common); use it directly.
  if (isIP(hostName) !== 0) return Effect.succeed({ ok: true, host: { name: hostName, preference, addresses: [hostName] }, ttlSec: Number.POSITIVE_INFINITY });
  const glueRecords = glue.filter((record): record is AddressRecord => record.type === "A" && record.name === hostName);
  if (glueRecords.length > 0) return Effect.succeed(found(glueRecords));
  return lookup(client, hostName, "A").pipe(
    Effect.map((answer): HostLookup => {
      const records = answer.answers.filter((record): record is AddressRecord => record.type === "A");
      return records.length > 0 ? found(records) : { ok: false, temporary: false, detail: `${hostName} has no A record` };
    }),
    Effect.catch((failure) =>
      Effect.succeed<HostLookup>({ ok: false, temporary: failure._tag === "DnsTemporaryFailure", detail: failure.detail })),
    Effect.withSpan("Resolver.lookupHost", { attributes: { domain, host: hostName } }),
  );
};

export interface CachedResolverOptions {
  readonly maxEntries: number;
  readonly minTtlSec: number;
  readonly maxTtlSec: number;
  /** How long a permanent failure (NXDOMAIN, no address) is remembered. Default 60 s. */
  readonly negativeTtlSec?: number;
  /** Milliseconds clock, for tests. Default Date.now. */
  readonly now?: () => number;
}

export interface CachedResolver {
  resolve(domain: string): Effect.Effect<MailRoute, ResolveFailure>;
  /** Entries held, fresh or not yet evicted. */
  size(): number;
}

interface CacheEntry {
  readonly expiresAtMs: number;
  readonly outcome: Effect.Effect<MailRoute, DnsPermanentFailure>;
}

/**
 * Caches routes and permanent failures, LRU-bounded, and coalesces concurrent lookups of one
 * domain into a single DNS conversation. Temporary failures are never cached: the next try may work.
 */
export const makeCachedResolver = (client: DnsClient, options: CachedResolverOptions): CachedResolver => {
  const now = options.now ?? Date.now;
  const negativeTtlSec = options.negativeTtlSec ?? 60;
  const entries = new Map<string, CacheEntry>(); // insertion order = least recently used first
  const inFlight = new Map<string, Deferred.Deferred<MailRoute, ResolveFailure>>();

  const readFresh = (key: string): CacheEntry | undefined => {
    const entry = entries.get(key);
    if (entry === undefined) return undefined;
    entries.delete(key); // re-inserted below if still fresh, moving it to the recent end
    if (entry.expiresAtMs <= now()) return undefined;
    entries.set(key, entry);
    return entry;
  };

  const remember = (key: string, ttlSec: number, outcome: CacheEntry["outcome"]): void => {
    if (ttlSec <= 0) return;
    entries.delete(key);
    entries.set(key, { expiresAtMs: now() + ttlSec * 1000, outcome });
    for (const oldest of entries.keys()) {
      if (entries.size <= options.maxEntries) break;
      entries.delete(oldest);
    }
  };

  const clampTtl = (ttlSec: number) => Math.min(options.maxTtlSec, Math.max(options.minTtlSec, ttlSec));

  const lookupAndRemember = (key: string) =>
    resolveMailRouteWithTtl(client, key).pipe(
      Effect.tap((resolved) => Effect.sync(() => remember(key, clampTtl(resolved.ttlSec), Effect.succeed(resolved.route)))),
      Effect.tapError((failure) =>
        Effect.sync(() => {
          if (failure._tag === "DnsPermanentFailure") remember(key, negativeTtlSec, Effect.fail(failure));
        })),
      Effect.map((resolved) => resolved.route),
    );

  // The lookup runs detached so a caller that gives up does not cancel it for the others waiting.
  const startLookup = (key: string) => {
    const done = Deferred.makeUnsafe<MailRoute, ResolveFailure>();
    inFlight.set(key, done);
    const run = lookupAndRemember(key).pipe(
      Effect.onExit((exit) =>
        Effect.sync(() => {
          inFlight.delete(key);
          Deferred.doneUnsafe(done, exit);
        })),
    );
    return Effect.andThen(Effect.forkDetach(run), Deferred.await(done));
  };

  const resolve = (domain: string): Effect.Effect<MailRoute, ResolveFailure> =>
    Effect.suspend(() => {
      const key = normalizeName(domain);
      const cached = readFresh(key);
      if (cached !== undefined) return cached.outcome;
      const pending = inFlight.get(key);
      return pending !== undefined ? Deferred.await(pending) : startLookup(key);
    });

  return { resolve, size: () => entries.size };
};
