// The resolver as delivery uses it: any node's answer over NATS, re-checked where a
// forged answer would cost mail. NATS permissions decide who may answer; this holds even
// when they are wrong (README, "Securing a cluster").
// - A route is used only when it passes this node's own rules (route-check.ts); one
//   that does not is never used: this node resolves the domain itself instead, so a
//   rogue answering every request neither steers mail nor holds it back.
// - A permanent failure (NXDOMAIN, null MX, no usable address) would bounce the mail, so
//   it is confirmed by this node's own resolver first, bypassing NATS. Only a permanent
//   local answer bounces; a local route is used, a local temporary failure defers.
// A good route and a temporary failure cost nothing extra: the first is checked in
// memory, the second only delays.
import { Effect } from "effect";
import { DnsTemporaryFailure, type DnsPermanentFailure, type MailRoute } from "../../protocol/route.ts";
import type { ResolveFailure } from "./mail-route.ts";
import type { RouteCheck } from "./route-check.ts";

export type Resolve = (domain: string) => Effect.Effect<MailRoute, ResolveFailure>;

/** What a distrusted answer turned into, for logs and metrics. */
export interface CheckedResolveObserver {
  /** A route broke this node's rules and was not used. */
  readonly rejected: (domain: string, claimed: MailRoute, problems: ReadonlyArray<string>) => void;
  /** A permanent failure was not confirmed by this node's own lookup, which found `local` instead. */
  readonly unconfirmed: (domain: string, claimed: DnsPermanentFailure, local: MailRoute | DnsTemporaryFailure) => void;
}

export interface CheckedResolveDeps {
  /** Any node's resolver, over NATS. */
  readonly remote: Resolve;
  /** This node's own resolver. */
  readonly local: Resolve;
  readonly check: RouteCheck;
  readonly observer?: CheckedResolveObserver;
}

export const makeCheckedResolve =
  (deps: CheckedResolveDeps): Resolve =>
  (domain) =>
    deps.remote(domain).pipe(
      Effect.matchEffect({
        onSuccess: (route) => checkedRoute(deps, domain, route),
        onFailure: (failure) => (failure._tag === "DnsPermanentFailure" ? confirmedPermanent(deps, domain, failure) : Effect.fail(failure)),
      }),
    );

const checkedRoute = (deps: CheckedResolveDeps, domain: string, route: MailRoute): Effect.Effect<MailRoute, ResolveFailure> => {
  const problems = deps.check.problems(domain, route);
  if (problems.length === 0) return Effect.succeed(route);
  deps.observer?.rejected(domain, route, problems);
  return deps.local(domain);
};

const confirmedPermanent = (deps: CheckedResolveDeps, domain: string, claimed: DnsPermanentFailure): Effect.Effect<MailRoute, ResolveFailure> =>
  deps.local(domain).pipe(
    Effect.tap((route) => Effect.sync(() => deps.observer?.unconfirmed(domain, claimed, route))),
    Effect.catchTag("DnsTemporaryFailure", (local) => {
      deps.observer?.unconfirmed(domain, claimed, local);
      const detail = `resolver answered "${claimed.detail}", not confirmed by this node: ${local.detail}`;
      return Effect.fail(new DnsTemporaryFailure({ domain, detail, rcode: local.rcode, server: local.server }));
    }),
  );
