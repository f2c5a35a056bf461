// Delivery actors, one per site per node. A site is the set of MX hosts a domain
// resolves to, so domains sharing MX hosts share one actor, its ready queue (the actor's
// mailbox) and its connection limit: the actor has as many workers as the site may have
// connections, and each worker keeps at most one connection, reused for the next message.
//
// A worker's connection and its idle timer belong to the worker's incarnation (its Scope):
// when the handler crashes, or the site stops, the scope closes and the connection with it.
// A site whose actor escalated refuses jobs at once (they defer) until it is rebuilt.
//
// Automatic back-off (./throttle.ts, ./site-throttle.ts): a site a throttling reply slowed
// may use fewer connections than it has workers, and leaves a gap between messages. Its
// workers then share the site's slots as lanes: a worker takes a free slot (one with an open
// connection first) while fewer than the allowed number are busy, so the connections still
// in use are reused and the others close when idle. A paused site sends nothing: its jobs
// come back at once, deferred with a BackedOff result. A site at normal takes none of this
// path: each worker sends over its own slot, as before.
//
// A reputation threshold (./reputation.ts) may hold a source address: every site of that
// address then runs at least at the threshold's back-off level, or, paused, defers its jobs
// unsent with a ReputationHold result, whatever the site's own state.
import { Clock, Deferred, Effect, Exit, Fiber, Schedule, Scope } from "effect";
import type { RecipientResult } from "../../protocol/delivery.ts";
import type { MailRoute } from "../../protocol/route.ts";
import { matchesDomain } from "../common/domains.ts";
import { spawnActor, type ActorRef, type RestartPolicy } from "../runtime/actor.ts";
import type { Supervisor } from "../runtime/supervisor.ts";
import { everyone, type Attempt } from "./attempt.ts";
import type { ConnectionBudget, Release } from "./connections.ts";
import type { SiteLease } from "./site-lease.ts";
import type { SourceAddress } from "./pools.ts";
import { DEFAULT_SOURCE, NO_HOLDS, sourceKeyOf, sourcePaused, type ReputationHolds } from "./reputation-holds.ts";
import { makeThrottles, type Holder, type ThrottleOptions, type ThrottleView } from "./site-throttle.ts";
import { connectionsAt, gapAt, isNormal, isPaused, type ThrottleChange, type ThrottlePolicy } from "./throttle.ts";
import { asTlsFailure, openConnection, sendOver, type Connection, type OpenFailure, type OutboundJob, type OutboundOptions, type TlsPolicy } from "./smtp-client.ts";

export interface DeliveryJob extends OutboundJob {
  readonly route: MailRoute;
  readonly tls: TlsPolicy;
  /** The IP pool address to leave from (its EHLO name with it); the system's default address when absent. */
  readonly source?: SourceAddress | undefined;
}

export interface SiteOptions extends OutboundOptions {
  /** Connections per site per node unless `siteConnections` says otherwise. */
  readonly connectionsPerSite: number;
  /** MX host name (or ".suffix" of host names) → connections for sites with such a host. */
  readonly siteConnections: Readonly<Record<string, number>>;
  /** An unused connection is closed after this long. */
  readonly idleMs: number;
  /** A job that waited this long in the site's queue is deferred without being sent (the site is too slow for its backlog). */
  readonly maxQueueWaitMs: number;
  /** How long in-flight deliveries may take to finish when the Sites scope closes (default 10 s). */
  readonly stopGraceMs?: number;
  /** Restarts and rebuilds of each site's actor (default: the runtime's defaultRestartPolicy). */
  readonly restart?: RestartPolicy;
  /** Automatic back-off on throttling replies; none when absent. */
  readonly throttle?: ThrottleOptions | undefined;
  /** Source addresses reputation thresholds hold; none when absent. */
  readonly holds?: ReputationHolds | undefined;
}

export interface SiteInfo {
  readonly site: string;
  readonly connections: number;
  readonly queued: number;
}

export interface Sites {
  /** Sends through the site's actor; trouble reaching the actor defers every recipient. */
  readonly deliver: (job: DeliveryJob) => Effect.Effect<Attempt>;
  readonly list: () => ReadonlyArray<SiteInfo>;
  /** Sites backed off now (slowed or paused), per source address. */
  readonly throttled: () => ReadonlyArray<ThrottleView>;
  /**
   * Stops every site: new jobs are deferred, in-flight ones may finish for `graceMs`, then
   * every connection is closed. Runs once; the Sites scope's finalizer calls it with `stopGraceMs`.
   */
  readonly stop: (graceMs: number) => Effect.Effect<void>;
}

