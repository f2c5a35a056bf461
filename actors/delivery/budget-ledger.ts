// The owner's side of cluster-wide site budgets: what each holder of a budget may use.
// Pure bookkeeping, time passed in, so every rule is tested without clocks.
//
// Rules, so that the cluster never holds more than a budget allows:
// - Connections are shared max-min fairly among the holders that want some. A holder is
//   granted at most what is free: the limit minus what every other live holder was
//   granted or still reports open, whichever is more. So capacity taken from one holder
//   goes to another only after the first reports having closed it.
// - A lease lives `ttlMs` from the moment its holder asked (the holder counts from when
//   it sent the ask, so it stops using a lapsed lease before the owner gives it away).
// - A budget this owner has just started keeping (the node started, or ownership moved
//   here because the old owner died or the members changed) is "warming" for one lease
//   time: leases granted by the previous owner may still be in use, and this owner does not
//   know them all yet. Meanwhile a holder keeps at most what it held and nobody grows.
//   An owner alone in the cluster skips this: there is no one else to hold a lease.
// - Messages per second refill a token bucket (burst: one second's worth) that starts
//   empty; messages per hour are counted in a sliding window of one-minute slots. Each
//   lease grants a fair share of what is available now; the holder gives back with its
//   next ask what it did not send, and the owner counts those as not sent. A new owner does not know the hour's count so far: after ownership moves, up to
//   one more hour's worth may go out within that hour.
import type { BudgetLimits, LeaseAsk, LeaseGrant } from "../../protocol/site-budget.ts";

interface Lease {
  connections: number;
  open: number;
  wantConnections: number;
  wantMessages: number;
  limits: BudgetLimits;
  expiresAt: number;
}

const HOUR_SLOTS = 60;
const SLOT_MS = 60_000;

interface Budget {
  readonly startedAt: number;
  readonly leases: Map<string, Lease>;
  /** Tokens of the per-second bucket, and when it was last refilled. */
  tokens: number;
  refilledAt: number;
  /** Messages granted in each of the last HOUR_SLOTS minutes; `slot` is the index of hourly[0]. */
  slot: number;
  hourly: number[];
  /** The largest excess seen in the current episode (0 when none). */
  excess: number;
}

export interface Granted {
  readonly grant: LeaseGrant;
  /**
   * Connections beyond the limit that the cluster holds right now by this owner's
   * knowledge (granted or reported open): a moving lease, or nodes configured with
   * different limits. 0 normally.
   */
  readonly excess: number;
}

export interface BudgetView {
  readonly budget: string;
  readonly limits: BudgetLimits;
  readonly warming: boolean;
  readonly holders: ReadonlyArray<{ readonly holder: string; readonly connections: number; readonly open: number; readonly expiresAt: number }>;
}

/** The strictest of each limit among the given ones. */
export const strictest = (all: Iterable<BudgetLimits>): BudgetLimits => {
  const min = (a: number | undefined, b: number | undefined) => (a === undefined ? b : b === undefined ? a : Math.min(a, b));
  let limits: BudgetLimits = {};
  for (const l of all) {
    const connections = min(limits.connections, l.connections);
    const messagesPerSecond = min(limits.messagesPerSecond, l.messagesPerSecond);
    const messagesPerHour = min(limits.messagesPerHour, l.messagesPerHour);
    limits = {
      ...(connections !== undefined ? { connections } : {}),
      ...(messagesPerSecond !== undefined ? { messagesPerSecond } : {}),
      ...(messagesPerHour !== undefined ? { messagesPerHour } : {}),
    };
  }
  return limits;
};

/**
 * Max-min fair shares of `total` for the given wants: everyone gets what they want if it
 * fits; else the smallest wants are met and the rest split evenly (ties broken by order).
 */
export const fairShares = (wants: ReadonlyArray<number>, total: number): number[] => {
  const shares = wants.map(() => 0);
  let left = total;
  const order = wants.map((want, index) => ({ want, index })).sort((a, b) => a.want - b.want || a.index - b.index);
  order.forEach(({ want, index }, position) => {
    const even = Math.floor(left / (order.length - position));
    const extra = left - even * (order.length - position) > 0 ? 1 : 0;
    shares[index] = Math.min(want, even + extra);
    left -= shares[index]!;
  });
  return shares;
};

export class BudgetLedger {
  private readonly budgets = new Map<string, Budget>();

  constructor(private readonly ttlMs: number) {}

