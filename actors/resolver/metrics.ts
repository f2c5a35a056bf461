// The resolver's Prometheus metrics, registered on the node's registry. The client and
// the cache only call observers, so they stay free of prom-client and easy to test.
import { Counter, Gauge, Histogram, type Registry } from "prom-client";
import type { RecordCacheObserver } from "./cache.ts";
import type { CheckedResolveObserver } from "./checked-resolve.ts";
import type { DnsClientObserver } from "./dns-client.ts";

export interface ResolverMetrics {
  readonly client: DnsClientObserver;
  readonly cache: RecordCacheObserver;
  /** Answers from other resolvers this node did not take as given. */
  readonly distrusted: CheckedResolveObserver;
}

// From a cached-at-the-recursive loopback answer (~0.2 ms) to the default 2 s × tries.
const LATENCY_BUCKETS_SEC = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

export const makeResolverMetrics = (registry: Registry): ResolverMetrics => {
  const registers = [registry];
  const counter = (name: string, help: string, labelNames: string[]) => new Counter({ name, help, labelNames, registers });
  const queries = counter("tern_dns_queries_total", "DNS queries by type and outcome (rcode, timeout, network)", ["type", "outcome"]);
  const timeouts = counter("tern_dns_timeouts_total", "DNS exchanges that got no reply in time, by server", ["server"]);
  const tcp = counter("tern_dns_tcp_fallbacks_total", "Truncated UDP answers asked again over TCP, by server", ["server"]);
  const hits = counter("tern_dns_cache_hits_total", "DNS lookups answered from the cache", ["type"]);
  const misses = counter("tern_dns_cache_misses_total", "DNS lookups that sent a query", ["type"]);
  const coalesced = counter("tern_dns_cache_coalesced_total", "DNS lookups that joined an identical one already under way", ["type"]);
  const latency = new Histogram({
    name: "tern_dns_query_duration_seconds",
    help: "DNS query time, all servers and tries included",
    labelNames: ["type"],
    buckets: LATENCY_BUCKETS_SEC,
    registers,
  });
  // There from the start for the lookups every remote delivery makes, so their rates are 0, not missing.
  for (const type of ["MX", "A", "AAAA"]) {
    latency.zero({ type });
    for (const counted of [hits, misses]) counted.inc({ type }, 0);
  }
  const entries = new Gauge({ name: "tern_dns_cache_entries", help: "Answers held in the DNS cache", registers });
  const distrusted = counter(
    "tern_resolver_answers_distrusted_total",
    "Resolver answers over NATS not taken as given: routes rejected, permanent failures this node's own lookup did not confirm",
    ["kind"],
  );
  const byResult = { hit: hits, miss: misses, coalesced };
  return {
    client: {
      queried: (type, outcome, seconds) => {
        queries.inc({ type, outcome });
        latency.observe({ type }, seconds);
      },
      timedOut: (server) => timeouts.inc({ server }),
      truncated: (server) => tcp.inc({ server }),
    },
    cache: {
      looked: (type, result) => byResult[result].inc({ type }),
      size: (count) => entries.set(count),
    },
    distrusted: {
      rejected: () => distrusted.inc({ kind: "route-rejected" }),
      unconfirmed: () => distrusted.inc({ kind: "permanent-unconfirmed" }),
    },
  };
};