/** Without throttle options: no reply is a throttling one. */
const NO_THROTTLE: ThrottleOptions = { match: () => undefined, policy: { recoveryMs: 600_000, gapMs: 1_000 } };

/** An ask outlives any single job (each SMTP step has its own timeout); this only guards against a stuck handler. */
const ASK_TIMEOUT_MS = 2 * 3_600_000;
/** Site actors without work for this long are stopped; the next job for the site starts a new one. */
const SITE_IDLE_MS = 5 * 60_000;
const SWEEP_EVERY_MS = 60_000;
const DEFAULT_STOP_GRACE_MS = 10_000;

const siteKey = (route: MailRoute): string =>
  route.hosts.map((host) => host.name.toLowerCase()).sort().join(",") || route.domain;

/** One actor per site and source address: a connection is bound to its source, and limits count per source. */
const actorKey = (job: DeliveryJob): string => (job.source ? `${siteKey(job.route)}@${job.source.address}` : siteKey(job.route));

/** The outbound options of connections from `source`: bound to its address, greeting with its name. */
const optionsFrom = (options: SiteOptions, source: SourceAddress | undefined): SiteOptions =>
  source ? { ...options, heloName: source.ehlo, localAddress: source.address } : options;

/** A budget's `messagesPerConnection` lowers the node's own for the budget's sites. */
const withBudgetOptions = (options: SiteOptions, lease: SiteLease | undefined): SiteOptions => {
  const perConnection = lease?.limits.messagesPerConnection;
  return perConnection === undefined || perConnection >= options.messagesPerConnection ? options : { ...options, messagesPerConnection: perConnection };
};

const connectionLimit = (route: MailRoute, options: Pick<SiteOptions, "connectionsPerSite" | "siteConnections">): number => {
  for (const [pattern, limit] of Object.entries(options.siteConnections)) {
    if (route.hosts.some((host) => matchesDomain(pattern, host.name))) return limit;
  }
  return options.connectionsPerSite;
};

interface Queued {
  readonly job: DeliveryJob;
  readonly deadline: number;
}

/** The cluster-wide budget of the route's sites for mail from `source` (a pool address, or undefined for the node's own), if one applies (nodes/services/site-budgets.ts). */
export type LeaseFor = (route: MailRoute, source: string | undefined) => SiteLease | undefined;

interface Site {
  readonly actor: ActorRef<Queued, Attempt, never>;
  /** Stops reporting this site's backlog to its budget's lease. */
  readonly detach: () => void;
  /** The slots of the incarnations alive now. */
  readonly slots: Set<Slot>;
  /** The site's back-off, and what the actor does when it changes. */
  readonly holder: Holder;
  readonly throttleChanged: (change: ThrottleChange) => void;
  /** The key of the source address it sends from (reputation holds). */
  readonly sourceKey: string;
  lastUsed: number;
}

/**
 * The site actors of this node. Scoped: the idle sweep is a fiber of the scope, and closing
 * the scope stops every site (in-flight deliveries get `stopGraceMs` to finish).
 */
