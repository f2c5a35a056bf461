// The node's resolver: one cache in front of the DNS client, shared by mail routing and
// every other lookup, so all of them get the same TTL, negative-caching and coalescing rules.
import { Effect } from "effect";
import type { DnsTemporaryFailure, MailRoute } from "../../protocol/route.ts";
import { defaultAddressPolicy, type AddressPolicy } from "./addresses.ts";
import { makeRecordCache, type RecordCacheObserver } from "./cache.ts";
import type { DnsClient } from "./dns-client.ts";
import { lookupPtr, lookupTlsa, lookupTxt, type TlsaAnswer } from "./lookups.ts";
import { makeMailRouter, type ResolveFailure } from "./mail-route.ts";
import { recordsFrom, type RecordSource } from "./records.ts";

export interface CachedResolverOptions {
  readonly maxEntries: number;
  readonly minTtlSec: number;
  readonly maxTtlSec: number;
  /** Cap on negative answers, whose TTL comes from the zone's SOA (RFC 2308). Default 900. */
  readonly maxNegativeTtlSec?: number;
  /** Address families and allowed non-public networks. Default: IPv4 first, none allowed. */
  readonly policy?: AddressPolicy;
  /** Per-server budget of a PTR lookup. Default 1000. */
  readonly ptrTimeoutMs?: number;
  readonly observer?: RecordCacheObserver;
}

export interface CachedResolver {
  /** Where mail for a domain goes. */
  resolve(domain: string): Effect.Effect<MailRoute, ResolveFailure>;
  txt(name: string): Effect.Effect<ReadonlyArray<string>, DnsTemporaryFailure>;
  ptr(address: string): Effect.Effect<ReadonlyArray<string>, DnsTemporaryFailure>;
  tlsa(host: string, port?: number): Effect.Effect<TlsaAnswer, DnsTemporaryFailure>;
  /** Any other question, cached the same way. */
  readonly records: RecordSource;
  /** Cache entries held, fresh or not yet evicted. */
  size(): number;
}

/** The cache's TTLs run on the Clock of the fiber that makes the resolver. */
export const makeCachedResolver = (client: DnsClient, options: CachedResolverOptions): Effect.Effect<CachedResolver> =>
  Effect.map(
    makeRecordCache(recordsFrom(client), {
      maxEntries: options.maxEntries,
      minTtlSec: options.minTtlSec,
      maxTtlSec: options.maxTtlSec,
      maxNegativeTtlSec: options.maxNegativeTtlSec ?? 900,
      ...(options.observer ? { observer: options.observer } : {}),
    }),
    (records) => {
      const ptrTimeoutMs = options.ptrTimeoutMs ?? 1_000;
      return {
        resolve: makeMailRouter(records, options.policy ?? defaultAddressPolicy),
        txt: (name) => lookupTxt(records, name),
        ptr: (address) => lookupPtr(records, address, ptrTimeoutMs),
        tlsa: (host, port) => lookupTlsa(records, host, port),
        records,
        size: records.size,
      };
    },
  );
