// mailauth asks its DNS questions through a function shaped like node:dns's `resolve`
// (answers as node:dns gives them, failures as errors with node:dns codes). This one
// answers from the node's own resolver (actors/resolver/), so inbound checks use the
// configured servers, its cache and its timeouts like every other lookup.
//
// How mailauth reads the codes: ENOTFOUND and ENODATA mean "no record" (SPF "none", a
// void lookup; DKIM "no key"); EBADNAME a name that cannot exist (SPF permerror); any other
// code a temporary failure (temperror). A lookup never runs past the message's deadline:
// once the deadline is set (at the end of DATA) each question gets what is left of it.
import { Clock, Effect } from "effect";
import type { DnsQueryType } from "../resolver/dns-client.ts";
import type { DnsLookupError, RecordSet, RecordSource } from "../resolver/records.ts";

/** What mailauth calls: a name and a record type, resolving to node:dns-shaped records. */
export type MailauthResolver = (name: string, type: string) => Promise<unknown>;

/** An Error carrying a node:dns code, which is all mailauth looks at. */
export const dnsError = (code: string, name: string, type: string, detail?: string): Error =>
  Object.assign(new Error(`${type} ${name}: ${detail ?? code}`), { code, hostname: name });

const SUPPORTED: ReadonlySet<string> = new Set<DnsQueryType>(["TXT", "A", "AAAA", "MX", "PTR", "CNAME"]);

/** RFC 1035 §2.3.4: labels of 1–63 octets, at most 253 octets in all (a trailing dot aside). */
export const isQueryableName = (name: string): boolean => {
  const bare = name.replace(/\.$/, "");
  return bare.length > 0 && bare.length <= 253 && bare.split(".").every((label) => label.length > 0 && label.length <= 63) && !/[\s\\]/.test(bare);
};

/** A record set as node:dns's resolve gives it (TXT: each record's strings; MX: {exchange, priority}), or the error node:dns would throw. */
export const answerOf = (set: RecordSet): ReadonlyArray<unknown> | Error => {
  if (set.rcode === "NXDOMAIN") return dnsError("ENOTFOUND", set.name, set.type);
  if (set.records.length === 0) return dnsError("ENODATA", set.name, set.type);
  return set.records.flatMap((record): unknown[] => {
    switch (record.type) {
      case "TXT":
        return [[...record.strings]];
      case "A":
      case "AAAA":
        return [record.address];
      case "MX":
        return [{ exchange: record.exchange, priority: record.preference }];
      case "CNAME":
      case "PTR":
        return [record.target];
      default:
        return [];
    }
  });
};

/** A lookup that could not be answered, as node:dns names it: every one is temporary to mailauth. */
export const errorOf = (error: DnsLookupError): Error => {
  const code =
    error.reason === "timeout" ? "ETIMEOUT"
    : error.reason === "network" ? "ECONNREFUSED"
    : error.rcode === "REFUSED" ? "EREFUSED"
    : error.rcode === "NOTIMP" ? "ENOTIMP"
    : error.rcode === "FORMERR" ? "EFORMERR"
    : "ESERVFAIL"; // SERVFAIL, other rcodes, CNAME loops and chains too long
  return dnsError(code, error.name, error.type, error.detail);
};

export interface ResolverDeps {
  readonly records: RecordSource;
  /** Runs an Effect with the node's services (its Clock among them). */
  readonly run: <A, E>(effect: Effect.Effect<A, E>) => Promise<A>;
}

/**
 * A resolver for one message's checks. `deadline()` is when every lookup must have ended
 * (epoch ms), or undefined while there is none yet: until then a lookup is bounded by the
 * DNS client's own timeouts alone.
 */
export const makeMailauthResolver = (deps: ResolverDeps, deadline: () => number | undefined): MailauthResolver => (name, type) => {
  if (!SUPPORTED.has(type)) return Promise.reject(dnsError("ENOTIMP", name, type, `${type} queries are not asked by Tern`));
  if (!isQueryableName(name)) return Promise.reject(dnsError("EBADNAME", name, type));
  const lookup = deps.records.lookup(name, type as DnsQueryType).pipe(
    Effect.matchEffect({
      onFailure: (error) => Effect.fail(errorOf(error)),
      onSuccess: (set) => {
        const answer = answerOf(set);
        return answer instanceof Error ? Effect.fail(answer) : Effect.succeed(answer);
      },
    }),
  );
  const bounded = Effect.gen(function* () {
    const until = deadline();
    if (until === undefined) return yield* lookup;
    const left = until - (yield* Clock.currentTimeMillis);
    const timedOut = () => Effect.fail(dnsError("ETIMEOUT", name, type, "the message's authentication time ran out"));
    if (left <= 0) return yield* timedOut();
    return yield* lookup.pipe(Effect.timeoutOrElse({ duration: left, orElse: timedOut }));
  });
  // The error itself, not a wrapper around it, must reach mailauth: it reads `code`.
  return deps.run(Effect.result(bounded)).then((result) => (result._tag === "Success" ? result.success : Promise.reject(result.failure)));
};
