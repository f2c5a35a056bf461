// Mailboxes: the actors for the mailboxes this node owns, and the router that sends
// every mailbox ask (delivery, POP3) to whichever node owns the mailbox, as placement
// decides from this node's own record of what it holds, the KV and the other nodes; and
// mailbox moves between nodes (`tern mailbox move`, actors/mailbox/move.ts).
import { Clock, Context, Effect, Layer } from "effect";
import { makeLocalMailboxes, passivateIdle, type LocalMailboxes as LocalMailboxesShape } from "../../actors/mailbox/actor.ts";
import { moveCrashFrom, withFaults } from "../../actors/mailbox/faults.ts";
import { makeMailboxMetrics, type MailboxMetrics as MailboxMetricsShape } from "../../actors/mailbox/metrics.ts";
import { openHoldings } from "../../actors/mailbox/holdings.ts";
import { makePlacement } from "../../actors/mailbox/placement.ts";
import { makeMailboxMoves } from "../../actors/mailbox/move.ts";
import { openMoveRecords } from "../../actors/mailbox/move-records.ts";
import { makeMailboxRouter, type MailboxRouter } from "../../actors/mailbox/router.ts";
import { openMailboxStore } from "../../actors/mailbox/store.ts";
import { BlobTransfers, MailboxOwnership, Nats } from "./cluster.ts";
import { Config, Log, Metrics, StartFailure, Supervisor } from "./core.ts";
import { Users } from "./identity.ts";
import { Lmdb } from "./storage.ts";
import { registerGauge } from "../metrics.ts";

/** In-flight mailbox writes get this long to finish when the node stops. */
const STOP_GRACE_MS = 10_000;

export class MailboxMetrics extends Context.Service<MailboxMetrics, MailboxMetricsShape>()("tern/MailboxMetrics") {}

export class LocalMailboxes extends Context.Service<LocalMailboxes, LocalMailboxesShape>()("tern/LocalMailboxes") {
  /** Also provides MailboxMetrics: the POP3 listener counts logins there. */
  static readonly layer = Layer.effectContext(
    Effect.gen(function* () {
      const config = yield* Config;
      const users = yield* Users;
      const registry = (yield* Metrics).registry;
      const nats = yield* Nats;
      const metrics = makeMailboxMetrics(registry);
      const mailboxes = yield* makeLocalMailboxes({
        store: openMailboxStore(yield* Lmdb),
        supervisor: yield* Supervisor,
        knows: users.exists,
        quotaOf: (user) => config.mailbox.quotas[user] ?? config.mailbox.quotaBytes,
        idleMs: config.mailbox.idleMs,
        askTimeoutMs: config.mailbox.askTimeoutMs,
        // After every change, the owner tells IMAP sessions on every node (fire and forget: a lost notice only delays a resync to the next NOOP).
        observer: {
          ...withFaults(metrics.observer, process.env),
          changed: (user) => {
            // publish throws once the connection is closed or draining; the write is committed regardless.
            try {
              nats.nc.publish(nats.subjects.mailboxChanged(user));
            } catch {
              // best effort
            }
          },
        },
        stopGraceMs: STOP_GRACE_MS,
      });
      registerGauge(registry, "tern_mailbox_actors", "Mailbox actors alive on this node", mailboxes.active);
      yield* passivateIdle(mailboxes, Math.max(1_000, Math.floor(config.mailbox.idleMs / 2)));
      return LocalMailboxes.context(mailboxes).pipe(Context.add(MailboxMetrics, metrics));
    }),
  );
}

export class Mailboxes extends Context.Service<Mailboxes, MailboxRouter>()("tern/Mailboxes") {
  /**
   * Serves this node's mailboxes on NATS until the node stops. At start, claims the
   * mailboxes configured to live here; a claim the KV refuses (another node took the
   * mailbox first) is logged, and the mail goes where the mailbox is.
   */
  static readonly layer = Layer.effect(
    Mailboxes,
    Effect.gen(function* () {
      const config = yield* Config;
      const log = yield* Log;
      const { nc, subjects } = yield* Nats;
      const users = yield* Users;
      const holdings = yield* openHoldings(yield* Lmdb, yield* Clock.currentTimeMillis).pipe(
        Effect.mapError((error) => new StartFailure({ part: "mailbox holdings", detail: error.detail })),
      );
      const lmdb = yield* Lmdb;
      const records = openMoveRecords(lmdb);
      const owners = yield* MailboxOwnership;
      const transport = yield* BlobTransfers;
      const local = yield* LocalMailboxes;
      const placement = makePlacement({
        nodeId: config.nodeId,
        nc,
        subjects,
        owners,
        holdings,
        homeOf: users.homeOf,
        movingTo: (user) => records.outgoing(user)?.to,
        log,
      });
      const router = makeMailboxRouter({
        nodeId: config.nodeId,
        transport,
        subjects,
        placement,
        local,
        timeoutMs: config.mailbox.askTimeoutMs,
      });
      const moves = makeMailboxMoves({
        nodeId: config.nodeId,
        transport,
        subjects,
        store: openMailboxStore(lmdb),
        records,
        holdings,
        owners,
        placement,
        local,
        accountOf: users.accountOf,
        log,
        stepTimeoutMs: config.mailbox.moveStepTimeoutMs,
        freezeGraceMs: config.mailbox.askTimeoutMs,
        crashAt: moveCrashFrom(process.env),
      });
      // Mailboxes left frozen by a move cut short stay frozen until it settles: before anything is served.
      yield* moves.restore();
      yield* router.serve();
      yield* moves.serve();
      // Each claim of a mailbox not held here first asks the other nodes (a few hundred ms): in parallel.
      yield* Effect.forEach(
        config.users.filter((u) => u.home === config.nodeId),
        (user) =>
          placement.claimHome(user.address).pipe(
            Effect.mapError((error) => new StartFailure({ part: "mailbox ownership", detail: error.detail })),
            Effect.tap((owner) => Effect.sync(() => (owner !== config.nodeId ? log("mailbox.claim.refused", { user: user.address, owner }) : undefined))),
          ),
        { concurrency: 16, discard: true },
      );
      return router;
    }),
  );
}
