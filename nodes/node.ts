// One Tern node: config → storage and NATS → supervised actors → listeners.
// Stopping reverses it: refuse new work, finish what is in flight, drain NATS, close LMDB.
import { mkdir } from "node:fs/promises";
import { join } from "node:path";
import { Effect } from "effect";
import { open } from "lmdb";
import { linkToNats } from "../cluster/nats.ts";
import { openMailboxOwners } from "../cluster/ownership.ts";
import { makeSubjects } from "../protocol/subjects.ts";
import { startOutbound } from "../actors/delivery/outbound.ts";
import { makeLocalMailboxes, passivateIdle } from "../actors/mailbox/actor.ts";
import { withFaults } from "../actors/mailbox/faults.ts";
import { makeMailboxMetrics } from "../actors/mailbox/metrics.ts";
import { makeMailboxRouter } from "../actors/mailbox/router.ts";
import { openMailboxStore } from "../actors/mailbox/store.ts";
import { openSpool, type Spool } from "../actors/queue/spool.ts";
import { startResolverActor, resolveOverNats } from "../actors/resolver/actor.ts";
import { makeDnsClient } from "../actors/resolver/dns-client.ts";
import { makeResolverMetrics } from "../actors/resolver/metrics.ts";
import { makeCachedResolver } from "../actors/resolver/resolver.ts";
import { makeMaildropAccess } from "../actors/retriever/access.ts";
import { defaultLoginThrottle } from "../actors/retriever/login-throttle.ts";
import { startPop3Server } from "../actors/retriever/pop3-server.ts";
import { makeSupervisor } from "../actors/runtime/supervisor.ts";
import { makeClientGuard } from "../actors/session/guard.ts";
import { startSmtpListeners } from "../actors/session/smtp.ts";
import { ConfigError, type NodeConfig } from "./config.ts";
import { startHttp } from "./http.ts";
import { makeLog, type Log } from "./log.ts";
import { makeNodeMetrics } from "./metrics.ts";
import { loadTlsCredentials } from "./tls.ts";
import { makeUserStore } from "../actors/users/store.ts";

export interface RunningNode {
  readonly ports: { readonly smtp: number; readonly smtps: number; readonly pop3: number; readonly http: number };
  readonly stop: () => Promise<void>;
}

const GRACE_MS = 10_000;