export const makeSites = (options: SiteOptions, budget: ConnectionBudget, supervisor: Supervisor, leaseFor: LeaseFor = () => undefined): Effect.Effect<Sites, never, Scope.Scope> =>
  Effect.gen(function* () {
    // Read synchronously on the per-message path (last use, queue deadline).
    const clock = yield* Clock.Clock;
    const throttleOptions = options.throttle ?? NO_THROTTLE;
    const throttlePolicy = throttleOptions.policy;
    const throttles = yield* makeThrottles(throttleOptions);
    const holds = options.holds ?? NO_HOLDS;
    const sites = new Map<string, Site>();
    let stopped: Deferred.Deferred<void> | undefined;

    const spawnSite = (key: string, { route, source }: DeliveryJob) =>
      Effect.gen(function* () {
        const slots = new Set<Slot>();
        const idleListeners = new Set<() => void>();
        const siblings: Siblings = {
          slots: () => slots,
          onIdle: (listener) => {
            idleListeners.add(listener);
            return () => void idleListeners.delete(listener);
          },
          idled: () => {
            for (const listener of [...idleListeners]) listener();
          },
        };
        const lease = leaseFor(route, source?.address);
        const siteOptions = withBudgetOptions(optionsFrom(options, source), lease);
        const concurrency = connectionLimit(route, options);
        const holder = throttles.holderFor(key, siteKey(route), source?.address, concurrency);
        const sourceHold = () => holds.source(source?.address);
        // The site's own back-off, or its source address's reputation hold when that is slower.
        const level = () => Math.max(holder.state.level, sourceHold()?.level ?? 0);
        const lanes = makeLanes(slots, () => connectionsAt(level(), concurrency), clock);
        // Set once this actor is the key's (spawnAndRegister): a slower site closes its idle
        // connections now, not after idleMs, and workers waiting for a lane look again.
        const throttleChanged = (change: ThrottleChange) => {
          if (change === "slowed" || change === "paused") for (const slot of slots) slot.dropIdle();
          lanes.wakeAll();
        };
        const from = source ? { source: source.address } : {};
        const waitedTooLong = (queued: Queued): Attempt => ({ server: key, ...from, results: everyone(queued.job.recipients, { _tag: "QueueWaitExceeded", limitMs: options.maxQueueWaitMs }) });
        /** Not sent: the site is paused for this source address, or the source address is paused. */
        const heldAt = (queued: Queued, now: number): Attempt | undefined => {
          if (isPaused(holder.state, now)) return { server: key, ...from, results: everyone(queued.job.recipients, backedOff(holder)) };
          const hold = sourceHold();
          if (hold !== undefined && hold.pausedUntil > now) return { server: key, ...from, results: everyone(queued.job.recipients, sourcePaused(source?.address, hold)) };
          return undefined;
        };
        const throttled = throttledSender(lanes, clock, throttlePolicy, () => throttles.catchUp(holder), { waitedTooLong, heldAt, level });
        const actor = yield* spawnActor<Queued, Attempt, never>(
          {
            name: `delivery/${key}`,
            capacity: 100_000,
            concurrency,
            ...(options.restart ? { restart: options.restart } : {}),
            init: Effect.gen(function* () {
              const slot = yield* makeSlot(siteOptions, lease ? lease.narrow(budget) : budget, siblings, (attempt, startedAt) => {
                if (attempt) throttles.observe(holder, attempt, startedAt);
                lanes.freed();
              });
              slots.add(slot);
              yield* Effect.addFinalizer(() =>
                Effect.sync(() => {
                  slots.delete(slot);
                  lanes.freed();
                }),
              );
              const sendVia = lease ? withMessageOfLease(lease, waitedTooLong) : (via: Slot, queued: Queued) => via.send(queued.job);
              const backedOffSend = throttled(slot, sendVia);
              return (queued: Queued) =>
                Effect.flatMap(Clock.currentTimeMillis, (now) => {
                  if (now > queued.deadline) return Effect.succeed(waitedTooLong(queued));
                  // The site at normal, its source not held, and this worker's own slot free (not lent to another worker): send over it.
                  if (isNormal(holder.state) && !slot.busy && sourceHold() === undefined) {
                    slot.busy = true;
                    return sendVia(slot, queued);
                  }
                  return backedOffSend(queued, now);
                });
            }),
          },
          supervisor,
        );
        const detach = lease ? lease.attach(() => actor.load(), concurrency) : () => undefined;
        return { actor, detach, slots, holder, throttleChanged, sourceKey: sourceKeyOf(source?.address), lastUsed: yield* Clock.currentTimeMillis } satisfies Site;
      });

    const siteFor = (job: DeliveryJob) =>
      Effect.suspend(() => {
        const key = actorKey(job);
        const existing = sites.get(key);
        return existing ? Effect.succeed(existing) : spawnAndRegister(key, job);
      });

    const spawnAndRegister = (key: string, job: DeliveryJob) =>
      Effect.gen(function* () {
        const created = yield* spawnSite(key, job);
        const raced = sites.get(key);
        if (raced) {
          created.detach();
          yield* created.actor.stop(0);
          return raced;
        }
        sites.set(key, created);
        created.holder.onChange = created.throttleChanged;
        return created;
      });

    const stopSite = (key: string, site: Site, graceMs: number) =>
      Effect.suspend(() => {
        if (sites.get(key) === site) {
          sites.delete(key);
          throttles.release(key);
        }
        site.detach();
        return site.actor.stop(graceMs);
      });

    const sweepIdle = Effect.gen(function* () {
      const now = yield* Clock.currentTimeMillis;
      for (const [key, site] of [...sites]) {
        if (site.actor.load() === 0 && now - site.lastUsed > SITE_IDLE_MS) yield* stopSite(key, site, 0);
      }
    });
    const sweeper = yield* Effect.forkScoped(Effect.repeat(sweepIdle, Schedule.spaced(SWEEP_EVERY_MS)));

    // A source address held, slowed further or let go: its sites close idle connections
    // they may no longer use, and workers waiting for a lane look again.
    const unsubscribe = holds.onSourceChange((sourceKey) => {
      const hold = holds.source(sourceKey === DEFAULT_SOURCE ? undefined : sourceKey);
      for (const site of sites.values()) {
        if (site.sourceKey === sourceKey) site.throttleChanged(hold === undefined ? "recovered" : hold.pausedUntil > 0 ? "paused" : "slowed");
      }
    });
    yield* Effect.addFinalizer(() => Effect.sync(unsubscribe));

    const deferAll = (job: DeliveryJob, detail: string): Attempt => ({ server: siteKey(job.route), results: everyone(job.recipients, { _tag: "Internal", detail }) });

    const ask = (job: DeliveryJob) =>
      Effect.flatMap(siteFor(job), (site) => {
        const now = clock.currentTimeMillisUnsafe();
        site.lastUsed = now;
        return site.actor.ask({ job, deadline: now + options.maxQueueWaitMs }, ASK_TIMEOUT_MS);
      });

    const stop = (graceMs: number) =>
      Effect.suspend(() => {
        if (stopped) return Deferred.await(stopped);
        const done = (stopped = Deferred.makeUnsafe<void>());
        return Fiber.interrupt(sweeper).pipe(
          Effect.andThen(Effect.forEach([...sites.entries()], ([key, site]) => stopSite(key, site, graceMs), { discard: true, concurrency: "unbounded" })),
          Effect.ensuring(Deferred.succeed(done, undefined)),
        );
      });
    yield* Effect.addFinalizer(() => stop(options.stopGraceMs ?? DEFAULT_STOP_GRACE_MS));

    return {
      deliver: (job) =>
        Effect.suspend(() => {
          if (stopped) return Effect.succeed(deferAll(job, "delivery is stopping"));
          return ask(job).pipe(
            // A site actor stopped by the idle sweep between lookup and ask: a new one takes the
            // job. Not once Sites is stopping: a new actor then would outlive the stop.
            Effect.catchTag("ActorStopped", (error) => (stopped ? Effect.fail(error) : ask(job))),
            Effect.catch((error) => Effect.succeed(deferAll(job, `delivery actor: ${error._tag}`))),
          );
        }),
      list: () => [...sites.entries()].map(([site, s]) => ({ site, connections: [...s.slots].filter((slot) => slot.connected()).length, queued: s.actor.load() })),
      throttled: throttles.list,
      stop,
    } satisfies Sites;
  });

