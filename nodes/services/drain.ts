// Draining (`tern node drain ID`): the Drainer (actors/drain/drainer.ts) with the node's
// scheduler, membership and blob transport; the operator's endpoint to start and follow
// it; and the endpoint where peers hand this node their queues (actors/drain/handoff.ts).
//
// While the node drains, the SMTP listener answers 421, the API refuses submits
// (Unavailable), /readyz and the member record say "draining" (so load balancers and the
// peers move away), and peers hand it nothing. Once its queue is empty `runNode` sees
// `Draining.finished` and stops the node gracefully (exit 0).
import { Clock, Context, Effect, Layer, Schema } from "effect";
import { Counter } from "prom-client";
import { makeDrainer, type Drainer as DrainerShape } from "../../actors/drain/drainer.ts";
import { serveHandOff } from "../../actors/drain/handoff.ts";
import { serveEndpoint, servedInScope, type Endpoint } from "../../actors/runtime/remote.ts";
import { DrainProgress, DrainRefused, DrainRequest } from "../../protocol/drain.ts";
import { isReplySubject } from "../../protocol/subjects.ts";
import { encodeFrame } from "../../protocol/wire.ts";
import { BlobTransfers, Nats } from "./cluster.ts";
import { Config, Draining, Log, Metrics } from "./core.ts";
import { Scheduler } from "./delivery.ts";
import { Membership } from "./membership.ts";
import { Spool, SpoolHealth } from "./storage.ts";

/** Deliveries in flight when the drain begins get this long to finish and be recorded; the rest are handed off (a possible duplicate, as after a crash). */
const DELIVERY_GRACE_MS = 60_000;
/** Hand-offs at once: each holds one body in memory. */
const CONCURRENCY = 4;
/** One hand-off: the peer's commit is an fsync, its pull of a large body has its own allowance. */
const HANDOFF_TIMEOUT_MS = 15_000;
/** Between passes that left mail behind (no peer, a peer refused or timed out). */
const RETRY_MS = 1_000;

export const drainEndpoint: Endpoint<DrainRequest, DrainProgress, DrainRefused> = {
  request: DrainRequest,
  response: DrainProgress,
  error: DrainRefused,
};

export class Drainer extends Context.Service<Drainer, DrainerShape>()("tern/Drainer") {
  static readonly layer = Layer.effect(
    Drainer,
    Effect.gen(function* () {
      const config = yield* Config;
      const log = yield* Log;
      const { nc, subjects } = yield* Nats;
      const { registry } = yield* Metrics;
      const spool = yield* Spool;
      const scheduler = yield* Scheduler;
      const membership = yield* Membership;
      const sent = new Counter<"outcome">({
        name: "tern_handoff_sent_total",
        help: "Messages this node handed to a peer while draining, by the peer's answer (committed, or duplicate: it held them already)",
        labelNames: ["outcome"],
        registers: [registry],
      });
      const failed = new Counter({ name: "tern_handoff_failures_total", help: "Hand-offs that failed and were tried again", registers: [registry] });
      sent.inc({ outcome: "committed" }, 0);
      sent.inc({ outcome: "duplicate" }, 0);
      // Operators following the drain: only their own inboxes, so a request cannot make the node publish elsewhere.
      const followers = new Set<string>();
      const follow = (inbox: string | undefined) => {
        if (inbox !== undefined && inbox.startsWith(`${subjects.operatorInbox}.`) && isReplySubject(subjects.cluster, inbox)) followers.add(inbox);
      };
      const drainer = yield* makeDrainer({
        nodeId: config.nodeId,
        transport: yield* BlobTransfers,
        subjects,
        spool,
        stopDeliveries: scheduler.stop(DELIVERY_GRACE_MS),
        peers: () => membership.members().filter((m) => m.node !== config.nodeId && m.ready && m.draining !== true).map((m) => m.node),
        concurrency: CONCURRENCY,
        timeoutMs: HANDOFF_TIMEOUT_MS,
        retryMs: RETRY_MS,
        signal: yield* Draining,
        hooks: {
          log,
          handedOff: (outcome) => sent.inc({ outcome }),
          failed: () => failed.inc(),
          changed: (progress) => {
            const frame = encodeFrame(Schema.encodeSync(DrainProgress)(progress));
            for (const inbox of followers) {
              try {
                nc.publish(inbox, frame);
              } catch {
                // the connection is closing: the operator asks again, or sees the node gone
              }
            }
          },
        },
      });
      yield* servedInScope((run) =>
        serveEndpoint(
          nc,
          subjects.nodeDrain(config.nodeId),
          drainEndpoint,
          (request) => (request._tag === "Start" ? Effect.andThen(Effect.sync(() => follow(request.follow)), drainer.start) : Effect.sync(drainer.progress)).pipe(Effect.map((value) => ({ value }))),
          { run },
        ),
      );
      return drainer;
    }),
  );
}

/** Peers' hand-offs to this node: taken while it is not draining itself and its spool commits. */
export const HandOffLayer = Layer.effectDiscard(
  Effect.gen(function* () {
    const config = yield* Config;
    const log = yield* Log;
    const { subjects } = yield* Nats;
    const { registry } = yield* Metrics;
    const spool = yield* Spool;
    const health = yield* SpoolHealth;
    const scheduler = yield* Scheduler;
    const draining = yield* Draining;
    const clock = yield* Clock.Clock;
    const received = new Counter<"outcome">({
      name: "tern_handoff_received_total",
      help: "Messages peers handed to this node, by outcome (committed, or duplicate: a retried hand-off it held already)",
      labelNames: ["outcome"],
      registers: [registry],
    });
    received.inc({ outcome: "committed" }, 0);
    received.inc({ outcome: "duplicate" }, 0);
    yield* serveHandOff(
      yield* BlobTransfers,
      subjects,
      {
        nodeId: config.nodeId,
        spool,
        refusal: () => (draining.isDraining() ? "draining" : !health.healthy() ? "the spool cannot commit now" : undefined),
        rememberMs: config.delivery.maxAgeMs,
        now: () => clock.currentTimeMillisUnsafe(),
        received: (outcome, request, entries) => {
          received.inc({ outcome });
          log("handoff.received", { queueId: request.message.id, peer: request.from, entries: entries.length, ...(outcome === "duplicate" ? { duplicate: true } : {}) });
          if (outcome === "committed") {
            const now = clock.currentTimeMillisUnsafe();
            scheduler.submit(entries.filter((entry) => entry.nextAttemptAt <= now));
          }
        },
      },
      HANDOFF_TIMEOUT_MS,
    );
  }),
);