export const startNode = async (config: NodeConfig, log: Log = makeLog(config.nodeId)): Promise<RunningNode> => {
  await mkdir(config.dataDir, { recursive: true });
  // Default lmdb-js options: an awaited write resolves only once flushed (never noSync).
  // maxDbs: lmdb-js's default of 12 named databases is too few for the spool's indexes and the mailboxes.
  const root = open({ path: join(config.dataDir, "tern.lmdb"), maxDbs: 64 });
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

  const users = await makeUserStore(config.users);
  const tls = await loadTlsCredentials(config.tls, config.dataDir, config.hostname, log);
  const owners = await openMailboxOwners(nc, subjects.mailboxOwnersBucket);
  for (const user of config.users.filter((u) => u.home === config.nodeId)) {
    const owner = await owners.claim(user.address, config.nodeId);
    if (owner !== config.nodeId) log("mailbox.claim.refused", { user: user.address, owner });
  }

  const mailboxMetrics = makeMailboxMetrics(metrics.registry, () => localMailboxes.active());
  const localMailboxes = makeLocalMailboxes({
    store: openMailboxStore(root),
    supervisor,
    knows: users.exists,
    quotaOf: (user) => config.mailbox.quotas[user] ?? config.mailbox.quotaBytes,
    idleMs: config.mailbox.idleMs,
    askTimeoutMs: config.mailbox.askTimeoutMs,
    observer: withFaults(mailboxMetrics.observer, process.env),
  });
  const stopPassivating = passivateIdle(localMailboxes, Math.max(1_000, Math.floor(config.mailbox.idleMs / 2)));
  const mailboxes = makeMailboxRouter({
    nodeId: config.nodeId,
    nc,
    subjects,
    owners,
    local: localMailboxes,
    homeOf: users.homeOf,
    timeoutMs: config.mailbox.askTimeoutMs,
  });
  const mailboxSubscriptions = mailboxes.serve();

  const dnsMetrics = makeResolverMetrics(metrics.registry);
  const dns = makeDnsClient({ servers: config.dns.servers, timeoutMs: config.dns.timeoutMs, tries: config.dns.tries, observer: dnsMetrics.client });
  // One cache per node: routing here, and TXT/PTR/TLSA (dnsResolver.txt/ptr/tlsa) for the other actors.
  const dnsResolver = makeCachedResolver(dns, {
    maxEntries: config.dns.cacheEntries,
    minTtlSec: config.dns.minTtlSec,
    maxTtlSec: config.dns.maxTtlSec,
    maxNegativeTtlSec: config.dns.maxNegativeTtlSec,
    policy: { families: config.dns.addressFamilies, allowedNetworks: config.dns.allowedTargetNetworks },
    ptrTimeoutMs: config.dns.ptrTimeoutMs,
    observer: dnsMetrics.cache,
  });
  const resolver = await Effect.runPromise(startResolverActor(nc, subjects, dnsResolver, supervisor));

  const publish = (kind: string, event: Record<string, unknown>) => {
    if (!nc.isClosed()) nc.publish(subjects.event(kind), JSON.stringify({ node: config.nodeId, time: Date.now(), ...event }));
  };

  // Delivery, DSNs and queue administration (`tern queue`): actors/delivery/outbound.ts.
  const outbound = await startOutbound({
    nodeId: config.nodeId,
    hostname: config.hostname,
    delivery: config.delivery,
    nc,
    subjects,
    spool,
    mailboxes,
    supervisor,
    resolve: (domain) => resolveOverNats(nc, subjects, domain),
    isLocalUser: users.exists,
    metrics,
    publish,
    log,
  }).catch((error: Error) => {
    throw new ConfigError(error.message);
  });
  const { scheduler, sites } = outbound;
  inFlight = scheduler.inFlight;

  const spoolHealth = watchSpoolHealth(spool, log);
  const smtp = await startSmtpListeners({
    host: config.listen.host,
    ports: { smtp: config.listen.smtp, smtps: config.listen.smtps },
    deps: {
      config: {
        hostname: config.hostname,
        localDomains: config.localDomains,
        isLocalUser: users.exists,
        catchAll: config.smtp.catchAll,
        trustedNetworks: config.trustedNetworks,
        maxMessageBytes: config.limits.maxMessageBytes,
        maxRecipients: config.limits.maxRecipients,
        maxErrors: config.smtp.maxErrors,
        bareLineEndings: config.smtp.bareLineEndings,
        accept8bitWithoutBodyParameter: config.smtp.accept8bitWithoutBodyParameter,
        authRequiresTls: config.smtp.authRequiresTls,
        idleTimeoutMs: config.smtp.idleTimeoutMs,
      },
      spool,
      users,
      guard: makeClientGuard(config.smtp),
      tls,
      spoolHealthy: spoolHealth.healthy,
      spoolFailed: spoolHealth.failed,
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
    },
  });

  const pop3 = await startPop3Server({
    host: config.listen.host,
    port: config.listen.pop3,
    hostname: config.hostname,
    nodeId: config.nodeId,
    access: makeMaildropAccess(users, mailboxes, { leaseMs: config.pop3.lockLeaseMs }),
    tls: { key: tls.key, cert: tls.cert },
    plaintextLoginNetworks: config.pop3.plaintextLoginNetworks,
    throttle: {
      ...defaultLoginThrottle,
      windowMs: config.pop3.failedLoginWindowMs,
      maxFailuresPerIp: config.pop3.maxFailedLoginsPerIp,
      maxFailuresPerUser: config.pop3.maxFailedLoginsPerUser,
      maxFailuresPerUserAndIp: config.pop3.maxFailedLoginsPerUserAndIp,
    },
    failureDelayMs: config.pop3.failedLoginDelayMs,
    onLogin: mailboxMetrics.onLogin,
    log: (fields) => log("pop3", fields),
  });

  const http = await startHttp(config.listen.host, config.listen.http, metrics.registry, {
    problems: () => [
      ...[...supervisor.escalated()].map(([actor, reason]) => `actor ${actor} escalated: ${reason}`),
      ...(nc.isClosed() ? ["NATS connection closed"] : []),
    ],
  });

  const ports = { ...smtp.ports, pop3: pop3.port, http: http.port };
  log("node.started", { cluster: config.cluster, host: config.listen.host, ...ports, dataDir: config.dataDir, queued: spool.depth() });

  let stopping: Promise<void> | undefined;
  const stop = () =>
    (stopping ??= (async () => {
      log("node.stopping", {});
      await Promise.all([smtp.close(), pop3.close()]);
      spoolHealth.stop();
      await scheduler.stop(GRACE_MS);
      outbound.close();
      stopPassivating();
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

/** After a failed commit the spool counts as unhealthy (new SMTP connections get 421) until a probe write succeeds. */
const watchSpoolHealth = (spool: Spool, log: Log) => {
  let healthy = true;
  let timer: NodeJS.Timeout | undefined;
  const probe = () => {
    Effect.runPromise(Effect.result(spool.probe())).then((result) => {
      if (result._tag === "Success") {
        healthy = true;
        timer = undefined;
        log("spool.healthy", {});
      } else {
        timer = setTimeout(probe, 2_000);
      }
    });
  };
  return {
    healthy: () => healthy,
    failed: () => {
      if (!healthy) return;
      healthy = false;
      log("spool.unhealthy", {});
      timer = setTimeout(probe, 2_000);
    },
    stop: () => clearTimeout(timer),
  };
};
