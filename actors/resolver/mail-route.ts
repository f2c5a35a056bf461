// From a recipient domain to the ordered hosts delivery must try (RFC 5321 §5.1), with
// every DNS outcome classified as temporary (retry later) or permanent (bounce).
import { isIP } from "node:net";
import { Effect, Result } from "effect";
import { DnsPermanentFailure, DnsTemporaryFailure, type DnsSource, type MailHost, type MailRoute } from "../../protocol/route.ts";
import { addressTypes, defaultAddressPolicy, makeAddressFilter, type AddressFilter, type AddressPolicy } from "./addresses.ts";
import { normalizeName, type DnsClient, type DnsRecordOf } from "./dns-client.ts";
import { recordsFrom, type DnsLookupError, type RecordSet, type RecordSource } from "./records.ts";

export type ResolveFailure = DnsTemporaryFailure | DnsPermanentFailure;

type MxRecord = DnsRecordOf<"MX">;

/** How one host's address lookup ended; a failed host is skipped unless every host fails. */
type HostLookup =
  | { readonly ok: true; readonly host: MailHost }
  | { readonly ok: false; readonly failure: ResolveFailure };

// Parallel address lookups for MX hosts, bounded so one domain with many MX cannot flood the server.
const HOST_LOOKUP_CONCURRENCY = 4;

export type MailRouter = (domain: string) => Effect.Effect<MailRoute, ResolveFailure>;

/** One-off resolution (tests, tools); the node keeps one router over its cache instead. */
export const resolveMailRoute = (
  source: RecordSource | DnsClient,
  domain: string,
  policy: AddressPolicy = defaultAddressPolicy,
): Effect.Effect<MailRoute, ResolveFailure> => makeMailRouter("lookup" in source ? source : recordsFrom(source), policy)(domain);

export const makeMailRouter = (records: RecordSource, policy: AddressPolicy): MailRouter => {
  const filter = makeAddressFilter(policy.allowedNetworks);
  const hosts = hostLookup(records, policy, filter);
  // Untraced: a cached route is a few map reads, and a traced Effect.fn (a stack captured
  // per call) measured at half its cost in bench/resolver.ts. Misses are traced in records.ts.
  return Effect.fnUntraced(function* (domain: string) {
    const name = normalizeName(domain);
    const literal = addressLiteral(name);
    if (literal !== undefined) return yield* literalRoute(name, literal, filter);
    const mx = yield* records.lookup(name, "MX").pipe(Effect.mapError(temporaryFailure(name)));
    const source: DnsSource = { server: mx.server, rcode: mx.rcode };
    if (mx.rcode === "NXDOMAIN") {
      return yield* new DnsPermanentFailure({ domain: name, reason: "nxdomain", detail: `MX ${name}: NXDOMAIN from ${mx.server}`, ...source });
    }
    const exchanges = mx.records.filter((record): record is MxRecord => record.type === "MX");
    if (exchanges.length === 0) return yield* implicitMxRoute(name, source, hosts);
    if (exchanges.every((record) => record.exchange === "")) {
      const detail = `null MX: ${name} accepts no mail (RFC 7505), answered by ${mx.server}`;
      return yield* new DnsPermanentFailure({ domain: name, reason: "null-mx", detail, ...source });
    }
    // A "." beside real exchanges breaks RFC 7505 §3; the real ones still say where mail goes.
    return yield* explicitMxRoute(name, exchanges.filter((record) => record.exchange !== ""), source, hosts);
  });
};

export const temporaryFailure = (domain: string) => (error: DnsLookupError) =>
  new DnsTemporaryFailure({ domain, detail: `${error.type} ${error.reason}: ${error.detail}`, rcode: error.rcode, server: error.server });

/** `[192.0.2.1]` or `[IPv6:2001:db8::1]` (RFC 5321 §4.1.3): no DNS at all. */
const addressLiteral = (name: string): string | undefined => {
  const inner = /^\[(?:ipv6:)?(.+)\]$/.exec(name)?.[1];
  return inner !== undefined && isIP(inner) !== 0 ? inner : undefined;
};

const literalRoute = (domain: string, address: string, filter: AddressFilter): Effect.Effect<MailRoute, ResolveFailure> =>
  Effect.map(usableHost(address, 0, [address], filter), (host) => ({ domain, hosts: [host], implicitMx: true }));

/** No MX: the domain itself is the one host, at preference 0 (RFC 5321 §5.1). */
const implicitMxRoute = (domain: string, source: DnsSource, hosts: HostLookupFn) =>
  Effect.flatMap(hosts(domain, 0), (result): Effect.Effect<MailRoute, ResolveFailure> => {
    if (result.ok) return Effect.succeed({ domain, hosts: [result.host], implicitMx: true, dns: source });
    return Effect.fail(restated(result.failure, domain, `no MX, and ${result.failure.detail}`));
  });

/** The same failure, told about the domain instead of the host it happened on. */
const restated = (failure: ResolveFailure, domain: string, detail: string): ResolveFailure => {
  const source = { domain, detail, rcode: failure.rcode, server: failure.server };
  return failure._tag === "DnsTemporaryFailure"
    ? new DnsTemporaryFailure(source)
    : new DnsPermanentFailure({ ...source, reason: failure.reason });
};

