// Delivery actors, one per site per node. A site is the set of MX hosts a domain
// resolves to, so domains sharing MX hosts share one actor, its ready queue (the actor's
// mailbox) and its connection limit: the actor has as many workers as the site may have
// connections, and each worker keeps at most one connection, reused for the next message.
import { Effect } from "effect";
import type { MailRoute } from "../../protocol/route.ts";
import { matchesDomain } from "../common/domains.ts";
import { spawnActor, type ActorRef } from "../runtime/actor.ts";
import type { Supervisor } from "../runtime/supervisor.ts";
import { everyone, type Attempt, type Trouble } from "./attempt.ts";
import type { ConnectionBudget } from "./connections.ts";
import { openConnection, sendOver, type Connection, type OpenFailure, type OutboundJob, type OutboundOptions, type TlsPolicy } from "./smtp-client.ts";

export interface DeliveryJob extends OutboundJob {
  readonly route: MailRoute;
  readonly tls: TlsPolicy;
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
  readonly stop: (graceMs: number) => Effect.Effect<void>;
}

/** An ask outlives any single job (each SMTP step has its own timeout); this only guards against a stuck handler. */
const ASK_TIMEOUT_MS = 2 * 3_600_000;
/** Site actors without work for this long are stopped; the next job for the site starts a new one. */
const SITE_IDLE_MS = 5 * 60_000;

export const siteKey = (route: MailRoute): string =>
  route.hosts.map((host) => host.name.toLowerCase()).sort().join(",") || route.domain;

export const connectionLimit = (route: MailRoute, options: Pick<SiteOptions, "connectionsPerSite" | "siteConnections">): number => {
  for (const [pattern, limit] of Object.entries(options.siteConnections)) {
    if (route.hosts.some((host) => matchesDomain(pattern, host.name))) return limit;
  }
  return options.connectionsPerSite;
};

interface Queued {
  readonly job: DeliveryJob;
  readonly deadline: number;
}

interface Site {
  readonly actor: ActorRef<Queued, Attempt, never>;
  readonly workers: Set<Worker>;
  readonly limit: number;
  lastUsed: number;
}

export const makeSites = (options: SiteOptions, budget: ConnectionBudget, supervisor: Supervisor): Sites => {
  const sites = new Map<string, Site>();

  const spawnSite = (key: string, route: MailRoute) =>
    Effect.gen(function* () {
      const workers = new Set<Worker>();
      const limit = connectionLimit(route, options);
      const actor = yield* spawnActor<Queued, Attempt, never>(
        {
          name: `delivery/${key}`,
          capacity: 100_000,
          concurrency: limit,
          init: Effect.sync(() => {
            const worker = makeWorker(options, budget);
            workers.add(worker);
            return (queued: Queued) =>
              Date.now() > queued.deadline
                ? Effect.succeed({ server: key, results: everyone(queued.job.recipients, "deferred", "451 4.4.5 the site's queue is too long, not attempted") })
                : Effect.promise(() => worker.handle(queued.job));
          }),
        },
        supervisor,
      );
      return { actor, workers, limit, lastUsed: Date.now() } satisfies Site;
    });

  const siteFor = (route: MailRoute) =>
    Effect.gen(function* () {
      const key = siteKey(route);
      const existing = sites.get(key);
      if (existing) return existing;
      const created = yield* spawnSite(key, route);
      sites.set(key, created);
      return created;
    });

  const stopSite = (key: string, site: Site, graceMs: number) => {
    sites.delete(key);
    return site.actor.stop(graceMs).pipe(Effect.ensuring(Effect.sync(() => site.workers.forEach((worker) => worker.close()))));
  };

  const sweep = setInterval(() => {
    const now = Date.now();
    for (const [key, site] of sites) {
      if (site.actor.load() === 0 && now - site.lastUsed > SITE_IDLE_MS) Effect.runFork(stopSite(key, site, 0));
    }
  }, 60_000);
  sweep.unref();

  const deferAll = (job: DeliveryJob, reason: string): Attempt => ({ server: siteKey(job.route), results: everyone(job.recipients, "deferred", reason) });

  const ask = (job: DeliveryJob) =>
    siteFor(job.route).pipe(
      Effect.tap((site) => Effect.sync(() => (site.lastUsed = Date.now()))),
      Effect.flatMap((site) => site.actor.ask({ job, deadline: Date.now() + options.maxQueueWaitMs }, ASK_TIMEOUT_MS)),
    );

  return {
    deliver: (job) =>
      ask(job).pipe(
        // A site actor stopped by the idle sweep between lookup and ask: a new one takes the job.
        Effect.catchTag("ActorStopped", () => ask(job)),
        Effect.catch((error) => Effect.succeed(deferAll(job, `451 4.3.0 delivery actor: ${error._tag}`))),
      ),
    list: () => [...sites.entries()].map(([site, s]) => ({ site, connections: [...s.workers].filter((w) => w.connected()).length, queued: s.actor.load() })),
    stop: (graceMs) =>
      Effect.suspend(() => {
        clearInterval(sweep);
        return Effect.forEach([...sites.entries()], ([key, site]) => stopSite(key, site, graceMs), { discard: true, concurrency: "unbounded" });
      }),
  };
};

