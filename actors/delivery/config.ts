import type { BudgetLimits } from "../../protocol/site-budget.ts";
import type { PoolsConfig } from "./pools.ts";
import type { ProviderTable } from "./providers.ts";
/** A site budget as configured: its limits, and whether they hold per source address (IP pools) or for all together. */
export interface SiteBudgetRule extends BudgetLimits {
  /**
   * Each source address gets the limits on its own (receivers rate and judge each sending IP
   * apart). Mail without a pool address counts under this node's own address.
   */
  readonly perSource?: boolean | undefined;
}

// The delivery settings a node runs with (the `delivery` section of the node's config).
export interface DeliveryConfig {
  readonly remotePort: number;
  readonly connectionsPerSite: number;
  readonly maxInFlight: number;
  readonly pollMs: number;
  readonly retryBaseMs: number;
  readonly retryMaxMs: number;
  readonly connectTimeoutMs: number;
  readonly greetingTimeoutMs: number;
  readonly socketTimeoutMs: number;
  readonly messagesPerConnection: number;
  readonly maxRecipientsPerTransaction: number;
  readonly connectionIdleMs: number;
  readonly maxConnections: number;
  readonly siteConnections: Readonly<Record<string, number>>;
  /** Host pattern, `provider:` or `domain:` key → limits kept by the whole cluster (protocol/site-budget.ts). */
  readonly siteBudgets: Readonly<Record<string, SiteBudgetRule>>;
  readonly siteBudgetLeaseMs: number;
  /** Mailbox providers: name → MX host patterns (actors/delivery/providers.ts). */
  readonly providers: ProviderTable;
  /** IP pools, their rules and the default pool (actors/delivery/pools.ts). */
  readonly pools: PoolsConfig;
  readonly requireTls: ReadonlyArray<string>;
  readonly maxInFlightPerQueue: number;
  readonly maxAgeMs: number;
  readonly delayNoticeMs: number;
  readonly holdMs: number;
  readonly maxQueueWaitMs: number;
  readonly bounceRulesFile: string | undefined;
  /** Throttle rules added to the starter table (actors/delivery/throttle-rules.ts). */
  readonly throttleRulesFile: string | undefined;
  /** Automatic back-off: quiet time per step back up, and the gap between messages at level 1 (actors/delivery/throttle.ts). */
  readonly throttleRecoveryMs: number;
  readonly throttleGapMs: number;
  readonly dsnMaxReturnBytes: number;
}
