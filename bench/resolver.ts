// `npx tsx bench/resolver.ts [seconds-per-run] [rounds] [concurrency]`: MX lookups per
// second against dnsmasq on loopback, Tern's resolver beside Node's dns.Resolver (c-ares)
// pointed at the same server. Uncached runs use a dnsmasq whose answers have TTL 0, so no
// cache (Tern's, or c-ares' own query cache) can keep them; cached runs use one with TTL 300.
// The runs take turns, round after round, and each row gives the median round: this machine
// is shared and noisy, so compare the ratios. Bounded: 6 runs × rounds × seconds (18 s).
import { Resolver } from "node:dns";
import { cpus, loadavg } from "node:os";
import { performance } from "node:perf_hooks";
import { Effect } from "effect";
import { makeDnsClient } from "../actors/resolver/dns-client.ts";
import { resolveMailRoute } from "../actors/resolver/mail-route.ts";
import { makeCachedResolver } from "../actors/resolver/resolver.ts";
import { startDnsmasq, type RunningDnsmasq } from "../test/support/dnsmasq.ts";

const SECONDS = Number(process.argv[2] ?? 1);
const ROUNDS = Number(process.argv[3] ?? 3);
const CONCURRENCY = Number(process.argv[4] ?? 32);
const DOMAINS = 500;
const HOSTS = 20;

const domain = (i: number) => `d${i}.bench.test`;

/**
 * 500 domains, each with one MX among 20 hosts that have an A record (a public test
 * address) and no AAAA. Served authoritatively, so "no AAAA" comes with the SOA that lets
 * it be cached (RFC 2308), as answers relayed by a real recursive resolver do.
 */
const startBenchDns = (ttlSec: number) =>
  startDnsmasq({
    ttlSec,
    authoritative: true,
    mx: Array.from({ length: DOMAINS }, (_, i) => ({ domain: domain(i), host: `mx${i % HOSTS}.bench.test`, preference: 10 })),
    hosts: Array.from({ length: HOSTS }, (_, i) => ({ name: `mx${i}.bench.test`, address: `192.0.2.${i + 1}` })),
  });

/** One lookup of a domain; true when the answer is the one expected. */
type Lookup = (name: string) => Promise<boolean>;

interface RunResult {
  readonly name: string;
  readonly ops: number;
  readonly errors: number;
  readonly perSecond: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
}

/** `CONCURRENCY` lookups in flight over the domains in turn, until the time is up. */
const measure = async (name: string, lookup: Lookup): Promise<RunResult> => {
  const latencies: number[] = [];
  let next = 0;
  let errors = 0;
  const started = performance.now();
  const deadline = started + SECONDS * 1000;
  const worker = async () => {
    while (performance.now() < deadline) {
      const at = performance.now();
      const ok = await lookup(domain(next++ % DOMAINS)).catch(() => false);
      latencies.push(performance.now() - at);
      if (!ok) errors++;
    }
  };
  await Promise.all(Array.from({ length: CONCURRENCY }, worker));
  const elapsedMs = performance.now() - started;
  latencies.sort((a, b) => a - b);
  const at = (q: number) => latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))] ?? 0;
  return { name, ops: latencies.length, errors, perSecond: (latencies.length * 1000) / elapsedMs, p50Ms: at(0.5), p99Ms: at(0.99) };
};

const nodeResolver = (dns: RunningDnsmasq) => {
  const resolver = new Resolver({ timeout: 2000, tries: 2 });
  resolver.setServers([`${dns.host}:${dns.port}`]);
  return (name: string) =>
    new Promise<boolean>((resolve) => resolver.resolveMx(name, (error, records) => resolve(!error && records.length === 1)));
};

const ternClient = (dns: RunningDnsmasq) => makeDnsClient({ servers: [dns], timeoutMs: 2000, tries: 2 });

