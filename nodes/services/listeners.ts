// The node's listeners: SMTP (plain and implicit TLS), POP3, IMAP (plain and implicit TLS) and HTTP (/metrics,
// /healthz, /readyz). Each is released first when the node stops, because each
// depends on what serves it: no new client arrives while the rest winds down.
import type { Server } from "node:http";
import { Context, Effect, Layer } from "effect";
import { makeMaildropAccess } from "../../actors/retriever/access.ts";
import { startPop3Server } from "../../actors/retriever/pop3-server.ts";
import { makeImapAccess } from "../../actors/retriever/imap-access.ts";
import { startImapServer } from "../../actors/retriever/imap-server.ts";
import { Counter } from "prom-client";
import { Nats } from "./cluster.ts";
import { makeClientGuard } from "../../actors/session/guard.ts";
import { startSmtpListeners, type SessionDeps } from "../../actors/session/smtp.ts";
import { makeInboundAuthenticator } from "../../actors/authentication/authenticator.ts";
import { readinessProblems } from "../../actors/runtime/supervisor.ts";
import { warnIfDescriptorsShort } from "../fd-limit.ts";
import { startHttp } from "../http.ts";
import { ClusterHealth } from "./cluster.ts";
import { eventSourceOf } from "./events.ts";
import { Config, Draining, Log, Metrics, starting, Supervisor } from "./core.ts";
import { Dkim, Tls, Users } from "./identity.ts";
import { LoginThrottles } from "./logins.ts";
import { MailboxMetrics, Mailboxes } from "./mailboxes.ts";
import { Scheduler } from "./delivery.ts";
import { Resolver } from "./resolver.ts";
import { Spool, SpoolHealth } from "./storage.ts";
import { Suppressions } from "./suppression.ts";
import { choosePool } from "../../actors/delivery/pools.ts";
import { Feedback } from "./feedback.ts";
import { feedbackIntake } from "./feedback-intake.ts";

export class SmtpListener extends Context.Service<SmtpListener, { readonly smtp: number; readonly smtps: number }>()("tern/SmtpListener") {
  static readonly layer = Layer.effect(
    SmtpListener,
    Effect.gen(function* () {
      const config = yield* Config;
      const log = yield* Log;
      const metrics = yield* Metrics;
      const spoolHealth = yield* SpoolHealth;
      const scheduler = yield* Scheduler;
      const users = yield* Users;
      const tls = yield* Tls;
      const drainer = yield* Draining;
      const run = Effect.runPromiseWith(yield* Effect.context<never>());
      const { records } = yield* Resolver;
      const deps: SessionDeps = {
        run,
        config: {
          hostname: config.hostname,
          localDomains: config.localDomains,
          isLocalUser: users.exists,
          catchAll: config.smtp.catchAll,
          postmaster: config.postmaster,
          trustedNetworks: config.trustedNetworks,
          maxMessageBytes: config.limits.maxMessageBytes,
          maxRecipients: config.limits.maxRecipients,
          maxErrors: config.smtp.maxErrors,
          bareLineEndings: config.smtp.bareLineEndings,
          longLines: config.smtp.longLines,
          accept8bitWithoutBodyParameter: config.smtp.accept8bitWithoutBodyParameter,
          authRequiresTls: config.smtp.authRequiresTls,
          idleTimeoutMs: config.smtp.idleTimeoutMs,
        },
        spool: yield* Spool,
        events: eventSourceOf(config),
        users,
        guard: yield* makeClientGuard(config.smtp),
        throttle: (yield* LoginThrottles).smtp,
        tls,
        dkim: yield* Dkim,
        inbound: config.inbound.authenticate ? makeInboundAuthenticator(config.inbound, { records, run }) : undefined,
        spoolHealthy: spoolHealth.healthy,
        spoolFailed: spoolHealth.failed,
        draining: drainer.isDraining,
        choosePool: (inputs) => choosePool(config.delivery.pools, inputs),
        suppression: (yield* Suppressions).check,
        feedback: yield* feedbackIntake,
        marks: (yield* Feedback)?.marks,
        hooks: {
          accepted: (messageId, entries, bytes) => {
            metrics.accepted.inc();
            metrics.acceptedBytes.inc(bytes);
            metrics.messageSize.observe(bytes);
            scheduler.submit(entries);
          },
          rejected: (reason) => metrics.rejected.inc({ reason }),
          authenticated: metrics.inboundAuthenticated,
          claimedResultsRemoved: metrics.claimedResultsRemoved,
          connections: metrics.smtpConnection,
          log,
        },
      };
      const listeners = yield* Effect.acquireRelease(
        starting("smtp listener", () => startSmtpListeners({
            host: config.listen.host,
            ports: { smtp: config.listen.smtp, smtps: config.listen.smtps },
            maxConnections: { smtp: config.smtp.maxConnections, smtps: config.smtp.maxSmtpsConnections },
            deps,
          })),
        (listeners) => Effect.promise(() => listeners.close()),
      );
      return listeners.ports;
    }),
  );
}

