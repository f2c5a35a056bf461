// Cluster membership. `Membership` reads the members bucket every second and keeps the
// member list, tells subscribers what changed (joins and leaves), logs each change
// (`cluster.member.up` / `cluster.member.down`) and publishes it as a node-up / node-down
// event; it also answers `tern cluster status` (any one node, from a fresh reading).
// `MemberAnnouncement` writes this node's record on the heartbeat and is built after the
// listeners (their ports are in the record), so it is released first when the node
// stops: the node deletes its record before it stops serving, and the others see it
// leave at their next reading.
import { readFileSync } from "node:fs";
import { Clock, Context, Duration, Effect, Layer, PubSub, Schedule, type Scope } from "effect";
import { openMembersBucket, type MembersBucket } from "../../cluster/membership.ts";
import { openEventsStream } from "../../cluster/events-stream.ts";
import { serveEndpoint, servedInScope, type Endpoint } from "../../actors/runtime/remote.ts";
import { clusterEventsTenant, type MemberEvent } from "../../protocol/events.ts";
import {
  MembersReply,
  MembersRequest,
  MembersUnavailable,
  membershipChanges,
  type MemberRecord,
  type MembershipChange,
} from "../../protocol/membership.ts";
import { ClusterHealth, Nats } from "./cluster.ts";
import { Config, Draining, Log, StartFailure, Supervisor } from "./core.ts";
import { Sites } from "./delivery.ts";
import { HttpListener, Pop3Listener, readinessOf, SmtpListener } from "./listeners.ts";
import { Spool } from "./storage.ts";

/** How often the bucket is read for joins and leaves. */
const READ_EVERY_MS = 1_000;
/** A graceful stop waits this long at most for its record to be deleted. */
const LEAVE_TIMEOUT_MS = 2_000;

export const ternVersion: string = (JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as { version: string }).version;

export const membersEndpoint: Endpoint<MembersRequest, MembersReply, MembersUnavailable> = {
  request: MembersRequest,
  response: MembersReply,
  error: MembersUnavailable,
};

export interface MembershipShape {
  /** The members as of the last reading, this node included once it announced itself. */
  readonly members: () => ReadonlyArray<MemberRecord>;
  /** Joins and leaves from now on, for as long as the scope lasts. */
  readonly changes: Effect.Effect<PubSub.Subscription<MembershipChange>, never, Scope.Scope>;
  /** When this node's process started (its record's `startedAt`). */
  readonly startedAt: number;
  readonly bucket: MembersBucket;
}

const sortedByNode = (members: Iterable<MemberRecord>) => [...members].sort((a, b) => a.node.localeCompare(b.node));

export class Membership extends Context.Service<Membership, MembershipShape>()("tern/Membership") {
  static readonly layer = Layer.effect(
    Membership,
    Effect.gen(function* () {
      const config = yield* Config;
      const log = yield* Log;
      const { nc, subjects } = yield* Nats;
      const startedAt = yield* Clock.currentTimeMillis;
      const bucket = yield* openMembersBucket(nc, subjects.membersBucket, { ttlMs: config.membership.ttlMs, replicas: config.nats.replicas }).pipe(
        Effect.mapError((error) => new StartFailure({ part: "membership", detail: error.detail })),
      );
      const events = openEventsStream(nc, subjects, config.events);
      const pubsub = yield* Effect.acquireRelease(PubSub.unbounded<MembershipChange>(), PubSub.shutdown);
      // The first reading is where this node comes in: who is there already is no change.
      let current = (yield* bucket.read().pipe(Effect.orElseSucceed(() => ({ members: new Map<string, MemberRecord>(), deleted: new Set<string>() })))).members;
      log("cluster.members", { members: [...current.keys()] });

      const publish = (change: MembershipChange) =>
        Effect.gen(function* () {
          const { member } = change;
          const up = change._tag === "Joined";
          const event: MemberEvent = {
            type: up ? "node-up" : "node-down",
            // The same id from every node that saw it: JetStream keeps one.
            id: `member.${member.node}.${member.startedAt}.${up ? "up" : "down"}`,
            time: yield* Clock.currentTimeMillis,
            node: config.nodeId,
            tenant: clusterEventsTenant,
            domain: "",
            member: member.node,
            version: member.version,
            startedAt: member.startedAt,
            ...(change._tag === "Left" ? { reason: change.reason } : {}),
          };
          const outcome = yield* events.publishOne(event);
          if (outcome._tag === "Failed") log("cluster.member.event.failed", { level: "warn", member: member.node, type: event.type, detail: outcome.detail });
        });

      const report = (change: MembershipChange) =>
        Effect.gen(function* () {
          const { member } = change;
          if (change._tag === "Joined") log("cluster.member.up", { member: member.node, version: member.version, startedAt: member.startedAt });
          else log("cluster.member.down", { level: "warn", member: member.node, reason: change.reason });
          yield* PubSub.publish(pubsub, change);
          yield* publish(change);
        });

      let unreadable = false;
      const readOnce = bucket.read().pipe(
        Effect.flatMap((reading) =>
          Effect.gen(function* () {
            if (unreadable) log("cluster.members.readable", {});
            unreadable = false;
            const changes = membershipChanges(current, reading.members, reading.deleted);
            current = reading.members;
            yield* Effect.forEach(changes, report, { discard: true });
          })),
        // Nobody is declared gone while the bucket cannot be read: the list stays as it was.
        Effect.catch((error) =>
          Effect.sync(() => {
            if (!unreadable) log("cluster.members.unreadable", { level: "warn", detail: error.detail });
            unreadable = true;
          })),
      );
      yield* Effect.forkScoped(Effect.repeat(readOnce, Schedule.spaced(Duration.millis(READ_EVERY_MS))));

      const answer = () =>
        bucket.read().pipe(Effect.map((reading) => ({ value: { answeredBy: config.nodeId, members: sortedByNode(reading.members.values()) } })));
      yield* servedInScope((run) => serveEndpoint(nc, subjects.clusterMembers, membersEndpoint, answer, { run, queue: subjects.clusterMembersQueueGroup }));

      return {
        members: () => sortedByNode(current.values()),
        changes: PubSub.subscribe(pubsub),
        startedAt,
        bucket,
      };
    }),
  );
}

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
          if (!failing) log("cluster.heartbeat.failed", { level: "warn", detail: error.detail });
          failing = true;
        })),
    );

    // Added before the heartbeat fiber, so released after it: no heartbeat rewrites the record once deleted.
    yield* Effect.addFinalizer(() =>
      membership.bucket.remove(config.nodeId).pipe(
        Effect.timeout(Duration.millis(LEAVE_TIMEOUT_MS)),
        Effect.matchEffect({
          onSuccess: () => Effect.sync(() => log("cluster.member.leaving", {})),
          onFailure: (error) => Effect.sync(() => log("cluster.member.leave.failed", { level: "warn", detail: "detail" in error ? error.detail : String(error) })),
        }),
      ));
    yield* heartbeat;
    yield* Effect.forkScoped(Effect.repeat(heartbeat, Schedule.spaced(Duration.millis(config.membership.heartbeatMs))));
  }),
);
