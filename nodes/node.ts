// One Tern node: config → storage and NATS → supervised actors → listeners.
// Stopping reverses it: refuse new work, finish what is in flight, drain NATS, close LMDB.
import { mkdir } from "node:fs/promises";
import { join } from "node:path";
import { Effect } from "effect";
import { open } from "lmdb";
import { linkToNats } from "../cluster/nats.ts";
import { openMailboxOwners } from "../cluster/ownership.ts";
import { makeSubjects } from "../protocol/subjects.ts";
import { makeDispatch } from "../actors/delivery/dispatch.ts";
import { startScheduler } from "../actors/delivery/scheduler.ts";
import { makeSites } from "../actors/delivery/sites.ts";
import { makeLocalMailboxes } from "../actors/mailbox/actor.ts";
import { makeMailboxRouter } from "../actors/mailbox/router.ts";
import { openMailboxStore } from "../actors/mailbox/store.ts";
import type { QueueEntry, RecipientResult } from "../actors/queue/entry.ts";
import { openSpool } from "../actors/queue/spool.ts";
import { startResolverActor, resolveOverNats } from "../actors/resolver/actor.ts";
import { makeDnsClient } from "../actors/resolver/dns-client.ts";
import { makeCachedResolver } from "../actors/resolver/mail-route.ts";
import { makeMaildropAccess } from "../actors/retriever/access.ts";
import { startPop3Server } from "../actors/retriever/pop3-server.ts";
import { makeSupervisor } from "../actors/runtime/supervisor.ts";
import { startSmtpListener } from "../actors/session/smtp.ts";
import type { NodeConfig } from "./config.ts";
import { startHttp } from "./http.ts";
import { makeLog, type Log } from "./log.ts";
import { makeNodeMetrics } from "./metrics.ts";

export interface RunningNode {
  readonly ports: { readonly smtp: number; readonly pop3: number; readonly http: number };
  readonly stop: () => Promise<void>;
}

const GRACE_MS = 10_000;