const explicitMxRoute = (domain: string, mxRecords: ReadonlyArray<MxRecord>, source: DnsSource, hosts: HostLookupFn) =>
  Effect.gen(function* () {
    const exchanges = byPreference(mxRecords);
    // No more workers than hosts: one host (the common case) then runs without forking.
    const lookups = yield* Effect.forEach(exchanges, (mx) => hosts(mx.exchange, mx.preference), {
      concurrency: Math.min(HOST_LOOKUP_CONCURRENCY, exchanges.length),
    });
    const found = lookups.flatMap((result) => (result.ok ? [result.host] : []));
    if (found.length === 0) return yield* allHostsFailed(domain, lookups.flatMap((result) => (result.ok ? [] : [result.failure])));
    return { domain, hosts: found, implicitMx: false, dns: source } satisfies MailRoute;
  });

/**
 * Lowest preference first, in random order among equal preferences (RFC 5321 §5.1) so
 * load spreads over them; duplicates dropped. Shuffling then stable-sorting does both.
 */
const byPreference = (mxRecords: ReadonlyArray<MxRecord>): ReadonlyArray<MxRecord> => {
  const lowestFirst = [...mxRecords].sort((a, b) => a.preference - b.preference);
  const unique = lowestFirst.filter((mx, index) => lowestFirst.findIndex((other) => other.exchange === mx.exchange) === index);
  for (let i = unique.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [unique[i], unique[j]] = [unique[j]!, unique[i]!];
  }
  return unique.sort((a, b) => a.preference - b.preference);
};

const allHostsFailed = (domain: string, failures: ReadonlyArray<ResolveFailure>) => {
  const detail = `no usable MX host: ${failures.map((failure) => failure.detail).join("; ")}`;
  // One host failing temporarily may have an address tomorrow: do not bounce yet.
  const temporary = failures.find((failure) => failure._tag === "DnsTemporaryFailure");
  if (temporary !== undefined) return Effect.fail(restated(temporary, domain, detail));
  const refused = failures.some((failure) => failure._tag === "DnsPermanentFailure" && failure.reason === "non-public-address");
  return Effect.fail(new DnsPermanentFailure({ domain, detail, reason: refused ? "non-public-address" : "no-address" }));
};

type HostLookupFn = (hostName: string, preference: number) => Effect.Effect<HostLookup>;

const hostLookup = (records: RecordSource, policy: AddressPolicy, filter: AddressFilter): HostLookupFn => (hostName, preference) =>
  hostAddresses(records, hostName, policy).pipe(
    Effect.flatMap((addresses) => usableHost(hostName, preference, addresses, filter)),
    Effect.match({ onSuccess: (host): HostLookup => ({ ok: true, host }), onFailure: (failure): HostLookup => ({ ok: false, failure }) }),
  );

type AddressOutcome = Result.Result<RecordSet, DnsLookupError>;

/** An IP literal as is, else A and/or AAAA per the family policy, preferred family first. */
const hostAddresses = (records: RecordSource, hostName: string, policy: AddressPolicy): Effect.Effect<ReadonlyArray<string>, ResolveFailure> => {
  // Some MX records name an IP instead of a host (RFC-violating but common); use it directly.
  if (isIP(hostName) !== 0) return Effect.succeed([hostName]);
  const types = addressTypes(policy.families);
  // All cached (the common case): no fibers to fork for the parallel lookups below.
  const cached = types.map((type) => records.peek?.(hostName, type));
  if (cached.every((set) => set !== undefined)) return settleAddresses(hostName, types, cached.map((set) => Result.succeed(set)));
  return Effect.forEach(types, (type) => Effect.result(records.lookup(hostName, type)), { concurrency: "unbounded" }).pipe(
    Effect.flatMap((outcomes) => settleAddresses(hostName, types, outcomes)),
  );
};

/** One family answering is enough; the other one failing must not hold the mail back. */
const settleAddresses = (
  hostName: string,
  types: ReadonlyArray<string>,
  outcomes: ReadonlyArray<AddressOutcome>,
): Effect.Effect<ReadonlyArray<string>, ResolveFailure> => {
  const sets = outcomes.flatMap((outcome) => (outcome._tag === "Success" ? [outcome.success] : []));
  const addresses = sets.flatMap((set) => set.records.flatMap((record) => ("address" in record ? [record.address] : [])));
  if (addresses.length > 0) return Effect.succeed(addresses);
  const error = outcomes.find((outcome) => outcome._tag === "Failure");
  if (error !== undefined) return Effect.fail(temporaryFailure(hostName)(error.failure));
  return Effect.fail(noAddress(hostName, types, sets.find((set) => set.rcode === "NXDOMAIN")));
};

const noAddress = (hostName: string, types: ReadonlyArray<string>, nxdomain: RecordSet | undefined) =>
  new DnsPermanentFailure({
    domain: hostName,
    reason: "no-address",
    detail: `${hostName} has no ${types.join("/")} record${nxdomain ? ` (NXDOMAIN from ${nxdomain.server})` : ""}`,
    rcode: nxdomain?.rcode,
    server: nxdomain?.server,
  });

/** The host with the addresses mail may go to; refused when none are left. */
const usableHost = (
  hostName: string,
  preference: number,
  addresses: ReadonlyArray<string>,
  filter: AddressFilter,
): Effect.Effect<MailHost, DnsPermanentFailure> => {
  const { allowed, refused } = filter.partition(addresses);
  if (allowed.length > 0) return Effect.succeed({ name: hostName, preference, addresses: allowed });
  const detail = `${hostName} resolves only to non-public addresses (${refused.join(", ")}); dns.allowedTargetNetworks can allow them`;
  return Effect.fail(new DnsPermanentFailure({ domain: hostName, reason: "non-public-address", detail }));
};