/**
 * Sends over `slot` once the site's cluster-wide budget allows one more message; a job that
 * waits for that past its deadline is deferred unsent (and the slot let go), like one that
 * waited in the queue too long.
 */
const withMessageOfLease = (lease: SiteLease, waitedTooLong: (queued: Queued) => Attempt) => (slot: Slot, queued: Queued) =>
  Effect.flatMap(Clock.currentTimeMillis, (now) =>
    lease.takeMessage.pipe(
      Effect.timeoutOption(Math.max(0, queued.deadline - now)),
      Effect.flatMap((taken) => {
        if (taken._tag === "Some") return slot.send(queued.job);
        slot.release();
        return Effect.succeed(waitedTooLong(queued));
      }),
    ));

// ---- back-off: lanes, pace, pause ----

/** The result of every recipient of a paused site: not attempted, with the reply that paused it. */
const backedOff = (holder: Holder): RecipientResult => {
  const { cause, pausedUntil } = holder.state;
  return { _tag: "BackedOff", rule: cause?.rule ?? "", until: pausedUntil, reply: cause?.reply ?? { _tag: "Reply", code: 421, text: "paused" } };
};

/** The site's slots shared by its workers while it is backed off. */
interface Lanes {
  /** A free slot, reserved (busy) for the caller, once fewer than the allowed number are busy; undefined at the deadline. */
  readonly take: (own: Slot, deadline: number) => Effect.Effect<Slot | undefined>;
  /** Lets go of a slot taken but not sent over. */
  readonly give: (lane: Slot) => void;
  /** A slot came free (or went): one waiting worker looks again. */
  readonly freed: () => void;
  /** More slots may be used now: every waiting worker looks again. */
  readonly wakeAll: () => void;
}