const ternCache = (dns: RunningDnsmasq) =>
  Effect.runSync(makeCachedResolver(ternClient(dns), { maxEntries: 10_000, minTtlSec: 0, maxTtlSec: 3600 }));

const run = (effect: Effect.Effect<boolean, unknown>) => Effect.runPromise(effect.pipe(Effect.orElseSucceed(() => false)));

const warm = async (lookup: Lookup) => {
  for (let i = 0; i < DOMAINS; i += 50) await Promise.all(Array.from({ length: 50 }, (_, j) => lookup(domain(i + j))));
};

/** Every run once per round, in turn, so load from elsewhere falls on all of them alike. */
const runRounds = async (runs: ReadonlyArray<readonly [string, Lookup]>): Promise<RunResult[]> => {
  const rounds: RunResult[][] = runs.map(() => []);
  for (let round = 0; round < ROUNDS; round++) {
    for (const [index, [name, lookup]] of runs.entries()) rounds[index]!.push(await measure(name, lookup));
  }
  return rounds.map((results) => [...results].sort((a, b) => a.perSecond - b.perSecond)[Math.floor(results.length / 2)]!);
};

const main = async () => {
  const [uncached, cached] = await Promise.all([startBenchDns(0), startBenchDns(300)]);
  try {
    const client = ternClient(uncached);
    const nodeCached = nodeResolver(cached);
    const cache = ternCache(cached);
    const cachedRoute: Lookup = (name) => run(Effect.map(cache.resolve(name), (route) => route.hosts.length === 1));
    await Promise.all([warm(nodeCached), warm(cachedRoute)]);
    const results = await runRounds([
      ["node dns.Resolver.resolveMx, uncached", nodeResolver(uncached)],
      ["tern DnsClient.query MX, uncached", (name) => run(Effect.map(client.query(name, "MX"), (a) => a.answers.length === 1))],
      ["tern route (MX+A+AAAA), uncached", (name) => run(Effect.map(resolveMailRoute(client, name), (r) => r.hosts.length === 1))],
      ["node dns.Resolver.resolveMx, warm c-ares", nodeCached],
      ["tern cache lookup MX, cached", (name) => run(Effect.map(cache.records.lookup(name, "MX"), (set) => set.records.length === 1))],
      ["tern route (MX+A+AAAA), cached", cachedRoute],
    ]);
    print(results);
  } finally {
    await Promise.all([uncached.stop(), cached.stop()]);
  }
};

const print = (results: ReadonlyArray<RunResult>) => {
  const [nodeUncached, , , nodeCached] = results;
  const baselineFor = (result: RunResult) => (result.name.includes("uncached") ? nodeUncached : nodeCached);
  console.log(
    `tern bench resolver: MX lookups over ${DOMAINS} domains, ${CONCURRENCY} in flight, median of ${ROUNDS} rounds of ${SECONDS} s, dnsmasq on 127.0.0.1`,
  );
  console.log(`machine: ${cpus()[0]?.model ?? "?"}, ${cpus().length} cores, load ${loadavg().map((n) => n.toFixed(2)).join(" ")}, node ${process.version}, c-ares ${process.versions.ares}`);
  const rows = results.map((result) => [
    result.name,
    String(result.ops),
    result.perSecond.toFixed(0),
    result.p50Ms.toFixed(3),
    result.p99Ms.toFixed(3),
    String(result.errors),
    `${(result.perSecond / (baselineFor(result)?.perSecond ?? result.perSecond)).toFixed(2)}×`,
  ]);
  const header = ["run", "lookups", "per s", "p50 ms", "p99 ms", "errors", "vs node"];
  const widths = header.map((title, column) => Math.max(title.length, ...rows.map((row) => row[column]!.length)));
  const line = (cells: ReadonlyArray<string>) => cells.map((cell, column) => (column === 0 ? cell.padEnd(widths[column]!) : cell.padStart(widths[column]!))).join("  ");
  console.log(line(header));
  for (const row of rows) console.log(line(row));
};

await main();