export class Pop3Listener extends Context.Service<Pop3Listener, { readonly port: number }>()("tern/Pop3Listener") {
  static readonly layer = Layer.effect(
    Pop3Listener,
    Effect.gen(function* () {
      const config = yield* Config;
      const log = yield* Log;
      const tls = yield* Tls;
      const access = makeMaildropAccess(yield* Users, yield* Mailboxes, { leaseMs: config.pop3.lockLeaseMs });
      const { onLogin } = yield* MailboxMetrics;
      const { pop3Connection } = yield* Metrics;
      const services = yield* Effect.context<never>();
      const throttle = (yield* LoginThrottles).pop3;
      const server = yield* Effect.acquireRelease(
        starting("pop3 listener", () =>
          startPop3Server({
            host: config.listen.host,
            port: config.listen.pop3,
            hostname: config.hostname,
            nodeId: config.nodeId,
            services,
            access,
            tls: { key: tls.key, cert: tls.cert },
            plaintextLoginNetworks: config.pop3.plaintextLoginNetworks,
            throttle,
            failureDelayMs: config.pop3.failedLoginDelayMs,
            onLogin,
            maxConnections: config.pop3.maxConnections,
            onConnection: pop3Connection,
            log,
          }),
        ),
        (server) => Effect.promise(() => server.close()),
      );
      return { port: server.port };
    }),
  );
}

export class ImapListener extends Context.Service<ImapListener, { readonly imap: number; readonly imaps: number }>()("tern/ImapListener") {
  static readonly layer = Layer.effect(
    ImapListener,
    Effect.gen(function* () {
      const config = yield* Config;
      const log = yield* Log;
      const tls = yield* Tls;
      const { nc, subjects } = yield* Nats;
      const { registry, imapConnection } = yield* Metrics;
      const logins = new Counter<"outcome">({ name: "tern_imap_logins_total", help: "IMAP login attempts, by outcome", labelNames: ["outcome"], registers: [registry] });
      for (const outcome of ["ok", "failed", "throttled", "abandoned", "unavailable", "plaintext-refused"]) logins.inc({ outcome }, 0);
      // Change notices from the owner nodes (their mailbox actors publish after each write).
      const watch = (user: string, onChange: () => void) => {
        const subscription = nc.subscribe(subjects.mailboxChanged(user), { callback: (error) => (error ? undefined : onChange()) });
        return () => subscription.unsubscribe();
      };
      const access = makeImapAccess(yield* Users, yield* Mailboxes, watch);
      const services = yield* Effect.context<never>();
      const throttle = (yield* LoginThrottles).imap;
      const server = yield* Effect.acquireRelease(
        starting("imap listener", () =>
          startImapServer({
            host: config.listen.host,
            port: config.listen.imap,
            tlsPort: config.listen.imaps,
            hostname: config.hostname,
            services,
            access,
            tls: { key: tls.key, cert: tls.cert },
            plaintextLoginNetworks: config.imap.plaintextLoginNetworks,
            throttle,
            failureDelayMs: config.imap.failedLoginDelayMs,
            idleTimeoutMs: config.imap.idleTimeoutMs,
            maxLiteralOctets: config.limits.maxMessageBytes,
            maxConnections: config.imap.maxConnections,
            onConnection: imapConnection,
            onLogin: (outcome) => logins.inc({ outcome }),
            log,
          }),
        ),
        (server) => Effect.promise(() => server.close()),
      );
      return { imap: server.port, imaps: server.tlsPort ?? 0 };
    }),
  );
}

export class HttpListener extends Context.Service<HttpListener, { readonly port: number }>()("tern/HttpListener") {
  /** `/readyz` fails while the node drains, an actor is escalated, NATS is away or the ownership bucket is unusable. */
  static readonly layer = Layer.effect(
    HttpListener,
    Effect.gen(function* () {
      const config = yield* Config;
      const supervisor = yield* Supervisor;
      const cluster = yield* ClusterHealth;
      const drainer = yield* Draining;
      const { registry } = yield* Metrics;
      const http = yield* Effect.acquireRelease(
        starting("http listener", () =>
          startHttp(config.http.host, config.http.port, registry, {
            problems: readinessOf(supervisor, cluster, drainer),
          }),
        ),
        ({ server }) => Effect.promise(() => closeHttp(server)),
      );
      return { port: http.port };
    }),
  );
}

/** What /readyz reports (and the node's member record): a drain, escalated actors, then the cluster plane's problems. */
export const readinessOf =
  (supervisor: Context.Service.Shape<typeof Supervisor>, cluster: Context.Service.Shape<typeof ClusterHealth>, drainer: Context.Service.Shape<typeof Draining>) =>
  (): ReadonlyArray<string> => [
    ...(drainer.isDraining() ? ["draining: handing the queue to other nodes, taking no mail"] : []),
    ...readinessProblems(supervisor),
    ...cluster.problems(),
  ];

/** Warns at start when the connection caps cannot fit the process's file-descriptor limit. */
export const DescriptorCheck = Layer.effectDiscard(
  Effect.gen(function* () {
    yield* warnIfDescriptorsShort(yield* Config, yield* Log);
  }),
);

const closeHttp = (server: Server) => new Promise<void>((resolve) => server.close(() => resolve()));