const makeLanes = (slots: ReadonlySet<Slot>, allowed: () => number, clock: Clock.Clock): Lanes => {
  const waiters = new Set<Deferred.Deferred<void>>();
  /** A free slot while fewer than `allowed` are busy: one with an open connection first, then the caller's own. */
  const tryTake = (own: Slot): Slot | undefined => {
    let busy = 0;
    let best: Slot | undefined;
    let bestScore = -1;
    for (const slot of slots) {
      if (slot.busy) {
        busy++;
        continue;
      }
      const score = (slot.connected() ? 2 : 0) + (slot === own ? 1 : 0);
      if (score > bestScore) {
        best = slot;
        bestScore = score;
      }
    }
    if (best === undefined || busy >= allowed()) return undefined;
    best.busy = true;
    return best;
  };
  const take = (own: Slot, deadline: number): Effect.Effect<Slot | undefined> =>
    Effect.suspend(() => {
      const lane = tryTake(own);
      if (lane) return Effect.succeed(lane);
      const left = deadline - clock.currentTimeMillisUnsafe();
      if (left <= 0) return Effect.succeed(undefined);
      const woken = Deferred.makeUnsafe<void>();
      waiters.add(woken);
      return Deferred.await(woken).pipe(
        Effect.timeoutOption(left),
        Effect.ensuring(Effect.sync(() => waiters.delete(woken))),
        Effect.flatMap((got) => (got._tag === "None" ? Effect.succeed(undefined) : take(own, deadline))),
      );
    });
  const wake = (woken: Deferred.Deferred<void>) => {
    waiters.delete(woken);
    Deferred.doneUnsafe(woken, Exit.void);
  };
  const freed = () => {
    if (waiters.size === 0) return;
    wake(waiters.values().next().value!);
  };
  return {
    take,
    give: (lane) => {
      lane.busy = false;
      freed();
    },
    freed,
    wakeAll: () => [...waiters].forEach(wake),
  };
};

/**
 * How a worker sends while its site is backed off, its source address is held (or its own
 * slot is lent out): a paused site or source address defers the job unsent; otherwise the
 * worker takes a lane, waits its turn in the site's pace (one message per gap), and sends
 * over the lane.
 */
const throttledSender = (
  lanes: Lanes,
  clock: Clock.Clock,
  policy: ThrottlePolicy,
  catchUp: () => void,
  site: {
    readonly waitedTooLong: (queued: Queued) => Attempt;
    /** The attempt of a job the site holds now (paused), else undefined. */
    readonly heldAt: (queued: Queued, now: number) => Attempt | undefined;
    /** The back-off level the site runs at. */
    readonly level: () => number;
  },
) => {
  /** When the next message may go (the site's pace, shared by its workers). */
  let nextAt = 0;
  return (own: Slot, sendVia: (via: Slot, queued: Queued) => Effect.Effect<Attempt>) => {
    const paced = (lane: Slot, queued: Queued): Effect.Effect<Attempt> =>
      Effect.suspend(() => {
        const now = clock.currentTimeMillisUnsafe();
        const at = Math.max(now, nextAt);
        if (at > queued.deadline) {
          lanes.give(lane);
          return Effect.succeed(site.waitedTooLong(queued));
        }
        nextAt = at + gapAt(site.level(), policy);
        const go = Effect.suspend(() => {
          // The site may have been paused while this job waited its turn.
          const held = site.heldAt(queued, clock.currentTimeMillisUnsafe());
          if (held === undefined) return sendVia(lane, queued);
          lanes.give(lane);
          return Effect.succeed(held);
        });
        return at > now ? Effect.andThen(Effect.sleep(at - now), go) : go;
      }).pipe(
        // Interrupted or crashed before the slot finished a send: the lane is let go (a finished send lets go of it itself).
        Effect.onExit((exit) => (Exit.isFailure(exit) && lane.busy ? Effect.sync(() => lanes.give(lane)) : Effect.void)),
      );
    return (queued: Queued, now: number): Effect.Effect<Attempt> => {
      // A pause that ended a moment ago, before the recovery timer ran, holds nothing.
      catchUp();
      const held = site.heldAt(queued, now);
      if (held !== undefined) return Effect.succeed(held);
      return Effect.flatMap(lanes.take(own, queued.deadline), (lane) => (lane ? paced(lane, queued) : Effect.succeed(site.waitedTooLong(queued))));
    };
  };
};

