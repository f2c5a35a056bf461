// Where mail for a domain goes: this node's DNS client and cache, served to the whole
// cluster as the resolver actor on a NATS queue group, and the client every delivery uses,
// which re-checks the answers it gets over NATS against this node's own rules.
import { Context, Effect, Layer } from "effect";
import { DnsTemporaryFailure, type DnsPermanentFailure, type MailRoute } from "../../protocol/route.ts";
import { resolveOverNats, startResolverActor } from "../../actors/resolver/actor.ts";
import { makeCheckedResolve, type CheckedResolveObserver } from "../../actors/resolver/checked-resolve.ts";
import { makeDnsClient } from "../../actors/resolver/dns-client.ts";
import { makeResolverMetrics } from "../../actors/resolver/metrics.ts";
import { makeCachedResolver } from "../../actors/resolver/resolver.ts";
import { makeRouteCheck } from "../../actors/resolver/route-check.ts";
import type { RecordSource } from "../../actors/resolver/records.ts";
import type { Log as LogShape } from "../log.ts";
import { Nats } from "./cluster.ts";
import { Config, Log, Metrics, Supervisor } from "./core.ts";

export interface ResolverShape {
  /**
   * Asks any node's resolver (this one included) over NATS. A route outside this node's
   * dns.allowedTargetNetworks is a temporary failure; a permanent failure holds only when
   * this node's own lookup agrees.
   */
  readonly resolve: (domain: string) => Effect.Effect<MailRoute, DnsTemporaryFailure | DnsPermanentFailure>;
  /** This node's own lookups through its cache (TXT, A, MX… for inbound authentication), never over NATS. */
  readonly records: RecordSource;
}

export class Resolver extends Context.Service<Resolver, ResolverShape>()("tern/Resolver") {
  static readonly layer = Layer.effect(
    Resolver,
    Effect.gen(function* () {
      const config = yield* Config;
      const { nc, subjects } = yield* Nats;
      const dnsMetrics = makeResolverMetrics((yield* Metrics).registry);
      const dns = makeDnsClient({ servers: config.dns.servers, timeoutMs: config.dns.timeoutMs, tries: config.dns.tries, observer: dnsMetrics.client });
      // One cache per node: routing here, and TXT/PTR/TLSA for the other actors.
      const cached = yield* makeCachedResolver(dns, {
        maxEntries: config.dns.cacheEntries,
        minTtlSec: config.dns.minTtlSec,
        maxTtlSec: config.dns.maxTtlSec,
        maxNegativeTtlSec: config.dns.maxNegativeTtlSec,
        policy: { families: config.dns.addressFamilies, allowedNetworks: config.dns.allowedTargetNetworks },
        ptrTimeoutMs: config.dns.ptrTimeoutMs,
        observer: dnsMetrics.cache,
      });
      const supervisor = yield* Supervisor;
      yield* startResolverActor(nc, subjects, cached, supervisor);
      const resolve = makeCheckedResolve({
        remote: (domain) => resolveOverNats(nc, subjects, domain),
        local: cached.resolve,
        check: makeRouteCheck(config.dns.allowedTargetNetworks),
        observer: loggedAndCounted(yield* Log, dnsMetrics.distrusted),
      });
      return { resolve, records: cached.records };
    }),
  );
}

/** Each distrusted answer as a log line with what the responder claimed, and in the metrics. */
const loggedAndCounted = (log: LogShape, counted: CheckedResolveObserver): CheckedResolveObserver => ({
  rejected: (domain, claimed, problems) => {
    counted.rejected(domain, claimed, problems);
    log("resolver.answer.rejected", { domain, problems, claimed });
  },
  unconfirmed: (domain, claimed, local) => {
    counted.unconfirmed(domain, claimed, local);
    const found = local instanceof DnsTemporaryFailure ? { temporary: local.detail } : { route: local };
    log("resolver.answer.unconfirmed", { domain, claimed: { reason: claimed.reason, detail: claimed.detail, server: claimed.server, rcode: claimed.rcode }, ...found });
  },
});
