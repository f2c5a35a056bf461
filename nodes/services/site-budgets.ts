// Cluster-wide site budgets (`delivery.siteBudgets`): each budget has one owner among the
// live members, chosen by consistent hashing of its name over the member list, and every
// node with mail for the budget's sites holds a lease from that owner
// (actors/delivery/budget-ledger.ts, actors/delivery/site-lease.ts).
//
// This service is both sides on one node: it answers lease asks for the budgets it owns
// (`tern.<cluster>.budget.<node>`), and keeps this node's leases, one per configured
// budget. An ask for a budget this node owns is answered in process, without NATS.
// When the owner dies, the members list drops it within the membership TTL, the ring
// names another owner, and holders ask it; their old leases lapse meanwhile.
import { Clock, Context, Effect, HashRing, Layer, PrimaryKey, Schedule } from "effect";
import { Gauge } from "prom-client";
import { callEndpoint, serveEndpoint, servedInScope, type Endpoint } from "../../actors/runtime/remote.ts";
import { BudgetLedger } from "../../actors/delivery/budget-ledger.ts";
import { makeSiteLease, type LeaseReport, type LeaseState, type SiteLease } from "../../actors/delivery/site-lease.ts";
import { budgetFor, budgetsOf, type BudgetRules } from "../../actors/delivery/budget-rules.ts";
import type { MailRoute } from "../../protocol/route.ts";
import { LeaseAsk, LeaseGrant, NotBudgetOwner } from "../../protocol/site-budget.ts";
import { Nats } from "./cluster.ts";
import { Config, Log, Metrics } from "./core.ts";
import { Membership } from "./membership.ts";

export const siteBudgetEndpoint: Endpoint<LeaseAsk, LeaseGrant, NotBudgetOwner> = {
  request: LeaseAsk,
  response: LeaseGrant,
  error: NotBudgetOwner,
};

export interface SiteBudgetsShape {
  /**
   * This node's lease on the first configured budget whose key matches the route (an MX
   * host pattern, `provider:<name>` or `domain:<name>`), if any. A per-source budget gives
   * the lease of `source` (the attempt's pool address; this node's own address when none).
   */
  readonly leaseFor: (route: MailRoute, source: string | undefined) => SiteLease | undefined;
  readonly leases: () => ReadonlyArray<LeaseState>;
  /** The node that owns a budget, by this node's view of the members. */
  readonly ownerOf: (budget: string) => string;
}

class Member implements PrimaryKey.PrimaryKey {
  constructor(readonly node: string) {}
  [PrimaryKey.symbol](): string {
    return this.node;
  }
}

/** The owner of each budget name among the given members: the same answer on every node that sees the same members. */
export const budgetOwners = (members: ReadonlyArray<string>): ((budget: string) => string | undefined) => {
  const ring = HashRing.make<Member>();
  HashRing.addMany(ring, [...members].sort().map((node) => new Member(node)));
  return (budget) => HashRing.get(ring, budget)?.node;
};

