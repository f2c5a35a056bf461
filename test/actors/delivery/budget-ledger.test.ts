// The owner's bookkeeping of cluster-wide site budgets: fair shares, nothing granted that
// another holder still uses, warming after ownership moves, lapsed leases, message rates.
import { test } from "node:test";
import assert from "node:assert/strict";
import { BudgetLedger, fairShares, strictest } from "../../../actors/delivery/budget-ledger.ts";
import type { BudgetLimits, LeaseAsk } from "../../../protocol/site-budget.ts";

const TTL = 5_000;
const BUDGET = ".mx.example.com";
const six: BudgetLimits = { connections: 6 };

const ask = (holder: string, fields: Partial<LeaseAsk> = {}): LeaseAsk => ({
  budget: BUDGET,
  holder,
  limits: six,
  wantConnections: 6,
  heldConnections: 0,
  openConnections: 0,
  wantMessages: 0,
  unusedMessages: 0,
  ...fields,
});

/** A ledger whose budget was started `TTL` ago, past its warming. */
const warmLedger = () => new BudgetLedger(TTL);
const settled = { alone: true } as const;
const crowded = { alone: false } as const;

test("fair shares: small wants are met, the rest split evenly, never more than the total", () => {
  assert.deepEqual(fairShares([6, 6, 6], 6), [2, 2, 2]);
  assert.deepEqual(fairShares([1, 6, 6], 6), [1, 3, 2]);
  assert.deepEqual(fairShares([0, 6], 6), [0, 6]);
  assert.deepEqual(fairShares([10, 10, 10, 10], 6), [2, 2, 1, 1]);
  assert.deepEqual(fairShares([], 6), []);
});

test("the strictest limits apply where nodes are configured differently", () => {
  assert.deepEqual(strictest([{ connections: 6 }, { connections: 4, messagesPerHour: 100 }, { messagesPerSecond: 5 }]), { connections: 4, messagesPerSecond: 5, messagesPerHour: 100 });
  assert.deepEqual(strictest([]), {});
});

test("one holder gets the whole budget; a second gets only what the first gave back", () => {
  const ledger = warmLedger();
  assert.equal(ledger.grant(ask("a"), 0, settled).grant.connections, 6);
  // b wants its share, but a still holds 6: b gets nothing yet, and nothing is over the limit.
  const b1 = ledger.grant(ask("b"), 100, settled);
  assert.equal(b1.grant.connections, 0);
  assert.equal(b1.excess, 0);
  // a renews: its grant shrinks to its fair share, but it still reports 6 open.
  assert.equal(ledger.grant(ask("a", { heldConnections: 6, openConnections: 6 }), 1_000, settled).grant.connections, 3);
  assert.equal(ledger.grant(ask("b"), 1_100, settled).grant.connections, 0, "a's connections are not closed yet");
  // a reports them closed: b gets the other half.
  ledger.grant(ask("a", { heldConnections: 3, openConnections: 3 }), 2_000, settled);
  assert.equal(ledger.grant(ask("b"), 2_100, settled).grant.connections, 3);
  assert.equal(ledger.grant(ask("b"), 2_200, settled).grant.ttlMs, TTL);
});

test("a holder that stops renewing loses its lease after the lease time, and the others get its share", () => {
  const ledger = warmLedger();
  ledger.grant(ask("a"), 0, settled);
  ledger.grant(ask("b"), 0, settled);
  assert.equal(ledger.grant(ask("b"), TTL - 1, settled).grant.connections, 0, "a's lease still runs");
  assert.equal(ledger.grant(ask("b"), TTL, settled).grant.connections, 6, "a's lease lapsed");
});

test("a holder that wants less gets less, and gives back what it no longer wants", () => {
  const ledger = warmLedger();
  assert.equal(ledger.grant(ask("a", { wantConnections: 2 }), 0, settled).grant.connections, 2);
  assert.equal(ledger.grant(ask("b"), 0, settled).grant.connections, 4);
  assert.equal(ledger.grant(ask("a", { wantConnections: 0, heldConnections: 2 }), 1_000, settled).grant.connections, 0);
  assert.equal(ledger.grant(ask("b", { heldConnections: 4, openConnections: 4 }), 1_000, settled).grant.connections, 6);
});

test("an owner that just took a budget over grants nobody more than it held, for one lease time", () => {
  const ledger = new BudgetLedger(TTL);
  // The old owner died: a and b hold 3 each from it; c is new.
  assert.equal(ledger.grant(ask("a", { heldConnections: 3, openConnections: 3 }), 0, crowded).grant.connections, 3);
  assert.equal(ledger.grant(ask("c"), 10, crowded).grant.connections, 0, "nobody grows while warming");
  // b, unknown so far, still holds 3 from the old owner: nothing was over the limit, and
  // b's grant shrinks to its fair share of three wanting holders.
  const b = ledger.grant(ask("b", { heldConnections: 3, openConnections: 3 }), 20, crowded);
  assert.equal(b.grant.connections, 2);
  assert.equal(b.excess, 0);
  // After the warming, shares even out as holders renew.
  assert.equal(ledger.grant(ask("a", { heldConnections: 3, openConnections: 3 }), TTL, crowded).grant.connections, 2);
  assert.equal(ledger.grant(ask("b", { heldConnections: 3, openConnections: 3 }), TTL, crowded).grant.connections, 2);
  assert.equal(ledger.grant(ask("c"), TTL, crowded).grant.connections, 0, "a and b have not closed theirs yet");
  ledger.grant(ask("a", { heldConnections: 2, openConnections: 2 }), TTL + 500, crowded);
  ledger.grant(ask("b", { heldConnections: 2, openConnections: 2 }), TTL + 500, crowded);
  assert.equal(ledger.grant(ask("c"), TTL + 600, crowded).grant.connections, 2);
});