interface Worker {
  readonly handle: (job: DeliveryJob) => Promise<Attempt>;
  readonly connected: () => boolean;
  readonly close: () => void;
}

/** One connection slot of a site: sends a job over its open connection, or opens one in MX order. */
const makeWorker = (options: SiteOptions, budget: ConnectionBudget): Worker => {
  let connection: Connection | undefined;
  let idleTimer: NodeJS.Timeout | undefined;
  let withdrawIdle: (() => void) | undefined;

  const drop = () => {
    clearTimeout(idleTimer);
    withdrawIdle?.();
    withdrawIdle = undefined;
    connection?.close();
    connection = undefined;
  };

  const park = () => {
    idleTimer = setTimeout(drop, options.idleMs);
    idleTimer.unref();
    withdrawIdle = budget.idle(drop);
  };

  const unpark = () => {
    clearTimeout(idleTimer);
    withdrawIdle?.();
    withdrawIdle = undefined;
  };

  const usable = (job: DeliveryJob, open: Connection) =>
    !open.closed() &&
    (job.tls !== "require" || open.secure) &&
    job.route.hosts.some((host) => host.name.toLowerCase() === open.host.toLowerCase() && host.addresses.includes(open.ip));

  const finish = (job: DeliveryJob, open: Connection, sent: Awaited<ReturnType<typeof sendOver>>): Attempt => {
    if (sent.reusable) park();
    else drop();
    return {
      results: sent.results,
      server: `${open.host}[${open.ip}]`,
      mx: { host: open.host, ip: open.ip },
      trouble: sent.trouble,
      peerDsn: open.extensions.has("DSN"),
    };
  };

  const openFirst = async (job: DeliveryJob): Promise<{ open: Connection } | { failure: OpenFailure; last: { host: string; ip: string } | undefined }> => {
    let failure: OpenFailure = { trouble: "connection", reply: `no MX host of ${job.route.domain} has an address` };
    let last: { host: string; ip: string } | undefined;
    let sawTls = false;
    for (const host of job.route.hosts) {
      for (const ip of host.addresses) {
        last = { host: host.name, ip };
        const release = await budget.acquire();
        let opened = await openConnection(last, options, job.tls, release);
        // Opportunistic TLS that fails in the handshake: this host gets the mail in plaintext, as Postfix does.
        if ("trouble" in opened && opened.trouble === "tls" && job.tls === "opportunistic") {
          opened = await openConnection(last, options, job.tls, await budget.acquire(), true);
        }
        if (!("trouble" in opened)) return { open: opened };
        sawTls ||= opened.trouble === "tls";
        failure = opened;
      }
    }
    // Required TLS missing anywhere explains more than the last host's refusal.
    return { failure: sawTls && failure.trouble !== "tls" ? { ...failure, trouble: "tls" as Trouble } : failure, last };
  };

  const handle = async (job: DeliveryJob): Promise<Attempt> => {
    if (connection && !usable(job, connection)) drop();
    if (connection) {
      unpark();
      const reused = connection;
      const sent = await sendOver(reused, job, options);
      if (!sent.stale) return finish(job, reused, sent);
      drop(); // the host had closed it while it was idle: open a fresh one
    }
    const first = await openFirst(job);
    if ("failure" in first) {
      return {
        results: everyone(job.recipients, "deferred", first.failure.reply),
        server: first.last ? `${first.last.host}[${first.last.ip}]` : job.route.domain,
        mx: first.last,
        trouble: first.failure.trouble,
      };
    }
    connection = first.open;
    return finish(job, first.open, await sendOver(first.open, job, options));
  };

  return { handle, connected: () => connection !== undefined && !connection.closed(), close: drop };
};
