// Message status for the status API and `tern status`: `statusOf` answers from this
// node's spool when it holds the message, else asks every node (the holder answers).
// The layer also answers the other nodes' lookups, and forgets finished recipients
// `status.keepFinishedMs` after their message's last change, on the Effect clock.
import { Clock, Context, Duration, Effect, Layer, Schedule, Schema } from "effect";
import { lookupStatus } from "../../actors/status/client.ts";
import { localStatus, serveStatusLookup, STATUS_REPLY_HEADROOM, type LocalStatusDeps } from "../../actors/status/server.ts";
import { inlineLimitOf } from "../../actors/runtime/blobs.ts";
import { isHandedOff } from "../../actors/status/view.ts";
import { tenantOf } from "../../actors/common/tenants.ts";
import type { Spool as SpoolShape } from "../../actors/queue/spool.ts";
import type { Log as LogShape } from "../log.ts";
import { MessageId, NotFound, type StatusReply, type Unavailable } from "../../protocol/status.ts";
import { registerGauge } from "../metrics.ts";
import { Nats } from "./cluster.ts";
import { Config, Log, Metrics } from "./core.ts";
import { Scheduler } from "./delivery.ts";
import { Spool } from "./storage.ts";

export interface MessageStatusShape {
  readonly statusOf: (messageId: string) => Effect.Effect<StatusReply, NotFound | Unavailable>;
}

/** Wait for the first answer of the cluster-wide lookup, and once answers come, the silence that ends it. */
const LOOKUP_TIMEOUT_MS = 5_000;
const LOOKUP_STALL_MS = 250;
/** Records forgotten per transaction, so a prune never holds the write lock long. */
const PRUNE_BATCH = 1_000;

const isMessageId = Schema.is(MessageId);

export class MessageStatus extends Context.Service<MessageStatus, MessageStatusShape>()("tern/MessageStatus") {
  static readonly layer = Layer.effect(
    MessageStatus,
    Effect.gen(function* () {
      const config = yield* Config;
      const { nc, subjects } = yield* Nats;
      const spool = yield* Spool;
      const scheduler = yield* Scheduler;
      const log = yield* Log;
      const deps: LocalStatusDeps = {
        nodeId: config.nodeId,
        spool,
        isSuspended: spool.isSuspended,
        isInFlight: scheduler.isInFlight,
        tenantOf: (sender) => tenantOf(sender, config.api.tenants),
        maxStatusBytes: inlineLimitOf(nc) - STATUS_REPLY_HEADROOM,
      };
      registerGauge((yield* Metrics).registry, "tern_status_finished_messages", "Messages whose finished recipients are kept for status", spool.finishedCount);
      yield* serveStatusLookup(nc, subjects, deps);
      yield* Effect.forkScoped(pruneForever(spool, config.status.keepFinishedMs, log));
      return {
        statusOf: (messageId) => {
          if (!isMessageId(messageId)) return Effect.fail(new NotFound({ messageId, nodesAsked: 0 }));
          const here = localStatus(deps, messageId);
          if (here && !isHandedOff(here)) return Effect.succeed(here);
          const elsewhere = lookupStatus(nc, subjects, { messageId }, { timeoutMs: LOOKUP_TIMEOUT_MS, stallMs: LOOKUP_STALL_MS });
          // Handed off while this node drained: the node that took it over knows more, when it answers.
          return here ? elsewhere.pipe(Effect.orElseSucceed(() => here)) : elsewhere;
        },
      };
    }),
  );
}

/** Every tenth of the keep time (at most hourly), forgets what is older than it, a batch per transaction. */
const pruneForever = (spool: SpoolShape, keepMs: number, log: LogShape) => {
  const pruneOnce = Effect.gen(function* () {
    const now = yield* Clock.currentTimeMillis;
    let total = 0;
    for (;;) {
      const removed = yield* spool.pruneFinished(now - keepMs, PRUNE_BATCH);
      total += removed;
      if (removed < PRUNE_BATCH) break;
    }
    if (total > 0) log("status.pruned", { messages: total });
  }).pipe(Effect.catch((error) => Effect.sync(() => log("status.prune.failed", { level: "warn", error: error.detail }))));
  return Effect.repeat(pruneOnce, Schedule.spaced(Duration.millis(Math.min(keepMs / 10, 3_600_000))));
};
