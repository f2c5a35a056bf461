// The node's link to NATS and what lives directly on it: the cluster's subjects,
// mailbox ownership in KV, and the budget for pulling large frames.
import { Context, Effect, Layer } from "effect";
import type { NatsConnection } from "@nats-io/transport-node";
import { Counter } from "prom-client";
import { linkToNats } from "../../cluster/nats.ts";
import { followNatsStatus } from "../../cluster/nats-status.ts";
import { openMailboxOwners, type MailboxOwners } from "../../cluster/ownership.ts";
import { makeBlobTransport, type BlobTransport } from "../../actors/runtime/blobs.ts";
import { makePullBudget, type PullRefusal } from "../../actors/runtime/pull-budget.ts";
import { makeSubjects, type Subjects } from "../../protocol/subjects.ts";
import { registerGauge } from "../metrics.ts";
import { Config, Log, Metrics, StartFailure, starting } from "./core.ts";
import { Lmdb } from "./storage.ts";

export interface NatsShape {
  readonly nc: NatsConnection;
  readonly subjects: Subjects;
}

export class Nats extends Context.Service<Nats, NatsShape>()("tern/Nats") {
  /**
   * Requires Lmdb only to be released before it: draining NATS may still hand messages
   * to handlers that write to LMDB, so LMDB closes after the drain.
   */
  static readonly layer = Layer.effect(
    Nats,
    Effect.gen(function* () {
      const config = yield* Config;
      const log = yield* Log;
      yield* Lmdb;
      const subjects = makeSubjects(config.cluster);
      const link = yield* Effect.acquireRelease(
        starting("nats", () =>
          linkToNats({
            servers: config.nats.servers,
            security: config.nats,
            embedded: config.nats.embedded,
            dataDir: config.dataDir,
            clientName: `tern-${config.cluster}-${config.nodeId}`,
            subjects,
            inboxPrefix: subjects.nodeInbox(config.nodeId),
          }),
        ),
        // A connection already closed (NATS went away) has nothing left to drain.
        (link) => Effect.promise(() => link.close().catch(() => undefined)),
      );
      if (link.embedded) log("nats.embedded.started", { servers: config.nats.servers });
      log("nats.connected", { server: link.nc.getServer() });
      return { nc: link.nc, subjects };
    }),
  );
}

/**
 * Which node owns each mailbox, in NATS KV. The mailboxes configured to live on this node
 * are claimed by the Mailboxes layer, which also keeps this node's own record of them.
 */
export class MailboxOwnership extends Context.Service<MailboxOwnership, MailboxOwners>()("tern/MailboxOwnership") {
  static readonly layer = Layer.effect(
    MailboxOwnership,
    Effect.gen(function* () {
      const { nc, subjects } = yield* Nats;
      const config = yield* Config;
      return yield* openMailboxOwners(nc, subjects.mailboxOwnersBucket, config.nats.replicas).pipe(
        Effect.mapError((error) => new StartFailure({ part: "mailbox ownership", detail: error.detail })),
      );
    }),
  );
}

/** What /readyz reports about the cluster plane: the NATS connection and the ownership bucket. */
export class ClusterHealth extends Context.Service<ClusterHealth, { readonly problems: () => ReadonlyArray<string> }>()("tern/ClusterHealth") {
  static readonly layer = Layer.effect(
    ClusterHealth,
    Effect.gen(function* () {
      const { nc } = yield* Nats;
      const log = yield* Log;
      const owners = yield* MailboxOwnership;
      const status = yield* Effect.acquireRelease(
        Effect.sync(() =>
          followNatsStatus(
            nc,
            (detail) => log("nats.error", { level: "warn", error: detail }),
            (change) => log(change._tag === "Lost" ? "nats.disconnected" : "nats.reconnected", { level: change._tag === "Lost" ? "warn" : "info", server: change.server }),
          )),
        (status) => Effect.sync(() => status.stop()),
      );
      return {
        // While NATS is away the bucket cannot be checked either: the connection is the reason to report.
        problems: () => {
          const connection = status.problem();
          const bucket = owners.problem();
          return connection !== undefined ? [connection] : bucket !== undefined ? [bucket] : [];
        },
      };
    }),
  );
}

/**
 * The node's connection as the chunked path uses it (actors/runtime/blobs.ts), with the one
 * pull budget every endpoint of this node shares: bodies pulled from other nodes count
 * against `transfers.*`, and above a cap the asker is told to come back later.
 */
export class BlobTransfers extends Context.Service<BlobTransfers, BlobTransport>()("tern/BlobTransfers") {
  static readonly layer = Layer.effect(
    BlobTransfers,
    Effect.gen(function* () {
      const config = yield* Config;
      const { nc, subjects } = yield* Nats;
      const { registry } = yield* Metrics;
      const refused = new Counter<"reason">({
        name: "tern_blob_pulls_refused_total",
        help: "Pulls of large frames refused at a cap (bytes, peer-bytes, concurrency); the asker retries",
        labelNames: ["reason"],
        registers: [registry],
      });
      for (const reason of ["bytes", "peer-bytes", "concurrency"] satisfies PullRefusal[]) refused.inc({ reason }, 0);
      const budget = makePullBudget(
        {
          maxBytes: config.transfers.maxPullBytes,
          maxBytesPerPeer: config.transfers.maxPullBytesPerPeer,
          maxConcurrent: config.transfers.maxConcurrentPulls,
        },
        { onRefused: (reason) => refused.inc({ reason }) },
      );
      registerGauge(registry, "tern_blob_pull_bytes", "Bytes reserved by pulls of large frames in progress", () => budget.inUse().bytes);
      registerGauge(registry, "tern_blob_pulls", "Pulls of large frames in progress", () => budget.inUse().pulls);
      return makeBlobTransport(nc, subjects, config.nodeId, budget);
    }),
  );
}
