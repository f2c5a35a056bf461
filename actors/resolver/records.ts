// From one question (name, type) to the records that answer it: CNAME chains followed
// with a bound and loop detection, rcodes classified, and how long the result may be
// reused (record TTLs, or the SOA rule of RFC 2308 for "no such name" and "no data").
import { Effect, Schema } from "effect";
import { normalizeName, type DnsAnswer, type DnsClient, type DnsQueryType, type DnsRecord, type QueryOptions } from "./dns-client.ts";

/** The answer to one question, after CNAMEs. An empty NOERROR set is "no data" (NODATA). */
export interface RecordSet {
  readonly name: string;
  readonly type: DnsQueryType;
  /** Where the CNAME chain ended; `name` itself when there was none. */
  readonly canonicalName: string;
  readonly rcode: "NOERROR" | "NXDOMAIN";
  /** Records of `type` owned by `canonicalName`, nothing else from the answer. */
  readonly records: ReadonlyArray<DnsRecord>;
  /** Seconds this may be reused; undefined when it must not be (a negative answer without SOA). */
  readonly ttlSec: number | undefined;
  /** "host:port" of the server whose answer this is. */
  readonly server: string;
  /** Every answer on the way had the AD bit. */
  readonly authenticated: boolean;
}

/** The question could not be answered now; never a statement that the name does not exist. */
export class DnsLookupError extends Schema.TaggedError<DnsLookupError>()("DnsLookupError", {
  name: Schema.String,
  type: Schema.String,
  reason: Schema.Literals(["timeout", "network", "rcode", "cname-loop", "cname-chain-too-long"]),
  detail: Schema.String,
  /** The rcode of the answer, when one came ("SERVFAIL", "REFUSED", ...). */
  rcode: Schema.optional(Schema.String),
  server: Schema.optional(Schema.String),
}) {}

/** Anything that answers questions: the bare client, or the node's cache in front of it. */
export interface RecordSource {
  lookup(name: string, type: DnsQueryType, options?: QueryOptions): Effect.Effect<RecordSet, DnsLookupError>;
  /** A fresh cached answer, without asking anyone; lets callers skip forking when all is cached. */
  peek?(name: string, type: DnsQueryType): RecordSet | undefined;
}

// Unbound allows 11 restarts and BIND 16; real mail domains use one or two aliases.
// Eight is generous for them and still stops a long chain from costing many queries.
const MAX_CNAME_HOPS = 8;

export const recordsFrom = (client: DnsClient): RecordSource => ({
  lookup: (name, type, options) => lookupRecords(client, normalizeName(name), type, options),
});

/** Where a walk through one answer's records ended. */
type Walk =
  | { readonly kind: "found"; readonly records: ReadonlyArray<DnsRecord> }
  | { readonly kind: "ended"; readonly at: string } // no data for `at` in this answer
  | { readonly kind: "loop"; readonly at: string }
  | { readonly kind: "too-long" };

const lookupRecords = Effect.fn("Resolver.lookupRecords")(function* (
  client: DnsClient,
  name: string,
  type: DnsQueryType,
  options: QueryOptions | undefined,
) {
  const chain = [name];
  const ttls: number[] = [];
  let authenticated = true;
  // A resolver normally returns the whole chain at once; a new query for the chain's end is
  // needed only when it stopped early. Each such query costs at least one hop, so this ends.
  for (;;) {
    const current = chain.at(-1)!;
    const answer = yield* ask(client, current, type, options, name);
    authenticated &&= answer.authenticated;
    const walk = walkChain(answer, type, chain, ttls);
    const fail = (reason: DnsLookupError["reason"], detail: string) =>
      new DnsLookupError({ name, type, reason, detail, rcode: answer.rcode, server: answer.server });
    if (walk.kind === "loop") return yield* fail("cname-loop", `CNAME loop at ${walk.at} (chain ${chain.join(" → ")})`);
    if (walk.kind === "too-long") return yield* fail("cname-chain-too-long", `more than ${MAX_CNAME_HOPS} CNAMEs from ${name}`);
    const result = { name, type, canonicalName: chain.at(-1)!, server: answer.server, authenticated };
    if (walk.kind === "found") {
      const ttlSec = Math.min(...ttls, ...walk.records.map((record) => record.ttl));
      return { ...result, rcode: "NOERROR", records: walk.records, ttlSec } satisfies RecordSet;
    }
    // Final unless the server stopped part-way through a chain (no SOA vouching for "no data").
    if (answer.rcode === "NXDOMAIN" || walk.at === current || hasSoa(answer)) {
      const rcode = answer.rcode === "NXDOMAIN" ? "NXDOMAIN" : "NOERROR";
      return { ...result, rcode, records: [], ttlSec: negativeTtl(answer, walk.at, ttls) } satisfies RecordSet;
    }
  }
});

/** One query; rcodes other than NOERROR and NXDOMAIN say nothing about the name, so they fail. */
const ask = (client: DnsClient, current: string, type: DnsQueryType, options: QueryOptions | undefined, asked: string) =>
  client.query(current, type, options).pipe(
    Effect.mapError((error) => new DnsLookupError({ name: asked, type, reason: error.reason, detail: error.detail, server: error.server })),
    Effect.flatMap((answer): Effect.Effect<DnsAnswer, DnsLookupError> =>
      answer.rcode === "NOERROR" || answer.rcode === "NXDOMAIN"
        ? Effect.succeed(answer)
        : Effect.fail(
            new DnsLookupError({
              name: asked,
              type,
              reason: "rcode",
              rcode: answer.rcode,
              server: answer.server,
              detail: `${type} ${current}: ${answer.rcode} from ${answer.server}`,
            }),
          )),
  );

/**
 * Follows CNAMEs through one answer from the chain's end, extending `chain` and `ttls`.
 * Only records owned by a name on the chain count: anything else in the answer is ignored,
 * so extra records slipped into a reply cannot redirect the lookup.
 */
const walkChain = (answer: DnsAnswer, type: DnsQueryType, chain: string[], ttls: number[]): Walk => {
  for (;;) {
    const at = chain.at(-1)!;
    const records = answer.answers.filter((record) => record.type === type && record.name === at);
    if (records.length > 0) return { kind: "found", records };
    const alias = type === "CNAME" ? undefined : answer.answers.find((record) => record.type === "CNAME" && record.name === at);
    if (alias === undefined || alias.type !== "CNAME") return { kind: "ended", at };
    if (chain.includes(alias.target)) return { kind: "loop", at: alias.target };
    if (chain.length > MAX_CNAME_HOPS) return { kind: "too-long" };
    chain.push(alias.target);
    ttls.push(alias.ttl);
  }
};

const hasSoa = (answer: DnsAnswer) => answer.authorities.some((record) => record.type === "SOA");

/**
 * RFC 2308 §5: a negative answer lives for min(SOA TTL, SOA MINIMUM) of the zone's SOA in
 * the authority section; without one it SHOULD NOT be cached. An SOA that is not an
 * ancestor of the name is not that zone's and is ignored.
 */
const negativeTtl = (answer: DnsAnswer, name: string, chainTtls: ReadonlyArray<number> = []): number | undefined => {
  const soa = answer.authorities.find(
    (record) => record.type === "SOA" && (record.name === "" || name === record.name || name.endsWith(`.${record.name}`)),
  );
  if (soa === undefined || soa.type !== "SOA") return undefined;
  return Math.min(soa.ttl, soa.minimum, ...chainTtls);
};
