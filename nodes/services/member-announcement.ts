// This node's record in the members bucket (nodes/services/membership.ts), written on the
// heartbeat. Built after the listeners (their ports are in the record), so it is released
// first when the node stops: the node deletes its record before it stops serving, and the
// others see it leave at their next reading.
import { Clock, Duration, Effect, Layer, Schedule } from "effect";
import type { MemberRecord } from "../../protocol/membership.ts";
import { ClusterHealth } from "./cluster.ts";
import { Config, Draining, Log, Supervisor } from "./core.ts";
import { Sites } from "./delivery.ts";
import { HttpListener, Pop3Listener, readinessOf, SmtpListener } from "./listeners.ts";
import { ternVersion } from "../install.ts";
import { Membership } from "./membership.ts";
import { Spool } from "./storage.ts";

/** A graceful stop waits this long at most for its record to be deleted. */
const LEAVE_TIMEOUT_MS = 2_000;

/** This node's record on the heartbeat, deleted when the node stops. */
export const MemberAnnouncement = Layer.effectDiscard(
  Effect.gen(function* () {
    const config = yield* Config;
    const log = yield* Log;
    const membership = yield* Membership;
    const spool = yield* Spool;
    const sites = yield* Sites;
    const drainer = yield* Draining;
    const problems = readinessOf(yield* Supervisor, yield* ClusterHealth, drainer);
    const { smtp, smtps } = yield* SmtpListener;
    const ports = { smtp, smtps, pop3: (yield* Pop3Listener).port, http: (yield* HttpListener).port };

    const record = Effect.map(Clock.currentTimeMillis, (now): MemberRecord => {
      const reasons = problems();
      return {
        node: config.nodeId,
        version: ternVersion,
        startedAt: membership.startedAt,
        heartbeatAt: now,
        ready: reasons.length === 0,
        problems: reasons,
        ...(drainer.isDraining() ? { draining: true } : {}),
        queueDepth: spool.depth(),
        outboundConnections: sites.list().reduce((sum, site) => sum + site.connections, 0),
        host: config.listen.host,
        ports,
      };
    });

    let failing = false;
    const heartbeat = Effect.flatMap(record, membership.bucket.put).pipe(
      Effect.tap(() => Effect.sync(() => {
        if (failing) log("cluster.heartbeat.resumed", {});
        failing = false;
      })),
      Effect.catch((error) =>
        Effect.sync(() => {
          if (!failing) log("cluster.heartbeat.failed", { level: "warn", error: error.detail });
          failing = true;
        })),
    );

    // Added before the heartbeat fiber, so released after it: no heartbeat rewrites the record once deleted.
    yield* Effect.addFinalizer(() =>
      membership.bucket.remove(config.nodeId).pipe(
        Effect.timeout(Duration.millis(LEAVE_TIMEOUT_MS)),
        Effect.matchEffect({
          onSuccess: () => Effect.sync(() => log("cluster.member.leaving", {})),
          onFailure: (error) => Effect.sync(() => log("cluster.member.leave.failed", { level: "warn", error: "detail" in error ? error.detail : String(error) })),
        }),
      ));
    yield* heartbeat;
    yield* Effect.forkScoped(Effect.repeat(heartbeat, Schedule.spaced(Duration.millis(config.membership.heartbeatMs))));
  }),
);