  /** `alone`: no other node is a member now (a budget started now needs no warming). */
  grant(ask: LeaseAsk, now: number, { alone }: { readonly alone: boolean }): Granted {
    const budget = this.budgetOf(ask.budget, alone ? now - this.ttlMs : now);
    this.expire(budget, now);
    const lease: Lease = budget.leases.get(ask.holder) ?? { connections: ask.heldConnections, open: ask.openConnections, wantConnections: 0, wantMessages: 0, limits: ask.limits, expiresAt: now };
    lease.open = ask.openConnections;
    lease.wantConnections = ask.wantConnections;
    lease.wantMessages = ask.wantMessages;
    lease.limits = ask.limits;
    budget.leases.set(ask.holder, lease);
    const limits = strictest([...budget.leases.values()].map((l) => l.limits));
    const warming = now < budget.startedAt + this.ttlMs;

    let connections: number | undefined;
    if (limits.connections !== undefined) {
      const holders = [...budget.leases.entries()];
      const shares = fairShares(holders.map(([, l]) => l.wantConnections), limits.connections);
      const fair = shares[holders.findIndex(([holder]) => holder === ask.holder)]!;
      const usedByOthers = holders.reduce((sum, [holder, l]) => (holder === ask.holder ? sum : sum + Math.max(l.connections, l.open)), 0);
      const free = Math.max(0, limits.connections - usedByOthers);
      connections = Math.min(fair, free, warming ? ask.heldConnections : Infinity);
      lease.connections = connections;
    }

    const messages = this.messagesFor(budget, ask, limits, now);
    lease.expiresAt = now + this.ttlMs;
    const excess = limits.connections === undefined ? 0 : Math.max(0, [...budget.leases.values()].reduce((sum, l) => sum + Math.max(l.connections, l.open), 0) - limits.connections);
    budget.excess = excess;
    return {
      grant: { ...(connections !== undefined ? { connections } : {}), ...(messages !== undefined ? { messages } : {}), ttlMs: this.ttlMs },
      excess,
    };
  }

  /** Forgets leases that lapsed and budgets left with none. */
  sweep(now: number): void {
    for (const [name, budget] of this.budgets) {
      this.expire(budget, now);
      if (budget.leases.size === 0 && now >= budget.startedAt + this.ttlMs) this.budgets.delete(name);
    }
  }

  /** What this owner keeps, for `tern cluster status`-like views and tests. */
  view(now: number): BudgetView[] {
    return [...this.budgets.entries()].map(([name, budget]) => ({
      budget: name,
      limits: strictest([...budget.leases.values()].map((l) => l.limits)),
      warming: now < budget.startedAt + this.ttlMs,
      holders: [...budget.leases.entries()].map(([holder, l]) => ({ holder, connections: l.connections, open: l.open, expiresAt: l.expiresAt })),
    }));
  }

  private budgetOf(name: string, now: number): Budget {
    const existing = this.budgets.get(name);
    if (existing) return existing;
    const created: Budget = { startedAt: now, leases: new Map(), tokens: 0, refilledAt: now, slot: Math.floor(now / SLOT_MS), hourly: new Array<number>(HOUR_SLOTS).fill(0), excess: 0 };
    this.budgets.set(name, created);
    return created;
  }

  private expire(budget: Budget, now: number): void {
    for (const [holder, lease] of budget.leases) if (lease.expiresAt <= now) budget.leases.delete(holder);
  }

  private messagesFor(budget: Budget, ask: LeaseAsk, limits: BudgetLimits, now: number): number | undefined {
    const { messagesPerSecond: perSecond, messagesPerHour: perHour } = limits;
    if (perSecond === undefined && perHour === undefined) return undefined;
    this.refund(budget, ask.unusedMessages, perSecond, now);
    let available = Infinity;
    if (perSecond !== undefined) {
      budget.tokens = Math.min(perSecond, budget.tokens + ((now - budget.refilledAt) * perSecond) / 1000);
      budget.refilledAt = now;
      available = Math.floor(budget.tokens);
    }
    if (perHour !== undefined) available = Math.min(available, perHour - this.hourCount(budget, now));
    const askers = [...budget.leases.values()].filter((l) => l.wantMessages > 0).length;
    const rate = Math.min(perSecond ?? Infinity, perHour ?? Infinity);
    const share = Math.ceil(rate / Math.max(1, askers));
    const messages = Math.max(0, Math.min(ask.wantMessages, available, share));
    if (perSecond !== undefined) budget.tokens -= messages;
    budget.hourly[0]! += messages;
    return messages;
  }

  /** Messages granted but not sent go back: into the bucket (up to its size) and out of the hour's count, newest grants first. */
  private refund(budget: Budget, unused: number, perSecond: number | undefined, now: number): void {
    if (unused <= 0) return;
    if (perSecond !== undefined) budget.tokens = Math.min(perSecond, budget.tokens + unused);
    this.hourCount(budget, now);
    let left = unused;
    for (let i = 0; i < budget.hourly.length && left > 0; i++) {
      const back = Math.min(left, budget.hourly[i]!);
      budget.hourly[i]! -= back;
      left -= back;
    }
  }

  private hourCount(budget: Budget, now: number): number {
    const current = Math.floor(now / SLOT_MS);
    const shift = Math.min(current - budget.slot, HOUR_SLOTS);
    for (let i = 0; i < shift; i++) {
      budget.hourly.pop();
      budget.hourly.unshift(0);
    }
    budget.slot = current;
    return budget.hourly.reduce((a, b) => a + b, 0);
  }
}
