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
// - New connections per minute are counted in a sliding window of one-second slots: at
//   most the limit in any minute (by this owner's knowledge), granted and given back like
//   messages.
// - An ask carries an id; the same ask again (the holder heard no answer) gets the grant
//   made for it, and nothing is counted again: a lost answer must not spend the hour's
//   messages on a grant that never arrived, nor refund twice what was given back.
import type { BudgetLimits, LeaseAsk, LeaseGrant } from "../../protocol/site-budget.ts";

interface Lease {
  connections: number;
  open: number;
  wantConnections: number;
  wantMessages: number;
  wantOpens: number;
  limits: BudgetLimits;
  expiresAt: number;
  /** The holder's last ask and what it was granted: the same ask again (its answer was lost) gets the same grant. */
  last?: { readonly askId: string; readonly grant: LeaseGrant };
}

/**
 * Counts in the last `slots × slotMs` milliseconds, by slot: what was granted in each,
 * newest first. Giving back takes from the newest slots first.
 */
class SlidingWindow {
  private readonly counts: number[];
  private slot: number;

  constructor(private readonly slotMs: number, slots: number, now: number) {
    this.counts = new Array<number>(slots).fill(0);
    this.slot = Math.floor(now / slotMs);
  }

  total(now: number): number {
    const current = Math.floor(now / this.slotMs);
    const shift = Math.min(current - this.slot, this.counts.length);
    for (let i = 0; i < shift; i++) {
      this.counts.pop();
      this.counts.unshift(0);
    }
    this.slot = current;
    return this.counts.reduce((a, b) => a + b, 0);
  }

  add(now: number, count: number): void {
    this.total(now);
    this.counts[0]! += count;
  }

  giveBack(now: number, count: number): void {
    this.total(now);
    let left = count;
    for (let i = 0; i < this.counts.length && left > 0; i++) {
      const back = Math.min(left, this.counts[i]!);
      this.counts[i]! -= back;
      left -= back;
    }
  }
}

/** An hour in one-minute slots (messages per hour); a minute in one-second slots (new connections per minute). */
const hourWindow = (now: number) => new SlidingWindow(60_000, 60, now);
const minuteWindow = (now: number) => new SlidingWindow(1_000, 60, now);

interface Budget {
  readonly startedAt: number;
  readonly leases: Map<string, Lease>;
  /** Tokens of the per-second bucket, and when it was last refilled. */
  tokens: number;
  refilledAt: number;
  /** Messages granted in the last hour. */
  readonly hour: SlidingWindow;
  /** New connections granted in the last minute. */
  readonly opens: SlidingWindow;
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
  const limits: { -readonly [K in keyof BudgetLimits]: BudgetLimits[K] } = {};
  for (const l of all) {
    for (const name of Object.keys(l) as Array<keyof BudgetLimits>) {
      const value = l[name];
      if (value === undefined) continue;
      const known = limits[name];
      limits[name] = known === undefined ? value : Math.min(known, value);
    }
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
    const known = budget.leases.get(ask.holder);
    // Granted already, and the answer lost: the same grant again, nothing counted twice (the
    // messages it gave back refunded twice, or its grant spent without reaching the holder).
    if (ask.askId !== undefined && known?.last?.askId === ask.askId) return { grant: known.last.grant, excess: budget.excess };
    const lease: Lease = known ?? { connections: ask.heldConnections, open: ask.openConnections, wantConnections: 0, wantMessages: 0, wantOpens: 0, limits: ask.limits, expiresAt: now };
    lease.open = ask.openConnections;
    lease.wantConnections = ask.wantConnections;
    lease.wantMessages = ask.wantMessages;
    lease.wantOpens = ask.wantOpens ?? 0;
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
    const opens = this.opensFor(budget, ask, limits, now);
    lease.expiresAt = now + this.ttlMs;
    const excess = limits.connections === undefined ? 0 : Math.max(0, [...budget.leases.values()].reduce((sum, l) => sum + Math.max(l.connections, l.open), 0) - limits.connections);
    budget.excess = excess;
    const grant: LeaseGrant = {
      ...(connections !== undefined ? { connections } : {}),
      ...(messages !== undefined ? { messages } : {}),
      ...(opens !== undefined ? { opens } : {}),
      ttlMs: this.ttlMs,
    };
    lease.last = ask.askId !== undefined ? { askId: ask.askId, grant } : undefined;
    return { grant, excess };
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
    const created: Budget = { startedAt: now, leases: new Map(), tokens: 0, refilledAt: now, hour: hourWindow(now), opens: minuteWindow(now), excess: 0 };
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
    if (perHour !== undefined) available = Math.min(available, perHour - budget.hour.total(now));
    const askers = [...budget.leases.values()].filter((l) => l.wantMessages > 0).length;
    const rate = Math.min(perSecond ?? Infinity, perHour ?? Infinity);
    const share = Math.ceil(rate / Math.max(1, askers));
    const messages = Math.max(0, Math.min(ask.wantMessages, available, share));
    if (perSecond !== undefined) budget.tokens -= messages;
    budget.hour.add(now, messages);
    return messages;
  }

  /** New connections: at most the limit in any minute, shared evenly among the holders that want to open some. */
  private opensFor(budget: Budget, ask: LeaseAsk, limits: BudgetLimits, now: number): number | undefined {
    const perMinute = limits.connectionsPerMinute;
    if (perMinute === undefined) return undefined;
    if ((ask.unusedOpens ?? 0) > 0) budget.opens.giveBack(now, ask.unusedOpens ?? 0);
    const available = Math.max(0, perMinute - budget.opens.total(now));
    const askers = [...budget.leases.values()].filter((l) => l.wantOpens > 0).length;
    const share = Math.ceil(perMinute / Math.max(1, askers));
    const opens = Math.min(ask.wantOpens ?? 0, available, share);
    budget.opens.add(now, opens);
    return opens;
  }

  /** Messages granted but not sent go back: into the bucket (up to its size) and out of the hour's count, newest grants first. */
  private refund(budget: Budget, unused: number, perSecond: number | undefined, now: number): void {
    if (unused <= 0) return;
    if (perSecond !== undefined) budget.tokens = Math.min(perSecond, budget.tokens + unused);
    budget.hour.giveBack(now, unused);
  }
}