/** The slots of one site, for taking over each other's idle connections. */
interface Siblings {
  readonly slots: () => Iterable<Slot>;
  /** Calls `listener` whenever a slot of the site leaves a connection idle; returns the unsubscribe. */
  readonly onIdle: (listener: () => void) => () => void;
  readonly idled: () => void;
}

/** One connection slot of a site worker. */
interface Slot {
  /**
   * Sends a job over the open connection, or opens one in MX order. Whoever calls it sets
   * `busy` first; the slot clears it when the send is done.
   */
  readonly send: (job: DeliveryJob) => Effect.Effect<Attempt>;
  readonly connected: () => boolean;
  /** A send over this slot is under way, or reserved by a worker (only one at a time). */
  busy: boolean;
  /** Clears `busy` without a send (a reservation given up). */
  readonly release: () => void;
  /** Closes the connection if it sits idle. */
  readonly dropIdle: () => void;
  /** Gives up this slot's connection if it sits idle and can take the job (another slot of the site sends over it). */
  readonly takeIdle: (job: DeliveryJob) => Connection | undefined;
}

/** Called when a slot is no longer busy: with the attempt of a send that started at `startedAt`, or none. */
type OnFree = (attempt: Attempt | undefined, startedAt: number) => void;

type Target = { readonly host: string; readonly ip: string };

/** Whether the open connection can take this job: still open, TLS as required, to one of the route's MX addresses. */
const usable = (job: DeliveryJob, open: Connection) =>
  !open.closed() &&
  (job.tls !== "require" || open.secure) &&
  job.route.hosts.some((host) => host.name.toLowerCase() === open.host.toLowerCase() && host.addresses.includes(open.ip));

// ---- opening a connection ----

/**
 * What opening needs from its slot: `adopt` takes a connection that opened (or closes it
 * when the slot has closed); `borrow` takes an idle connection of another slot of the site
 * that can carry the job, and `onIdle` tells when one may have become idle.
 */
interface Opener {
  readonly options: SiteOptions;
  readonly budget: ConnectionBudget;
  readonly adopt: (opened: Connection) => void;
  readonly borrow: (job: DeliveryJob) => Connection | undefined;
  readonly onIdle: (listener: () => void) => () => void;
}

/**
 * A permit to open a connection, or, if one becomes idle first, a connection of another
 * slot of the site: a worker waiting for room (a site budget grants fewer connections than
 * the site has workers) takes over the connection a sibling just finished with, instead of
 * waiting until that one's idle timeout closes it. A permit that arrives after a
 * connection was taken over goes back unused.
 */
const permitOrIdle = (opener: Opener, job: DeliveryJob, signal: AbortSignal): Promise<{ readonly release: Release } | { readonly borrowed: Connection }> =>
  new Promise((resolve) => {
    let settled = false;
    const stopListening = opener.onIdle(() => {
      if (settled || signal.aborted) return;
      const borrowed = opener.borrow(job);
      if (!borrowed) return;
      settled = true;
      stopListening();
      resolve({ borrowed });
    });
    void opener.budget.acquire().then((release) => {
      if (settled) return release(true);
      settled = true;
      stopListening();
      resolve({ release });
    });
  });

/**
 * Waits for a permit and opens one connection (or takes over a sibling's idle one, see
 * `permitOrIdle`). Interrupted, it gives up: the open is aborted, a permit that arrives
 * later is handed back, a connection that opens anyway is closed.
 */
