// The holder's side of a cluster-wide site budget: this node's lease on one budget.
//
// The lease says how many connections this node may keep open to the budget's sites and
// how many messages it may send before the lease ends. It is asked for (and renewed)
// while this node has mail for those sites or connections open to them; a lease that was
// not renewed in time lapses here first: no new connection, no message, idle connections
// closed at once and busy ones as soon as their message is done. When the grant shrinks
// (another node needs its share) the same happens down to the new grant.
//
// A connection needs a permit of this lease and one of the node's own budget; both go
// back when its socket ends (`narrow`). With `connectionsPerMinute`, opening one also
// takes one of the new connections the lease allows (it does not come back).
import { randomBytes } from "node:crypto";
import { Clock, Effect, Schedule, type Scope } from "effect";
import type { BudgetLimits, LeaseAsk, LeaseGrant } from "../../protocol/site-budget.ts";
import type { ConnectionBudget, Release } from "./connections.ts";

export interface LeaseOptions {
  readonly budget: string;
  readonly holder: string;
  readonly limits: BudgetLimits;
  /** Asks the budget's owner (this node or another) for a lease. */
  readonly ask: (ask: LeaseAsk) => Effect.Effect<LeaseGrant, { readonly _tag: string }>;
  /** A lease is renewed this often while in use (a fraction of the owner's lease time). */
  readonly renewMs: number;
  /** Told when asking starts or stops failing, and when the grant changes. */
  readonly report?: (event: LeaseReport) => void;
}

export type LeaseReport =
  | { readonly _tag: "Granted"; readonly connections: number | undefined; readonly messages: number | undefined; readonly opens: number | undefined }
  | { readonly _tag: "AskFailed"; readonly reason: string }
  | { readonly _tag: "Lapsed" };

export interface LeaseState {
  readonly budget: string;
  /** Connections the lease allows now; undefined when the budget limits none. */
  readonly granted: number | undefined;
  readonly open: number;
  /** Messages left to send under this lease; undefined when the budget limits no rate. */
  readonly messages: number | undefined;
  /** New connections left to open under this lease; undefined when the budget limits none. */
  readonly opens: number | undefined;
  readonly waitingConnections: number;
  readonly waitingMessages: number;
}

export interface SiteLease {
  readonly budget: string;
  /** The limits this node's configuration gives the budget. */
  readonly limits: BudgetLimits;
  /** The node's connection budget narrowed by this lease: a connection needs a permit of each. */
  readonly narrow: (node: ConnectionBudget) => ConnectionBudget;
  /** Waits until the lease allows one more message (interruptible: a job past its deadline gives up). */
  readonly takeMessage: Effect.Effect<void>;
  /**
   * A site using this budget reports its backlog (`demand`) and how many connections it
   * could use (`cap`); the returned function detaches it.
   */
  readonly attach: (demand: () => number, cap: number) => () => void;
  readonly state: () => LeaseState;
}

/** Asks no more often than this when something waits for what the lease does not allow. */
const STARVED_ASK_GAP_DIVISOR = 5;
/** A node asks for at most this many messages in one lease (the owner's share caps it anyway). */
const MAX_MESSAGES_ASKED = 100_000;