export const startNode = async (config: NodeConfig, log: Log = makeLog(config.nodeId)): Promise<RunningNode> => {
  await mkdir(config.dataDir, { recursive: true });
  // Default lmdb-js options: an awaited write resolves only once flushed (never noSync).
  const root = open({ path: join(config.dataDir, "tern.lmdb") });
  const nats = await linkToNats({
    servers: config.nats.servers,
    embedded: config.nats.embedded,
    dataDir: config.dataDir,
    clientName: `tern-${config.cluster}-${config.nodeId}`,
  });
  if (nats.embedded) log("nats.embedded.started", { servers: config.nats.servers });
  const { nc } = nats;
  const subjects = makeSubjects(config.cluster);

  const spool = openSpool(root);
  let inFlight = () => 0;
  const metrics = makeNodeMetrics(config.nodeId, spool.depth, () => inFlight());
  const supervisor = makeSupervisor({
    onRestart: (actor, reason) => {
      metrics.actorRestarts.inc({ actor: actor.split("/")[0] });
      log("actor.restarted", { actor, reason });
    },
    onEscalate: (actor, reason) => log("actor.escalated", { actor, reason }),
  });

  const users = new Map(config.users.map((user) => [user.address, user]));
  const owners = await openMailboxOwners(nc, subjects.mailboxOwnersBucket);
  for (const user of config.users.filter((u) => u.home === config.nodeId)) {
    const owner = await owners.claim(user.address, config.nodeId);
    if (owner !== config.nodeId) log("mailbox.claim.refused", { user: user.address, owner });
  }

  const localMailboxes = makeLocalMailboxes(openMailboxStore(root), supervisor);
  const mailboxes = makeMailboxRouter({
    nodeId: config.nodeId,
    nc,
    subjects,
    owners,
    local: localMailboxes,
    homeOf: (user) => users.get(user)?.home,
    timeoutMs: 30_000,
  });
  const mailboxSubscriptions = mailboxes.serve();

  const dns = makeDnsClient({ servers: config.dns.servers, timeoutMs: config.dns.timeoutMs, tries: config.dns.tries });
  const resolver = await Effect.runPromise(
    startResolverActor(nc, subjects, makeCachedResolver(dns, { maxEntries: 10_000, minTtlSec: 5, maxTtlSec: 3600 }), supervisor),
  );

  const sites = makeSites(
    {
      heloName: config.hostname,
      port: config.delivery.remotePort,
      connectTimeoutMs: config.delivery.connectTimeoutMs,
      maxConnectionsPerHost: 1,
      connectionsPerSite: config.delivery.connectionsPerSite,
    },
    supervisor,
  );

  const publish = (kind: string, event: Record<string, unknown>) => {
    if (!nc.isClosed()) nc.publish(subjects.event(kind), JSON.stringify({ node: config.nodeId, time: Date.now(), ...event }));
  };

  const finished = (entry: QueueEntry, results: ReadonlyArray<RecipientResult>, server: string) => {
    for (const result of results) {
      const route = entry.route.kind;
      (result.status === "delivered" ? metrics.delivered : result.status === "failed" ? metrics.failed : metrics.deferred).inc({ route });
      publish(result.status, { msg: entry.messageId, entry: entry.id, recipient: result.recipient, server, reply: result.reply, attempts: entry.attempts + 1 });
      log(`recipient.${result.status}`, { msg: entry.messageId, entry: entry.id, rcpt: result.recipient, server, reply: result.reply });
    }
  };

  const scheduler = startScheduler({
    spool,
    dispatch: makeDispatch({ nodeId: config.nodeId, mailboxes, sites, resolve: (domain) => resolveOverNats(nc, subjects, domain) }),
    maxInFlight: config.delivery.maxInFlight,
    pollMs: config.delivery.pollMs,
    retry: { baseMs: config.delivery.retryBaseMs, maxMs: config.delivery.retryMaxMs },
    hooks: { finished, log },
  });
  inFlight = scheduler.inFlight;

  const smtp = await startSmtpListener({
    host: config.listen.host,
    port: config.listen.smtp,
    spool,
    policy: {
      hostname: config.hostname,
      localDomains: config.localDomains,
      isLocalUser: (address) => users.has(address.toLowerCase()),
      trustedNetworks: config.trustedNetworks,
      maxMessageBytes: config.limits.maxMessageBytes,
      maxRecipients: config.limits.maxRecipients,
    },
    hooks: {
      accepted: (messageId, entries, bytes) => {
        metrics.accepted.inc();
        metrics.acceptedBytes.inc(bytes);
        publish("accepted", { msg: messageId, entries: entries.map((e) => e.id) });
        scheduler.submit(entries);
      },
      rejected: (reason) => metrics.rejected.inc({ reason }),
      log,
    },
  });

  const pop3 = await startPop3Server({
    host: config.listen.host,
    port: config.listen.pop3,
    hostname: config.hostname,
    access: makeMaildropAccess(new Map(config.users.map((u) => [u.address, u.password])), mailboxes),
    log: (fields) => log("pop3", fields),
  });

  const http = await startHttp(config.listen.host, config.listen.http, metrics.registry, {
    problems: () => [
      ...[...supervisor.escalated()].map(([actor, reason]) => `actor ${actor} escalated: ${reason}`),
      ...(nc.isClosed() ? ["NATS connection closed"] : []),
    ],
  });

  const ports = { smtp: smtp.port, pop3: pop3.port, http: http.port };
  log("node.started", { cluster: config.cluster, host: config.listen.host, ...ports, dataDir: config.dataDir, queued: spool.depth() });

  let stopping: Promise<void> | undefined;
  const stop = () =>
    (stopping ??= (async () => {
      log("node.stopping", {});
      await Promise.all([smtp.close(), pop3.close()]);
      await scheduler.stop(GRACE_MS);
      await Effect.runPromise(Effect.all([sites.stop(GRACE_MS), localMailboxes.stop(GRACE_MS), resolver.actor.stop(1_000)]));
      resolver.subscription.unsubscribe();
      mailboxSubscriptions.forEach((subscription) => subscription.unsubscribe());
      await nats.close();
      await root.close();
      await new Promise<void>((resolve) => http.server.close(() => resolve()));
      log("node.stopped", {});
    })());
  return { ports, stop };
};
