// IP pools: named sets of source addresses, each with its own EHLO name. A message's pool
// is chosen once, when it is accepted (kept in its attributes, so every retry leaves from
// the same pool): the API's `pool` field first, then the first rule that matches (sender
// domain, authenticated user, a header's value), else the default pool. With no pool, mail
// leaves from the machine's default address with the node's hostname.
//
// Each delivery attempt then takes one address of the pool, by weight; the site actors
// keep connections per (site, source address), since a connection is bound to its source.
// A cold address (one still warming up) has caps per destination provider; what happens
// when it has used one is the pool's `overflow` (actors/delivery/warmup-usage.ts).
import { domainOf, matchesDomain } from "../common/domains.ts";
import type { SourceWarmup } from "./warmup.ts";

export interface SourceAddress {
  /** The local IP address outbound connections bind to. */
  readonly address: string;
  /** The name this address says in EHLO (it should match the address's PTR record). */
  readonly ehlo: string;
  /** Share of the pool's connections relative to the other addresses (default 1). */
  readonly weight: number;
  /** Still warming up: caps per destination provider that grow by day (absent: warm). */
  readonly warmup?: SourceWarmup | undefined;
}

/**
 * When a cold address of a pool has used its cap: the attempt leaves from another address
 * of the pool that has room ("warm"), or waits for the cap's window to open ("wait").
 */
export type Overflow = "warm" | "wait";

export type PoolRule =
  | { readonly pool: string; readonly senderDomain: string }
  | { readonly pool: string; readonly user: string }
  | { readonly pool: string; readonly header: string; readonly value: string };

export interface PoolsConfig {
  readonly pools: Readonly<Record<string, ReadonlyArray<SourceAddress>>>;
  /** Tried in order; the first that matches names the pool. */
  readonly rules: ReadonlyArray<PoolRule>;
  readonly defaultPool: string | undefined;
  /** Pool name → what its cold addresses do at their cap (default "warm"). */
  readonly overflow?: Readonly<Record<string, Overflow>> | undefined;
}

/** What a pool is chosen by, at acceptance. */
export interface PoolInputs {
  readonly sender: string;
  /** The authenticated SMTP user, if any. */
  readonly user?: string | undefined;
  /** The pool an API submit asked for (already checked to exist). */
  readonly requested?: string | undefined;
  /** The value of a header of the message (the first one), unfolded and trimmed. */
  readonly header: (name: string) => string | undefined;
}

const ruleMatches = (rule: PoolRule, inputs: PoolInputs): boolean => {
  if ("senderDomain" in rule) return inputs.sender !== "" && matchesDomain(rule.senderDomain, domainOf(inputs.sender));
  if ("user" in rule) return inputs.user !== undefined && inputs.user.toLowerCase() === rule.user.toLowerCase();
  return inputs.header(rule.header)?.toLowerCase() === rule.value.toLowerCase();
};

/** The pool a message leaves from, or undefined for none (the default address). */
export const choosePool = (config: PoolsConfig, inputs: PoolInputs): string | undefined => {
  if (inputs.requested !== undefined) return inputs.requested;
  for (const rule of config.rules) if (ruleMatches(rule, inputs)) return rule.pool;
  return config.defaultPool;
};

/** Every source address of every pool. */
export const poolAddressesOf = (config: PoolsConfig): ReadonlySet<string> => new Set(Object.values(config.pools).flatMap((pool) => pool.map((source) => source.address)));

/** One address of a pool by weight; `random` in [0, 1). */
export const pickSource = (pool: ReadonlyArray<SourceAddress>, random: number): SourceAddress | undefined => {
  const total = pool.reduce((sum, source) => sum + source.weight, 0);
  let point = random * total;
  for (const source of pool) {
    point -= source.weight;
    if (point < 0) return source;
  }
  return pool[pool.length - 1];
};

/**
 * The value of header `name` in a header section ("Name: value\r\n" lines, continuation
 * lines folded in), or undefined. Case-insensitive on the name; the first occurrence wins.
 */
export const headerValue = (headerSection: string, name: string): string | undefined => {
  const wanted = name.toLowerCase();
  const lines = headerSection.split(/\r?\n/);
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!;
    const colon = line.indexOf(":");
    if (colon <= 0 || line.slice(0, colon).trim().toLowerCase() !== wanted) continue;
    let value = line.slice(colon + 1);
    while (i + 1 < lines.length && /^[ \t]/.test(lines[i + 1]!)) value += ` ${lines[++i]!.trim()}`;
    return value.trim();
  }
  return undefined;
};

/** The pool kept in a message's attributes at acceptance. */
export const poolOf = (attributes: Readonly<Record<string, unknown>> | undefined): string | undefined =>
  typeof attributes?.pool === "string" ? attributes.pool : undefined;
