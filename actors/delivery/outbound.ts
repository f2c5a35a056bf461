// The outbound half of a node, assembled in one place: the connection budget, the site
// actors, dispatch, DSNs, the scheduler, queue administration over NATS, and what each
// outcome reports (events, metrics, logs). nodes/node.ts calls `startOutbound` once.
import { Effect } from "effect";
import type { NatsConnection, Subscription } from "@nats-io/transport-node";
import { Counter, Gauge, type Registry } from "prom-client";
import type { MailRoute, DnsPermanentFailure, DnsTemporaryFailure } from "../../protocol/route.ts";
import type { Subjects } from "../../protocol/subjects.ts";
import { domainMatcher, domainOf } from "../common/domains.ts";
import type { MailboxRouter } from "../mailbox/router.ts";
import { serveQueueAdmin } from "../queue/admin.ts";
import type { QueueEntry, Route } from "../queue/entry.ts";
import type { Spool } from "../queue/spool.ts";
import type { Supervisor } from "../runtime/supervisor.ts";
import { loadRules, makeClassifier, type RulesFileError } from "./classify.ts";
import { makeConnectionBudget } from "./connections.ts";
import { makeDispatch } from "./dispatch.ts";
import { makeNotices } from "./notices.ts";
import { startScheduler, type Scheduler, type SchedulerHooks } from "./scheduler.ts";
import { makeSites, type Sites } from "./sites.ts";

export interface DeliveryConfig {
  readonly remotePort: number;
  readonly connectionsPerSite: number;
  readonly maxInFlight: number;
  readonly pollMs: number;
  readonly retryBaseMs: number;
  readonly retryMaxMs: number;
  readonly connectTimeoutMs: number;
  readonly greetingTimeoutMs: number;
  readonly socketTimeoutMs: number;
  readonly messagesPerConnection: number;
  readonly maxRecipientsPerTransaction: number;
  readonly connectionIdleMs: number;
  readonly maxConnections: number;
  readonly siteConnections: Readonly<Record<string, number>>;
  readonly requireTls: ReadonlyArray<string>;
  readonly maxInFlightPerQueue: number;
  readonly maxAgeMs: number;
  readonly delayNoticeMs: number;
  readonly holdMs: number;
  readonly maxQueueWaitMs: number;
  readonly bounceRulesFile: string | undefined;
  readonly dsnMaxReturnBytes: number;
}

export interface OutboundDeps {
  readonly nodeId: string;
  readonly hostname: string;
  readonly delivery: DeliveryConfig;
  readonly nc: NatsConnection;
  readonly subjects: Subjects;
  readonly spool: Spool;
  readonly mailboxes: MailboxRouter;
  readonly supervisor: Supervisor;
  readonly resolve: (domain: string) => Effect.Effect<MailRoute, DnsTemporaryFailure | DnsPermanentFailure>;
  readonly isLocalUser: (address: string) => boolean;
  readonly metrics: {
    readonly registry: Registry;
    readonly delivered: Counter<"route">;
    readonly deferred: Counter<"route" | "category">;
    readonly failed: Counter<"route" | "category">;
  };
  readonly publish: (kind: string, event: Record<string, unknown>) => void;
  readonly log: (event: string, fields: Record<string, unknown>) => void;
}

export interface Outbound {
  readonly scheduler: Scheduler;
  readonly sites: Sites;
  /** Stops answering queue administration. */
  readonly close: () => void;
}

/** Fails when the bounce rules file cannot be read or has a bad rule. */
export const startOutbound = async (deps: OutboundDeps): Promise<Outbound> => {
  const { delivery, spool } = deps;
  const rules = delivery.bounceRulesFile ? await Effect.runPromise(loadRulesOrThrow(delivery.bounceRulesFile)) : [];
  const budget = makeConnectionBudget(delivery.maxConnections);
  const sites = makeSites(
    {
      heloName: deps.hostname,
      port: delivery.remotePort,
      connectTimeoutMs: delivery.connectTimeoutMs,
      greetingTimeoutMs: delivery.greetingTimeoutMs,
      socketTimeoutMs: delivery.socketTimeoutMs,
      messagesPerConnection: delivery.messagesPerConnection,
      maxRecipientsPerTransaction: delivery.maxRecipientsPerTransaction,
      connectionsPerSite: delivery.connectionsPerSite,
      siteConnections: delivery.siteConnections,
      idleMs: delivery.connectionIdleMs,
      maxQueueWaitMs: delivery.maxQueueWaitMs,
    },
    budget,
    deps.supervisor,
  );
  const scheduler = startScheduler({
    spool,
    dispatch: makeDispatch({ mailboxes: deps.mailboxes, sites, resolve: deps.resolve, requireTls: domainMatcher(delivery.requireTls) }),
    maxInFlight: delivery.maxInFlight,
    maxInFlightPerQueue: delivery.maxInFlightPerQueue,
    pollMs: delivery.pollMs,
    holdMs: delivery.holdMs,
    policy: {
      maxAgeMs: delivery.maxAgeMs,
      delayNoticeMs: delivery.delayNoticeMs,
      retry: { baseMs: delivery.retryBaseMs, maxMs: delivery.retryMaxMs },
      classify: makeClassifier(rules),
    },
    notices: makeNotices({ hostname: deps.hostname, routeOf: routeOf(deps.isLocalUser), maxReturnBytes: delivery.dsnMaxReturnBytes }, spool),
    hooks: { recorded: reporter(deps), log: deps.log },
  });
  registerGauges(deps.metrics.registry, { budget, spool, scheduler });
  const subscriptions: ReadonlyArray<Subscription> = serveQueueAdmin(deps.nc, deps.subjects, { nodeId: deps.nodeId, spool, scheduler, log: deps.log });
  return { scheduler, sites, close: () => subscriptions.forEach((s) => s.unsubscribe()) };
};