export class SiteBudgets extends Context.Service<SiteBudgets, SiteBudgetsShape>()("tern/SiteBudgets") {
  static readonly layer = Layer.effect(
    SiteBudgets,
    Effect.gen(function* () {
      const config = yield* Config;
      const log = yield* Log;
      const { registry } = yield* Metrics;
      const membership = yield* Membership;
      const { nc, subjects } = yield* Nats;
      const self = config.nodeId;
      const leaseMs = config.delivery.siteBudgetLeaseMs;
      const ledger = new BudgetLedger(leaseMs);

      // The ring is rebuilt only when the member list changes. This node is always on it:
      // before its first heartbeat is read back, and while the bucket cannot be read.
      let ring = { key: "", owner: (_: string): string | undefined => self };
      const ownerOf = (budget: string) => {
        const nodes = new Set(membership.members().map((member) => member.node)).add(self);
        const key = [...nodes].sort().join(",");
        if (key !== ring.key) ring = { key, owner: budgetOwners([...nodes]) };
        return ring.owner(budget) ?? self;
      };

      const excessReported = new Map<string, number>();
      const grantHere = (ask: LeaseAsk) =>
        Effect.gen(function* () {
          const owner = ownerOf(ask.budget);
          if (owner !== self) return yield* new NotBudgetOwner({ budget: ask.budget, owner });
          // Alone in the cluster (its own record read back, no other), nobody can hold a lease
          // from an earlier owner: no warming. A member list not read yet proves nothing.
          const members = membership.members();
          const alone = members.some((member) => member.node === self) && members.every((member) => member.node === self);
          const { grant, excess } = ledger.grant(ask, yield* Clock.currentTimeMillis, { alone });
          if (excess !== (excessReported.get(ask.budget) ?? 0)) {
            // A moving lease or nodes configured with different limits: visible, and bounded by the lease time.
            log(excess > 0 ? "site.budget.excess" : "site.budget.excess.ended", { level: excess > 0 ? "warn" : "info", budget: ask.budget, excess });
            excessReported.set(ask.budget, excess);
          }
          return grant;
        });

      yield* servedInScope((run) =>
        serveEndpoint(nc, subjects.siteBudgetOf(self), siteBudgetEndpoint, (ask) => Effect.map(grantHere(ask), (value) => ({ value })), { run }),
      );
      yield* Effect.forkScoped(Effect.repeat(Effect.flatMap(Clock.currentTimeMillis, (now) => Effect.sync(() => ledger.sweep(now))), Schedule.spaced(leaseMs)));

      const askOwner = (ask: LeaseAsk) => {
        const owner = ownerOf(ask.budget);
        if (owner === self) return grantHere(ask);
        return callEndpoint(nc, subjects.siteBudgetOf(owner), siteBudgetEndpoint, ask, { timeoutMs: Math.min(1_000, leaseMs / 2) }).pipe(Effect.map((reply) => reply.value));
      };

      const reportOf = (budget: string) => (event: LeaseReport) => {
        if (event._tag === "AskFailed") log("site.budget.ask.failed", { level: "warn", budget, owner: ownerOf(budget), reason: event.reason });
        else if (event._tag === "Lapsed") log("site.budget.lease.lapsed", { level: "warn", budget });
        else log("site.budget.granted", { budget, owner: ownerOf(budget), connections: event.connections, messages: event.messages, open: leases.get(budget)?.state().open });
      };

      const rules: BudgetRules = {
        rules: config.delivery.siteBudgets,
        providers: config.delivery.providers,
        poolAddresses: [...new Set(Object.values(config.delivery.pools.pools).flatMap((pool) => pool.map((source) => source.address)))],
        node: self,
      };
      const leases = new Map<string, SiteLease>();
      for (const { budget, limits } of budgetsOf(rules)) {
        leases.set(budget, yield* makeSiteLease({ budget, holder: self, limits, ask: askOwner, renewMs: Math.max(50, Math.floor(leaseMs / 5)), report: reportOf(budget) }));
      }

      const states = () => [...leases.values()].map((lease) => lease.state());
      const gauge = (name: string, help: string, read: (state: LeaseState) => number | undefined) =>
        new Gauge({
          name,
          help,
          labelNames: ["budget"],
          registers: [registry],
          collect() {
            for (const state of states()) {
              const value = read(state);
              if (value !== undefined) this.set({ budget: state.budget }, value);
            }
          },
        });
      gauge("tern_site_budget_connections_granted", "Connections this node's lease on a cluster-wide site budget allows now", (s) => s.granted);
      gauge("tern_site_budget_connections_open", "Connections this node holds open under a cluster-wide site budget", (s) => s.open);
      gauge("tern_site_budget_messages_left", "Messages this node's lease on a cluster-wide site budget still allows", (s) => s.messages);
      new Gauge({
        name: "tern_site_budget_excess_connections",
        help: "Connections beyond a budget this node owns (granted or open), as while a lease moves",
        labelNames: ["budget"],
        registers: [registry],
        collect() {
          for (const [budget, excess] of excessReported) this.set({ budget }, excess);
        },
      });

      return {
        leaseFor: (route, source) => {
          const budget = budgetFor(rules, route, source);
          return budget === undefined ? undefined : leases.get(budget);
        },
        leases: states,
        ownerOf,
      } satisfies SiteBudgetsShape;
    }),
  );
}
