// The NATS application API of the node (docs/api.md): submit and chunked uploads, served
// in the cluster's API queue group under the NATS micro conventions. A submit commits
// through the same spool, policy and headers as SMTP submission, and what it commits is
// handed on as an SMTP commit is (its accepted events are committed with it): metrics, the scheduler (for entries
// due now; scheduled ones wait for the scheduler's scan). Idempotency keys are claimed in
// the cluster's KV bucket and other nodes ask this one for the replies it recorded
// (actors/api/idempotency.ts); expired records are pruned in the background.
import { Clock, Effect, Layer, Schedule } from "effect";
import { askOwnerOverNats, makeIdempotency, serveRecorded } from "../../actors/api/idempotency.ts";
import { serveApi } from "../../actors/api/server.ts";
import { makeSubmitter } from "../../actors/api/submit.ts";
import { makeUploads } from "../../actors/api/uploads.ts";
import { openApiKeys } from "../../cluster/api-keys.ts";
import type { StoreError } from "../../protocol/errors.ts";
import { Nats } from "./cluster.ts";
import { Config, Draining, Log, Metrics } from "./core.ts";
import { Scheduler } from "./delivery.ts";
import { eventSourceOf } from "./events.ts";
import { MessageStatus } from "./status.ts";
import { Dkim, Users } from "./identity.ts";
import { Feedback } from "./feedback.ts";
import { Spool, SpoolHealth } from "./storage.ts";
import { Suppressions, tenantScopes } from "./suppression.ts";

/** Room left in a chunk message for its headers, below the server's max payload. */
const CHUNK_HEADROOM = 8 * 1024;
const PRUNE_EVERY_MS = 60_000;
const PRUNE_BATCH = 1_000;
/**
 * How long a node waits for the node that took an idempotency key first: that node
 * answers once its commit of the key ended (an fsync), so beyond this it is taken as down.
 */
const OWNER_TIMEOUT_MS = 5_000;

export const ApiLayer = Layer.effectDiscard(
  Effect.gen(function* () {
    const config = yield* Config;
    const log = yield* Log;
    const metrics = yield* Metrics;
    const { nc, subjects } = yield* Nats;
    const spool = yield* Spool;
    const spoolHealth = yield* SpoolHealth;
    const scheduler = yield* Scheduler;
    const users = yield* Users;
    const clock = yield* Clock.Clock;
    const suppressions = yield* Suppressions;
    const submitter = yield* makeSubmitter({
      config: {
        nodeId: config.nodeId,
        hostname: config.hostname,
        tenants: config.api.tenants,
        localDomains: config.localDomains,
        isUserAddress: users.isUserAddress,
        recipients: {
          localDomains: config.localDomains,
          isLocalUser: users.exists,
          catchAll: config.smtp.catchAll,
          postmaster: config.postmaster,
          trustedNetworks: config.trustedNetworks,
        },
        maxMessageBytes: config.limits.maxMessageBytes,
        maxRecipients: config.limits.maxRecipients,
        maxSubmitsPerTenantPerMinute: config.api.maxSubmitsPerTenantPerMinute,
        maxConcurrentSubmits: config.api.maxConcurrentSubmits,
        maxSendAtAheadMs: config.api.maxSendAtAheadMs,
        pools: config.delivery.pools,
        longLines: config.smtp.longLines,
        idempotencyTtlMs: config.api.idempotencyTtlMs,
      },
      spool,
      events: eventSourceOf(config),
      isLocalUser: users.exists,
      spoolHealthy: spoolHealth.healthy,
      spoolFailed: spoolHealth.failed,
      draining: (yield* Draining).isDraining,
      dkim: yield* Dkim,
      suppression: suppressions.check,
      marks: (yield* Feedback)?.marks,
      idempotency: makeIdempotency({
        nodeId: config.nodeId,
        keys: openApiKeys(nc, subjects.apiKeysBucket, config.api.idempotencyTtlMs, config.nats.replicas),
        askOwner: askOwnerOverNats(nc, subjects, OWNER_TIMEOUT_MS),
      }),
      hooks: {
        accepted: (messageId, entries, bytes, labels) => {
          metrics.accepted.inc();
          metrics.acceptedBytes.inc(bytes);
          metrics.messageSize.observe(bytes);
          const now = clock.currentTimeMillisUnsafe();
          scheduler.submit(entries.filter((entry) => entry.nextAttemptAt <= now));
        },
        rejected: (code) => metrics.rejected.inc({ reason: `api-${code}` }),
        log,
      },
    });
    const uploads = yield* makeUploads(
      submitter,
      {
        maxUploads: config.api.maxUploads,
        idleTimeoutMs: config.api.uploadIdleTimeoutMs,
        maxChunkBytes: Math.max(1024, (nc.info?.max_payload ?? 1024 * 1024) - CHUNK_HEADROOM),
        maxMessageBytes: config.limits.maxMessageBytes,
      },
      log,
    );
    // Batch after batch until one comes back short: a fixed batch a minute would fall behind a busy API.
    const pruneAll = (now: number, removedSoFar: number): Effect.Effect<number, StoreError> =>
      Effect.flatMap(spool.forgetExpired(now, PRUNE_BATCH), (removed) =>
        removed < PRUNE_BATCH ? Effect.succeed(removedSoFar + removed) : pruneAll(now, removedSoFar + removed),
      );
    const prune = Effect.flatMap(Clock.currentTimeMillis, (now) => pruneAll(now, 0)).pipe(
      Effect.tap((removed) => Effect.sync(() => removed > 0 && log("api.idempotency.pruned", { removed }))),
      Effect.catch((error) => Effect.sync(() => log("api.idempotency.prune.failed", { error: error.detail }))),
    );
    yield* Effect.forkScoped(Effect.repeat(prune, Schedule.spaced(PRUNE_EVERY_MS)));
    const status = yield* MessageStatus;
    yield* serveRecorded(nc, subjects, config.nodeId, submitter.recorded);
    yield* serveApi(nc, {
      nodeId: config.nodeId,
      subjects,
      submitter,
      uploads,
      maxMessageBytes: config.limits.maxMessageBytes,
      maxConcurrentSubmits: config.api.maxConcurrentSubmits,
      statusOf: status.statusOf,
      suppressions: suppressions.admin ? { admin: suppressions.admin, scopesOf: tenantScopes(config.api.tenants, config.localDomains) } : undefined,
    });
  }),
);