const loadRulesOrThrow = (path: string) =>
  loadRules(path).pipe(Effect.mapError((e: RulesFileError) => new Error(`delivery.bounceRulesFile ${e.path}: ${e.detail}`)));

/** Where a DSN to `address` goes from here: its mailbox when local, else its domain. */
const routeOf = (isLocalUser: (address: string) => boolean) => (address: string): Route =>
  isLocalUser(address) ? { kind: "local", user: address.toLowerCase() } : { kind: "remote", domain: domainOf(address) };

/** Events on NATS, metrics and log lines for every recorded outcome, after it is committed. */
const reporter = (deps: OutboundDeps): SchedulerHooks["recorded"] => {
  const dsnQueued = new Counter({ name: "tern_dsn_queued_total", help: "Delivery status notifications queued, by action", labelNames: ["action"], registers: [deps.metrics.registry] });
  const dsnSuppressed = new Counter({ name: "tern_dsn_suppressed_total", help: "Notices not sent: null sender or Auto-Submitted mail", registers: [deps.metrics.registry] });
  const expired = new Counter({ name: "tern_recipients_expired_total", help: "Recipients failed because they were still deferred at the queue lifetime", labelNames: ["route", "category"], registers: [deps.metrics.registry] });
  return (entry: QueueEntry, attempt, decision, notices) => {
    const route = entry.route.kind;
    for (const outcome of decision.outcomes) {
      const category = outcome.category ?? "other";
      if (outcome.status === "delivered") deps.metrics.delivered.inc({ route });
      else if (outcome.status === "deferred") deps.metrics.deferred.inc({ route, category });
      else deps.metrics.failed.inc({ route, category });
      if (outcome.status === "expired") expired.inc({ route, category });
      const fields = {
        msg: entry.messageId,
        entry: entry.id,
        server: attempt.server,
        ...(attempt.mx ? { mx: attempt.mx.host, ip: attempt.mx.ip } : {}),
        reply: outcome.reply,
        ...(outcome.category ? { category: outcome.category } : {}),
        attempts: entry.attempts + 1,
        ...(decision.record.requeued && outcome.status === "deferred" ? { requeued: decision.record.requeued, nextAttemptAt: decision.next?.nextAttemptAt } : {}),
      };
      deps.publish(outcome.status, { ...fields, recipient: outcome.recipient, route });
      deps.log(`recipient.${outcome.status}`, { ...fields, rcpt: outcome.recipient });
    }
    for (const dsn of notices.queued) {
      const action = String(dsn.attributes?.action);
      dsnQueued.inc({ action });
      deps.publish("dsn", { msg: dsn.id, for: entry.messageId, entry: entry.id, action, to: entry.sender });
      deps.log("dsn.queued", { msg: dsn.id, for: entry.messageId, entry: entry.id, action, rcpt: entry.sender });
    }
    if (notices.suppressed) {
      dsnSuppressed.inc();
      deps.log("dsn.suppressed", { msg: entry.messageId, entry: entry.id, from: entry.sender });
    }
  };
};

const registerGauges = (registry: Registry, sources: { budget: { open: () => number }; spool: Spool; scheduler: Scheduler }) => {
  new Gauge({ name: "tern_outbound_connections", help: "Outbound SMTP connections open (busy or idle)", registers: [registry], collect() {
    this.set(sources.budget.open());
  } });
  new Gauge({ name: "tern_queue_suspended", help: "Queues suspended by an operator", registers: [registry], collect() {
    this.set(sources.spool.suspended().length);
  } });
  new Gauge({ name: "tern_queue_held", help: "Queues held back after rate limiting or an unreachable destination", registers: [registry], collect() {
    const now = Date.now();
    this.set([...sources.scheduler.holds().values()].filter((until) => until > now).length);
  } });
};
