// Which cluster-wide site budget a delivery falls under, and the budgets a node keeps a
// lease on. A configured rule (`delivery.siteBudgets`) is keyed by an MX host pattern,
// `provider:<name>` or `domain:<recipient domain>`; the first rule that matches a route
// applies. A rule with `perSource` is one budget per source address, named
// `<key>@<address>`: every address of every pool, and `<key>@<node>` for mail leaving from
// the node's own address (each node has its own).
import type { BudgetLimits } from "../../protocol/site-budget.ts";
import type { MailRoute } from "../../protocol/route.ts";
import type { SiteBudgetRule } from "./config.ts";
import { keyMatchesRoute, type ProviderTable } from "./providers.ts";

export interface BudgetRules {
  readonly rules: Readonly<Record<string, SiteBudgetRule>>;
  readonly providers: ProviderTable;
  /** Every source address of every pool. */
  readonly poolAddresses: ReadonlyArray<string>;
  /** This node's id: names the per-source budget of its own address. */
  readonly node: string;
}

const budgetName = (key: string, rule: SiteBudgetRule, source: string | undefined, node: string) => (rule.perSource ? `${key}@${source ?? node}` : key);

/** Every budget this node may need a lease on, with its limits. */
export const budgetsOf = ({ rules, poolAddresses, node }: BudgetRules): ReadonlyArray<{ readonly budget: string; readonly limits: BudgetLimits }> =>
  Object.entries(rules).flatMap(([key, { perSource, ...limits }]) =>
    (perSource ? [undefined, ...poolAddresses] : [undefined]).map((source) => ({ budget: budgetName(key, { perSource }, source, node), limits })),
  );

/** The budget mail on `route` from `source` (a pool address; undefined: the node's own) falls under, if any. */
export const budgetFor = ({ rules, providers, node }: BudgetRules, route: Pick<MailRoute, "domain" | "hosts">, source: string | undefined): string | undefined => {
  for (const [key, rule] of Object.entries(rules)) {
    if (keyMatchesRoute(key, providers, route)) return budgetName(key, rule, source, node);
  }
  return undefined;
};