test("connections open beyond the limit are reported as excess", () => {
  const ledger = new BudgetLedger(TTL);
  ledger.grant(ask("a", { heldConnections: 4, openConnections: 4 }), 0, crowded);
  // b was granted 4 by an owner whose view of the members differed: 8 open for a limit of 6.
  const b = ledger.grant(ask("b", { heldConnections: 4, openConnections: 4 }), 10, crowded);
  assert.equal(b.excess, 2);
});

test("messages per second: a bucket that refills at the rate, shared among the holders that ask", () => {
  const ledger = warmLedger();
  const perSecond: BudgetLimits = { messagesPerSecond: 10 };
  const messages = (holder: string, at: number, want = 100) => ledger.grant(ask(holder, { limits: perSecond, wantConnections: 0, wantMessages: want }), at, settled).grant.messages;
  // Alone from the start, the bucket holds one second's worth (the burst).
  assert.equal(messages("a", 0), 10);
  assert.equal(messages("a", 100), 1);
  assert.equal(messages("a", 1_100), 10);
  // Two askers split the rate.
  assert.equal(messages("b", 2_100), 5);
  assert.equal(messages("a", 2_100), 5);
  assert.equal(messages("a", 2_200, 0), 0, "nothing asked, nothing granted");
  assert.equal(ledger.grant(ask("a", { limits: perSecond, wantConnections: 0 }), 2_300, settled).grant.connections, undefined, "no connection limit");
});

test("messages per hour: a sliding window of the hour's grants", () => {
  const ledger = warmLedger();
  const perHour: BudgetLimits = { messagesPerHour: 100 };
  const messages = (at: number, want = 60) => ledger.grant(ask("a", { limits: perHour, wantConnections: 0, wantMessages: want }), at, settled).grant.messages;
  assert.equal(messages(0), 60);
  assert.equal(messages(60_000), 40);
  assert.equal(messages(30 * 60_000), 0, "the hour's 100 are spent");
  assert.equal(messages(60 * 60_000 + 1), 60, "the first minute's grants left the window");
});

test("messages a holder did not send come back to the hour's budget and the bucket", () => {
  const ledger = warmLedger();
  const perHour: BudgetLimits = { messagesPerHour: 100 };
  const messages = (at: number, want: number, unused = 0) =>
    ledger.grant(ask("a", { limits: perHour, wantConnections: 0, wantMessages: want, unusedMessages: unused }), at, settled).grant.messages;
  assert.equal(messages(0, 100), 100);
  assert.equal(messages(1_000, 100), 0, "all granted");
  // 90 of them were never sent (the site was slow): they are the hour's again.
  assert.equal(messages(2_000, 100, 90), 90);
  const perSecond: BudgetLimits = { messagesPerSecond: 10 };
  const fast = (at: number, want: number, unused = 0) =>
    ledger.grant(ask("b", { budget: "other", limits: perSecond, wantConnections: 0, wantMessages: want, unusedMessages: unused }), at, settled).grant.messages;
  assert.equal(fast(0, 10), 10);
  assert.equal(fast(10, 10, 8), 8, "the unsent 8 went back into the bucket");
});

test("an ask sent again with its id (its answer was lost) gets the same grant, and nothing is counted twice", () => {
  const ledger = warmLedger();
  const perHour: BudgetLimits = { messagesPerHour: 100 };
  const messages = (holder: string, askId: string, want: number, unused = 0) =>
    ledger.grant(ask(holder, { askId, limits: perHour, wantConnections: 0, wantMessages: want, unusedMessages: unused }), 1_000, settled).grant.messages;
  assert.equal(messages("a", "a-1", 60), 60);
  assert.equal(messages("a", "a-1", 60), 60, "the same grant, not what is left of the hour");
  // The 60 were never used: given back with the next ask, the whole hour is there again.
  assert.equal(messages("a", "a-2", 100, 60), 100);
  assert.equal(messages("a", "a-2", 100, 60), 100);
  assert.equal(messages("b", "b-1", 100), 0, "what a-2 gave back was refunded once");
});

test("new connections per minute: at most the limit in any minute, shared among the holders that want to open some", () => {
  // Leases longer than the minute, so both holders stay known while the window moves on.
  const ledger = new BudgetLedger(120_000);
  const limits: BudgetLimits = { connectionsPerMinute: 6 };
  const opens = (holder: string, now: number, fields: Partial<LeaseAsk> = {}) =>
    ledger.grant(ask(holder, { limits, wantConnections: 0, wantOpens: 10, ...fields }), now, settled).grant.opens;
  assert.equal(opens("a", 0), 6, "alone, a holder may open the minute's whole allowance");
  assert.equal(opens("a", 1_000), 0, "nothing left this minute");
  assert.equal(opens("b", 30_000), 0, "nor for another holder");
  assert.equal(opens("a", 61_000), 3, "a minute later the allowance is back, half each for two holders that want some");
  assert.equal(opens("b", 61_100), 3);
  assert.equal(opens("a", 62_000, { unusedOpens: 2 }), 2, "what a holder did not open comes back");
  assert.equal(ledger.grant(ask("c", { limits: { connections: 6 } }), 62_100, settled).grant.opens, 0, "the strictest limits of the holders apply");
});

test("limits without a cluster-wide count (messages per connection) grant nothing to count", () => {
  const ledger = warmLedger();
  const { grant } = ledger.grant(ask("a", { limits: { messagesPerConnection: 10 } }), 0, settled);
  assert.deepEqual(grant, { ttlMs: TTL });
  assert.deepEqual(strictest([{ messagesPerConnection: 10, connectionsPerMinute: 5 }, { messagesPerConnection: 4 }]), { messagesPerConnection: 4, connectionsPerMinute: 5 });
});