const openOne = (opener: Opener, job: DeliveryJob, target: Target, plaintextOnly: boolean) =>
  Effect.promise((signal) =>
    permitOrIdle(opener, job, signal)
      .then((got): Promise<Connection | OpenFailure> | Connection | OpenFailure => {
        if ("borrowed" in got) return got.borrowed;
        if (!signal.aborted) return openConnection(target, opener.options, job.tls, got.release, plaintextOnly, signal);
        got.release(true);
        return { _tag: "ConnectionFailed", detail: "abandoned" } satisfies OpenFailure;
      })
      .then((opened) => {
        if (!("_tag" in opened)) opener.adopt(opened);
        return opened;
      }),
  );

/** Opens a connection to the first MX address (in MX order) that takes one. */
const openFirst = (opener: Opener, job: DeliveryJob): Effect.Effect<{ open: Connection } | { failure: OpenFailure; last: Target | undefined }> =>
  Effect.gen(function* () {
    let failure: OpenFailure = { _tag: "ConnectionFailed", detail: `no MX host of ${job.route.domain} has an address` };
    let last: Target | undefined;
    let sawTls = false;
    for (const host of job.route.hosts) {
      for (const ip of host.addresses) {
        last = { host: host.name, ip };
        let opened = yield* openOne(opener, job, last, false);
        // Opportunistic TLS that fails in the handshake: this host gets the mail in plaintext, as Postfix does.
        if ("_tag" in opened && opened._tag === "TlsFailed" && job.tls === "opportunistic") opened = yield* openOne(opener, job, last, true);
        if (!("_tag" in opened)) return { open: opened };
        sawTls ||= opened._tag === "TlsFailed";
        failure = opened;
      }
    }
    // Required TLS missing anywhere explains more than the last host's refusal.
    return { failure: sawTls ? asTlsFailure(failure) : failure, last };
  });

/** Every recipient deferred (or failed) because no connection could be opened. */
const openFailed = (job: DeliveryJob, failure: OpenFailure, last: Target | undefined, source: string | undefined): Attempt => ({
  results: everyone(job.recipients, failure),
  server: last ? `${last.host}[${last.ip}]` : job.route.domain,
  mx: last,
  ...(source !== undefined ? { source } : {}),
});

const sentOver = (open: Connection, sent: Awaited<ReturnType<typeof sendOver>>, source: string | undefined): Attempt => ({
  results: sent.results,
  server: `${open.host}[${open.ip}]`,
  mx: { host: open.host, ip: open.ip },
  peerDsn: open.extensions.has("DSN"),
  // Attempts from a pool address say which (the delivery log's `source`).
  ...(source !== undefined ? { source } : {}),
});

// ---- the slot: its connection and parking, then sending ----

/** The connection a slot keeps between messages, and whether it sits idle. */
interface Kept {
  connection: Connection | undefined;
  /** When the open connection was last left idle; undefined while it is busy or there is none. */
  parkedAt: number | undefined;
  withdrawIdle: (() => void) | undefined;
  /** The slot's scope has closed: a connection that finishes opening now is closed at once. */
  closed: boolean;
  /** Closes the connection. Synchronous, because the connection budget calls it from plain code when it needs room. */
  readonly drop: () => void;
}

const unpark = (kept: Kept) => {
  kept.parkedAt = undefined;
  kept.withdrawIdle?.();
  kept.withdrawIdle = undefined;
};

const park = (kept: Kept, budget: ConnectionBudget, now: number) => {
  kept.parkedAt = now;
  kept.withdrawIdle = budget.idle(kept.drop);
  // A site lease that shrank while the connection was busy closes it at once: nothing is parked.
  if (!kept.connection) unpark(kept);
};

/**
 * The kept connection of one incarnation, in its scope: closing the scope closes the
 * connection and stops the idle watcher.
 */
const makeKept = (options: SiteOptions): Effect.Effect<Kept, never, Scope.Scope> =>
  Effect.gen(function* () {
    const clock = yield* Clock.Clock;
    const kept: Kept = {
      connection: undefined,
      parkedAt: undefined,
      withdrawIdle: undefined,
      closed: false,
      drop: () => {
        unpark(kept);
        kept.connection?.close();
        kept.connection = undefined;
      },
    };
    yield* Effect.addFinalizer(() =>
      Effect.sync(() => {
        kept.closed = true;
        kept.drop();
      }),
    );
    // One watcher per slot closes a connection idle for `idleMs`: parking is then a field
    // write, not a timer fiber forked and interrupted for every message.
    const closeWhenIdle = Effect.suspend(() => {
      const now = clock.currentTimeMillisUnsafe();
      const { parkedAt } = kept;
      if (parkedAt !== undefined && now - parkedAt >= options.idleMs) kept.drop();
      return Effect.sleep(kept.parkedAt === undefined ? options.idleMs : Math.max(1, kept.parkedAt + options.idleMs - now));
    });
    yield* Effect.forkScoped(Effect.forever(closeWhenIdle));
    return kept;
  });

