// Delivery actors, one per site per node. A site is the set of MX hosts a domain
// resolves to, so domains sharing MX hosts share one actor and its connection limit.
import { Effect } from "effect";
import type { MailRoute } from "../../protocol/route.ts";
import type { RecipientResult } from "../queue/entry.ts";
import { spawnActor, type ActorRef } from "../runtime/actor.ts";
import type { Supervisor } from "../runtime/supervisor.ts";
import { makeTransportPool, type Attempt, type OutboundOptions } from "./smtp-client.ts";

export interface DeliveryJob {
  readonly route: MailRoute;
  readonly sender: string;
  readonly recipients: ReadonlyArray<string>;
  readonly body: Uint8Array;
}

export interface Sites {
  /** Sends through the site's actor; trouble reaching the actor defers every recipient. */
  readonly deliver: (job: DeliveryJob) => Effect.Effect<Attempt>;
  readonly stop: (graceMs: number) => Effect.Effect<void>;
}

// An SMTP transaction may take minutes (RFC 5321 §4.5.3.2 timeouts add up).
const ASK_TIMEOUT_MS = 15 * 60_000;

export const siteKey = (route: MailRoute): string =>
  route.hosts.map((host) => host.name).sort().join(",") || route.domain;

export const makeSites = (options: OutboundOptions & { readonly connectionsPerSite: number }, supervisor: Supervisor): Sites => {
  const actors = new Map<string, ActorRef<DeliveryJob, Attempt, never>>();

  // Each worker of a site actor owns one pooled connection per remote address.
  const spawnSite = (key: string) =>
    spawnActor<DeliveryJob, Attempt, never>(
      {
        name: `delivery/${key}`,
        capacity: 100_000,
        concurrency: options.connectionsPerSite,
        init: Effect.sync(() => {
          const pool = makeTransportPool({ ...options, maxConnectionsPerHost: 1 });
          return (job: DeliveryJob) =>
            Effect.promise(() => pool.send(job.route, { sender: job.sender, recipients: job.recipients }, job.body));
        }),
      },
      supervisor,
    );

  const actorFor = (key: string) =>
    Effect.gen(function* () {
      const existing = actors.get(key);
      if (existing) return existing;
      const created = yield* spawnSite(key);
      actors.set(key, created);
      return created;
    });

  const deferAll = (job: DeliveryJob, reason: string): Attempt => ({
    server: siteKey(job.route),
    results: job.recipients.map((recipient): RecipientResult => ({ recipient, status: "deferred", reply: reason })),
  });

  return {
    deliver: (job) =>
      actorFor(siteKey(job.route)).pipe(
        Effect.flatMap((actor) => actor.ask(job, ASK_TIMEOUT_MS)),
        Effect.catch((error) => Effect.succeed(deferAll(job, `delivery actor: ${error._tag}`))),
      ),
    stop: (graceMs) => Effect.forEach([...actors.values()], (actor) => actor.stop(graceMs), { discard: true }),
  };
};