export const makeSiteLease = (options: LeaseOptions): Effect.Effect<SiteLease, never, Scope.Scope> =>
  Effect.gen(function* () {
    const clock = yield* Clock.Clock;
    const limitsConnections = options.limits.connections !== undefined;
    const limitsMessages = options.limits.messagesPerSecond !== undefined || options.limits.messagesPerHour !== undefined;
    let granted: number | undefined = limitsConnections ? 0 : undefined;
    let messages: number | undefined = limitsMessages ? 0 : undefined;
    const limitsOpens = options.limits.connectionsPerMinute !== undefined;
    let opens: number | undefined = limitsOpens ? 0 : undefined;
    let expiresAt = 0;
    let open = 0;
    const connectionWaiters: Array<() => void> = [];
    const messageWaiters: Array<() => void> = [];
    // Insertion order is idle order: the first has been idle the longest.
    const idle = new Map<symbol, () => void>();
    const sites = new Set<{ readonly demand: () => number; readonly cap: number }>();
    let lastAskAt = 0;
    let failing = false;
    // Ask ids: unique to this lease in this process, so a restarted node's first ask is never
    // taken for one the owner answered before the restart.
    const askIdPrefix = randomBytes(6).toString("hex");
    let asksMade = 0;
    // An ask whose answer did not come (lost, late, the owner unreachable). The owner may have
    // granted it and counted what it granted and what it took back; it is sent again as it was
    // until answered, so the owner answers with that grant instead of counting it again. Only
    // within the last grant's lease time: past it, the owner has forgotten the lease, and a
    // fresh ask counts what the lost one gave back as sent (never more than the limit).
    let unanswered: { readonly ask: LeaseAsk; readonly sentAt: number } | undefined;
    let leaseTtlMs: number | undefined;

    const overGrant = () => granted !== undefined && open > granted;
    /** Whether one more connection may be opened now: a free slot of the grant and, if limited, a new connection left. */
    const mayOpen = () => (granted === undefined || open < granted) && (opens === undefined || opens > 0);
    const takeOpen = () => {
      open++;
      if (opens !== undefined) opens--;
    };

    /** Hands out what the lease allows now: connection permits, then messages. */
    const pump = () => {
      while (connectionWaiters.length > 0 && mayOpen()) {
        takeOpen();
        connectionWaiters.shift()!();
      }
      while (messageWaiters.length > 0 && (messages === undefined || messages > 0)) {
        if (messages !== undefined) messages--;
        messageWaiters.shift()!();
      }
    };

    /** Closes idle connections, longest idle first, while more are open than granted. */
    const shrink = () => {
      for (const [token, close] of idle) {
        if (!overGrant()) break;
        idle.delete(token);
        close(); // its permit comes back when the socket ends
      }
    };

    const permit = (): Release => {
      let released = false;
      return (unused) => {
        if (released) return;
        released = true;
        open--;
        // Not opened after all: the new connection it took is still this lease's to open.
        if (unused && opens !== undefined) opens++;
        pump();
      };
    };

    const acquire = (): Promise<Release> => {
      if (connectionWaiters.length === 0 && mayOpen()) {
        takeOpen();
        return Promise.resolve(permit());
      }
      return new Promise((resolve) => connectionWaiters.push(() => resolve(permit())));
    };

    /**
     * Offers a connection that just became idle: kept for reuse (the returned function
     * withdraws the offer), or closed at once, synchronously, when the grant shrank while it
     * was busy (undefined is returned). Closing later could catch it busy with the next job.
     */
    const offerIdle = (close: () => void): (() => void) | undefined => {
      if (overGrant()) {
        close();
        return undefined;
      }
      const token = Symbol("idle");
      idle.set(token, close);
      return () => void idle.delete(token);
    };

    const demand = () => {
      let connections = 0;
      let backlog = 0;
      for (const site of sites) {
        const load = site.demand();
        backlog += load;
        connections += Math.min(load, site.cap);
      }
      return { connections, backlog };
    };

    const lapse = () => {
      if (granted !== undefined) granted = 0;
      if (messages !== undefined) messages = 0;
      if (opens !== undefined) opens = 0;
      lastGrant = undefined;
      options.report?.({ _tag: "Lapsed" });
      shrink();
    };

    // What the last grant said: reported again only when a grant says something else (what
    // is left of messages and new connections is given back with every ask, so comparing
    // with the current counts would report every renewal).
    let lastGrant: LeaseGrant | undefined;
    const apply = (grant: LeaseGrant, sentAt: number) => {
      const changed = grant.connections !== lastGrant?.connections || grant.messages !== lastGrant?.messages || grant.opens !== lastGrant?.opens;
      lastGrant = grant;
      if (limitsConnections) granted = grant.connections ?? 0;
      if (limitsMessages) messages = grant.messages ?? 0;
      if (limitsOpens) opens = grant.opens ?? 0;
      expiresAt = sentAt + grant.ttlMs;
      leaseTtlMs = grant.ttlMs;
      if (changed) options.report?.({ _tag: "Granted", connections: granted, messages, opens });
      shrink();
      pump();
    };

    /** A new ask: what this node wants now, and what is left of the last grant given back. */
    const newAsk = (now: number): LeaseAsk => {
      const wanted = demand();
      // What is left of the last grant goes back with this ask: it is not used meanwhile.
      const unusedMessages = messages ?? 0;
      if (messages !== undefined) messages = 0;
      const unusedOpens = opens ?? 0;
      if (opens !== undefined) opens = 0;
      return {
        budget: options.budget,
        holder: options.holder,
        askId: `${askIdPrefix}-${(asksMade++).toString(36)}`,
        limits: options.limits,
        wantConnections: limitsConnections ? Math.max(wanted.connections, connectionWaiters.length) : 0,
        heldConnections: now < expiresAt ? (granted ?? 0) : 0,
        openConnections: open,
        wantMessages: limitsMessages ? Math.min(MAX_MESSAGES_ASKED, Math.max(wanted.backlog, messageWaiters.length)) : 0,
        unusedMessages,
        ...(limitsOpens ? { wantOpens: Math.max(connectionWaiters.length, wanted.connections - open), unusedOpens } : {}),
      };
    };

    const askOwner = Effect.gen(function* () {
      const now = clock.currentTimeMillisUnsafe();
      lastAskAt = now;
      if (unanswered !== undefined && leaseTtlMs !== undefined && now >= unanswered.sentAt + leaseTtlMs) unanswered = undefined;
      // Sent again, the ask keeps its time: a grant for it runs from when it was first sent.
      const { ask, sentAt } = unanswered ?? { ask: newAsk(now), sentAt: now };
      unanswered = { ask, sentAt };
      yield* options.ask(ask).pipe(
        Effect.tap((grant) =>
          Effect.sync(() => {
            failing = false;
            unanswered = undefined;
            // Renewed on time for the grant's lease, which runs from when the ask was first sent.
            lastAskAt = sentAt;
            apply(grant, sentAt);
          })),
        Effect.catch((error) =>
          Effect.sync(() => {
            if (!failing) options.report?.({ _tag: "AskFailed", reason: error._tag });
            failing = true;
          })),
      );
    });

    const starved = () =>
      (connectionWaiters.length > 0 && !mayOpen()) || (messageWaiters.length > 0 && messages === 0);
    const holding = () => open > 0 || (granted ?? 0) > 0 || (messages ?? 0) > 0 || (opens ?? 0) > 0;

    const tick: Effect.Effect<void> = Effect.suspend(() => {
      const now = clock.currentTimeMillisUnsafe();
      if (expiresAt > 0 && now >= expiresAt && holding()) {
        expiresAt = 0;
        lapse();
      }
      // A budget of per-connection limits only is kept by each connection: nothing to ask for.
      if (!limitsConnections && !limitsMessages && !limitsOpens) return Effect.void;
      const wanted = demand();
      const inUse = wanted.backlog > 0 || connectionWaiters.length > 0 || messageWaiters.length > 0 || holding();
      if (!inUse) return Effect.void;
      const since = now - lastAskAt;
      if (since >= options.renewMs || (starved() && since >= options.renewMs / STARVED_ASK_GAP_DIVISOR)) return askOwner;
      return Effect.void;
    });
    // A defect in one ask (a bug) must not end the renewals: the lease would lapse for good.
    const guardedTick = tick.pipe(Effect.catchDefect((defect) => Effect.sync(() => options.report?.({ _tag: "AskFailed", reason: `defect: ${String(defect)}` }))));
    yield* Effect.forkScoped(Effect.repeat(guardedTick, Schedule.spaced(Math.max(10, Math.floor(options.renewMs / STARVED_ASK_GAP_DIVISOR)))));

    const takeMessage: Effect.Effect<void> = Effect.suspend(() => {
      if (messages === undefined) return Effect.void;
      if (messageWaiters.length === 0 && messages > 0) {
        messages--;
        return Effect.void;
      }
      return Effect.callback<void>((resume) => {
        const waiter = () => resume(Effect.void);
        messageWaiters.push(waiter);
        return Effect.sync(() => {
          const index = messageWaiters.indexOf(waiter);
          if (index >= 0) messageWaiters.splice(index, 1);
        });
      });
    });

    return {
      budget: options.budget,
      limits: options.limits,
      narrow: (node) => ({
        acquire: async () => {
          const mine = await acquire();
          const theirs = await node.acquire();
          return (unused) => {
            theirs(unused);
            mine(unused);
          };
        },
        idle: (close) => {
          const withdrawMine = offerIdle(close);
          if (!withdrawMine) return () => undefined;
          const withdrawNode = node.idle(close);
          return () => {
            withdrawNode();
            withdrawMine();
          };
        },
        open: node.open,
        waiting: node.waiting,
      }),
      takeMessage,
      attach: (demandOf, cap) => {
        const site = { demand: demandOf, cap };
        sites.add(site);
        return () => void sites.delete(site);
      },
      state: () => ({
        budget: options.budget,
        granted,
        open,
        messages,
        opens,
        waitingConnections: connectionWaiters.length,
        waitingMessages: messageWaiters.length,
      }),
    } satisfies SiteLease;
  });