/**
 * A slot for one incarnation of a site worker. Its connection and idle timer belong to the
 * incarnation's scope: closing the scope (a crash, a stop) closes the connection, stops the
 * timer, and closes at once a connection that finishes opening afterwards.
 */
const makeSlot = (options: SiteOptions, budget: ConnectionBudget, siblings: Siblings, onFree: OnFree): Effect.Effect<Slot, never, Scope.Scope> =>
  Effect.gen(function* () {
    const clock = yield* Clock.Clock;
    const kept = yield* makeKept(options);
    const source = options.localAddress;
    let startedAt = 0;

    /**
     * An idle connection of another slot, taken over. Without it a worker whose site may
     * keep fewer connections than it has workers (a small budget grant) would wait for a
     * permit while another worker's connection sits idle until its idle timeout.
     */
    const borrow = (job: DeliveryJob): Connection | undefined => {
      for (const other of siblings.slots()) {
        if (other === slot) continue;
        const taken = other.takeIdle(job);
        if (taken) return taken;
      }
      return undefined;
    };

    const opener: Opener = {
      options,
      budget,
      /** A connection just opened for this slot; one that arrives after the slot closed (a crash or stop while opening) is closed at once. */
      adopt: (opened) => {
        if (kept.closed) opened.close();
        else kept.connection = opened;
      },
      borrow,
      onIdle: siblings.onIdle,
    };

    const sendOn = (open: Connection, job: DeliveryJob) => Effect.promise(() => sendOver(open, job, options));

    /** The send is done: the slot is free again, and the site reads what the attempt got. */
    const done = (attempt: Attempt): Attempt => {
      slot.busy = false;
      onFree(attempt, startedAt);
      return attempt;
    };

    const finish = (open: Connection, sent: Awaited<ReturnType<typeof sendOver>>) =>
      Effect.sync(() => {
        if (sent.reusable) park(kept, budget, clock.currentTimeMillisUnsafe());
        else kept.drop();
        const attempt = done(sentOver(open, sent, source));
        if (kept.parkedAt !== undefined && kept.connection) siblings.idled();
        return attempt;
      });

    /** Sends over the open connection when it can take the job, else opens one. Once per message: no generator on the reuse path. */
    const send = (job: DeliveryJob): Effect.Effect<Attempt> =>
      Effect.suspend(() => {
        startedAt = clock.currentTimeMillisUnsafe();
        if (kept.connection && !usable(job, kept.connection)) kept.drop();
        if (!kept.connection) return sendFresh(job);
        unpark(kept);
        const reused = kept.connection;
        return Effect.flatMap(sendOn(reused, job), (sent) => {
          if (!sent.stale) return finish(reused, sent);
          kept.drop(); // the host had closed it while it was idle: open a fresh one
          return sendFresh(job);
        });
      });

    const sendFresh = (job: DeliveryJob): Effect.Effect<Attempt> =>
      Effect.gen(function* () {
        const borrowed = borrow(job);
        if (borrowed) {
          opener.adopt(borrowed);
          return yield* send(job);
        }
        const first = yield* openFirst(opener, job);
        if ("failure" in first) return done(openFailed(job, first.failure, first.last, source));
        return yield* finish(first.open, yield* sendOn(first.open, job));
      });

    const slot: Slot = {
      send,
      connected: () => kept.connection !== undefined && !kept.connection.closed(),
      busy: false,
      release: () => {
        slot.busy = false;
        onFree(undefined, startedAt);
      },
      dropIdle: () => {
        if (kept.parkedAt !== undefined) kept.drop();
      },
      takeIdle: (job) => {
        const open = kept.connection;
        // Not one of a slot reserved by a worker (busy): that worker is about to send over it.
        if (!open || slot.busy || kept.parkedAt === undefined || !usable(job, open)) return undefined;
        unpark(kept);
        kept.connection = undefined;
        return open;
      },
    };
    return slot;
  });
