// One Tern node as one Effect layer graph: config → storage and NATS → supervised
// actors → listeners → the node's announcement in the member list. Starting the node
// builds the graph; stopping it closes the graph's scope, and the order of the stop
// follows from the dependencies: the node leaves the member list, then listeners
// (they depend on everything) and the NATS API stop first, then queue administration,
// pools, reputation and status, the scheduler (in-flight deliveries are recorded), the
// site actors and mailboxes, the reputation figures, then the event publisher (a last
// round for the final events), then NATS is drained, and LMDB, which everything writes
// to, closes last. A drained node (`tern node drain`) stops the same way, by itself, once
// its queue went to the peers.
import { Context, Deferred, Effect, Layer } from "effect";
import type { NodeConfig } from "./config.ts";
import { makeLog, type Log as LogShape } from "./log.ts";
import { BlobTransfers, ClusterHealth, MailboxOwnership, Nats } from "./services/cluster.ts";
import { ApiLayer } from "./services/api.ts";
import { Config, Draining, Log, Metrics, Supervisor, type NodeStartError } from "./services/core.ts";
import { PoolsStatusLayer, QueueAdminLayer, Scheduler, Sites, Warmup } from "./services/delivery.ts";
import { Dkim, LoginAccounts, Tls, Users } from "./services/identity.ts";
import { Feedback } from "./services/feedback.ts";
import { LoginThrottles } from "./services/logins.ts";
import { DescriptorCheck, HttpListener, ImapListener, Pop3Listener, SmtpListener } from "./services/listeners.ts";
import { LocalMailboxes, Mailboxes } from "./services/mailboxes.ts";
import { Resolver } from "./services/resolver.ts";
import { Reputation, ReputationStatusLayer } from "./services/reputation.ts";
import { EventPublisherLayer } from "./services/events.ts";
import { MessageStatus } from "./services/status.ts";
import { Membership } from "./services/membership.ts";
import { MemberAnnouncement } from "./services/member-announcement.ts";
import { SiteBudgets } from "./services/site-budgets.ts";
import { Drainer, HandOffLayer } from "./services/drain.ts";
import { EventOutbox, Lmdb, Spool, SpoolHealth } from "./services/storage.ts";
import { SuppressionAdminLayer, Suppressions } from "./services/suppression.ts";

export interface NodePorts {
  readonly smtp: number;
  readonly smtps: number;
  readonly pop3: number;
  readonly imap: number;
  readonly imaps: number;
  readonly http: number;
}

/** Each line provides what the lines above it need. */
const foundation = Supervisor.layer.pipe(Layer.provideMerge(Layer.mergeAll(Metrics.layer, LoginAccounts.layer.pipe(Layer.provideMerge(Users.layer)), Tls.layer, Dkim.layer, Feedback.layer, Draining.layer)));
const storage = Spool.layer.pipe(Layer.provideMerge(EventOutbox.layer), Layer.provideMerge(Lmdb.layer));
const cluster = Layer.mergeAll(ClusterHealth.layer, EventPublisherLayer, BlobTransfers.layer, Membership.layer).pipe(
  Layer.provideMerge(Suppressions.layer),
  Layer.provideMerge(MailboxOwnership.layer),
  Layer.provideMerge(Nats.layer),
);
const actors = Scheduler.layer.pipe(
  Layer.provideMerge(Layer.mergeAll(Sites.layer.pipe(Layer.provideMerge(SiteBudgets.layer)), Resolver.layer, Mailboxes.layer.pipe(Layer.provideMerge(LocalMailboxes.layer)), Warmup.layer)),
  Layer.provideMerge(Reputation.layer),
);
/** What applications and operators ask of the node's mail (message status, draining), and the cluster-wide login throttles. */
const services = Layer.mergeAll(MessageStatus.layer, LoginThrottles.layer, Drainer.layer);
const listeners = Layer.mergeAll(SmtpListener.layer, Pop3Listener.layer, ImapListener.layer, HttpListener.layer, QueueAdminLayer, PoolsStatusLayer, SuppressionAdminLayer, ReputationStatusLayer, ApiLayer, HandOffLayer, DescriptorCheck).pipe(
  Layer.provideMerge(SpoolHealth.layer),
);

/**
 * The whole node, logging through `log`. The node announces itself in the member list once
 * everything serves, so it leaves the list before anything stops.
 */
const nodeLayer = (config: NodeConfig, log: LogShape) =>
  MemberAnnouncement.pipe(
    Layer.provideMerge(listeners),
    Layer.provideMerge(services),
    Layer.provideMerge(actors),
    Layer.provideMerge(cluster),
    Layer.provideMerge(storage),
    Layer.provideMerge(foundation),
    Layer.provideMerge(Layer.succeed(Log, log)),
    Layer.provideMerge(Config.layer(config)),
  );

/**
 * Runs the node until interrupted (the CLI interrupts on SIGTERM/SIGINT) or drained
 * (`tern node drain`: it succeeds once its queue went to the peers), then stops it
 * gracefully. `started` hears the bound ports once every part is up.
 */
export const runNode = (config: NodeConfig, started: (ports: NodePorts) => void): Effect.Effect<void, NodeStartError> => {
  const log = makeLog(config.nodeId);
  return Effect.scoped(
    Effect.gen(function* () {
      const context = yield* Layer.build(nodeLayer(config, log));
      const ports: NodePorts = {
        ...Context.get(context, SmtpListener),
        pop3: Context.get(context, Pop3Listener).port,
        imap: Context.get(context, ImapListener).imap,
        imaps: Context.get(context, ImapListener).imaps,
        http: Context.get(context, HttpListener).port,
      };
      log("node.started", { cluster: config.cluster, host: config.listen.host, ...ports, httpHost: config.http.host, dataDir: config.dataDir, queued: Context.get(context, Spool).depth() });
      started(ports);
      yield* Effect.addFinalizer(() => Effect.sync(() => log("node.stopping", {})));
      yield* Deferred.await(Context.get(context, Draining).finished);
      log("node.drained", {});
    }),
  ).pipe(Effect.onExit(() => Effect.sync(() => log("node.stopped", {}))));
};
