// Where mail for a domain goes: this node's DNS client and cache, served to the whole
// cluster as the resolver actor on a NATS queue group, and the client every delivery uses.
import { Context, Effect, Layer } from "effect";
import type { DnsPermanentFailure, DnsTemporaryFailure, MailRoute } from "../../protocol/route.ts";
import { resolveOverNats, startResolverActor } from "../../actors/resolver/actor.ts";
import { makeDnsClient } from "../../actors/resolver/dns-client.ts";
import { makeResolverMetrics } from "../../actors/resolver/metrics.ts";
import { makeCachedResolver } from "../../actors/resolver/resolver.ts";
import { Nats } from "./cluster.ts";
import { Config, Metrics, Supervisor } from "./core.ts";

export interface ResolverShape {
  /** Asks any node's resolver (this one included) over NATS. */
  readonly resolve: (domain: string) => Effect.Effect<MailRoute, DnsTemporaryFailure | DnsPermanentFailure>;
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
      return { resolve: (domain: string) => resolveOverNats(nc, subjects, domain) };
    }),
  );
}
