// Cluster membership. `Membership` reads the members bucket every second and keeps the
// member list, tells subscribers what changed (joins and leaves), logs each change
// (`cluster.member.up` / `cluster.member.down`) and publishes it as a node-up / node-down
// event; it also answers `tern cluster status` (any one node, from a fresh reading).
// This node's own record is written by `MemberAnnouncement` (member-announcement.ts).
import { Clock, Context, Duration, Effect, Layer, PubSub, Schedule, type Scope } from "effect";
import { openMembersBucket, type MembersBucket } from "../../cluster/membership.ts";
import { openEventsStream } from "../../cluster/events-stream.ts";
import { serveEndpoint, servedInScope } from "../../actors/runtime/remote.ts";
import { membersEndpoint } from "../cluster-members.ts";
import { clusterEventsTenant, type MemberEvent } from "../../protocol/events.ts";
import { membershipChanges, type MemberRecord, type MembershipChange } from "../../protocol/membership.ts";
import { Nats } from "./cluster.ts";
import { Config, Log, StartFailure } from "./core.ts";

/** How often the bucket is read for joins and leaves. */
const READ_EVERY_MS = 1_000;


export interface MembershipShape {
  /** The members as of the last reading, this node included once it announced itself. */
  readonly members: () => ReadonlyArray<MemberRecord>;
  /** Joins and leaves from now on, for as long as the scope lasts. */
  readonly changes: Effect.Effect<PubSub.Subscription<MembershipChange>, never, Scope.Scope>;
  /** When this node's process started (its record's `startedAt`). */
  readonly startedAt: number;
  readonly bucket: MembersBucket;
}

/**
 * A record under this node's id from another start is either a node still running with the
 * same id (a configuration mistake: two nodes would claim the same mailboxes and spool
 * identity) or what a crashed earlier run of this node left until the bucket's TTL drops it.
 * A running node rewrites its record every heartbeat, a crashed one does not: wait until
 * the next heartbeat is due (a little over one heartbeat after the record was written, at
 * most that long) and read again. Only a fresh record costs this wait.
 */
const refuseTwin = (
  found: MemberRecord | undefined,
  startedAt: number,
  timing: { readonly heartbeatMs: number; readonly ttlMs: number },
  readAgain: Effect.Effect<MemberRecord | undefined>,
): Effect.Effect<void, StartFailure> =>
  Effect.gen(function* () {
    if (found === undefined || found.startedAt === startedAt) return;
    const now = yield* Clock.currentTimeMillis;
    if (now - found.heartbeatAt > timing.ttlMs) return;
    const nextDue = found.heartbeatAt + timing.heartbeatMs + Math.min(1_000, timing.heartbeatMs / 2);
    yield* Effect.sleep(Duration.millis(Math.min(Math.max(0, nextDue - now), timing.heartbeatMs * 2)));
    const again = yield* readAgain;
    if (again === undefined || again.startedAt !== found.startedAt || again.heartbeatAt === found.heartbeatAt) return;
    return yield* new StartFailure({
      part: "membership",
      detail:
        `node id ${JSON.stringify(found.node)} is already running in this cluster (host ${found.host}, started ${new Date(found.startedAt).toISOString()}); ` +
        `give this node another nodeId, or stop the other one first`,
    });
  });

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
      const readMembers = bucket.read().pipe(Effect.orElseSucceed(() => ({ members: new Map<string, MemberRecord>(), deleted: new Set<string>() })));
      let current = (yield* readMembers).members;
      log("cluster.members", { members: [...current.keys()] });
      yield* refuseTwin(current.get(config.nodeId), startedAt, config.membership, Effect.map(readMembers, (reading) => reading.members.get(config.nodeId)));

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
          if (outcome._tag === "Failed") log("cluster.member.event.failed", { level: "warn", member: member.node, type: event.type, error: outcome.detail });
        });

      const report = (change: MembershipChange) =>
        Effect.gen(function* () {
          const { member } = change;
          if (change._tag === "Joined") log("cluster.member.up", { member: member.node, version: member.version, startedAt: new Date(member.startedAt).toISOString() });
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
            if (!unreadable) log("cluster.members.unreadable", { level: "warn", error: error.detail });
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
