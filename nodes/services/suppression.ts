// The suppression list on this node (README "Suppression list"): the in-memory view kept
// by a watch of the cluster's KV bucket, the check submission and delivery ask of it, the
// record of each refusal (event, metric, log line), the automatic adds (wrapped around the
// event publisher's sink), the admin shared by the API and `tern suppress`, and the
// operator's endpoint for the latter.
//
// Built before the event publisher and the actors, so the watch outlives them and stops
// before NATS is drained. A starting node waits (suppression.loadTimeoutMs) for its first
// view of the list; past that it takes mail without it, and the check before each
// delivery attempt catches what got through once the view is loaded.
import { Clock, Context, Deferred, Effect, Layer } from "effect";
import { Counter } from "prom-client";
import type { EventSink } from "../../actors/events/publisher.ts";
import { makeSuppressionAdmin, suppressionAdminEndpoint, type SuppressionAdmin } from "../../actors/suppression/admin.ts";
import { addingSuppressions, type SuppressionAdd } from "../../actors/suppression/auto-add.ts";
import { refusalEvent, type SuppressionCheck } from "../../actors/suppression/check.ts";
import { makeSuppressionList } from "../../actors/suppression/list.ts";
import { serveEndpoint, servedInScope } from "../../actors/runtime/remote.ts";
import { openSuppressions } from "../../cluster/suppressions.ts";
import {
  normalScope,
  suppressionReasons,
  type SuppressionAdminError,
  type SuppressionAdminReply,
  type SuppressionAdminRequest,
} from "../../protocol/suppression.ts";
import { registerGauge } from "../metrics.ts";
import { Nats } from "./cluster.ts";
import { Config, Log, Metrics } from "./core.ts";
import { tenantOf } from "../../actors/common/tenants.ts";
import { EventOutbox } from "./storage.ts";

export interface SuppressionsShape {
  /** What submission asks (a lookup that finds nothing when the list is disabled). */
  readonly check: SuppressionCheck;
  /** Absent when suppression.enabled is false. */
  readonly admin: SuppressionAdmin | undefined;
  /** The event publisher's sink with the automatic adds (unchanged when disabled). */
  readonly withAutoAdds: (sink: EventSink) => EventSink;
  /** Counts a recipient refused before a delivery attempt. */
  readonly deliverySuppressed: () => void;
}

export class Suppressions extends Context.Service<Suppressions, SuppressionsShape>()("tern/Suppressions") {
  static readonly layer = Layer.effect(
    Suppressions,
    Effect.gen(function* () {
      const config = yield* Config;
      const log = yield* Log;
      const { registry } = yield* Metrics;
      const clock = yield* Clock.Clock;
      const suppressed = new Counter<"where">({
        name: "tern_suppressed_total",
        help: "Recipients refused because they are on the suppression list: at an API submit, at SMTP RCPT TO, before a delivery attempt",
        labelNames: ["where"],
        registers: [registry],
      });
      for (const where of ["api", "smtp", "delivery"]) suppressed.inc({ where }, 0);
      const disabled: SuppressionsShape = {
        check: { lookup: () => undefined, refused: () => undefined },
        admin: undefined,
        withAutoAdds: (sink) => sink,
        deliverySuppressed: () => undefined,
      };
      if (!config.suppression.enabled) return disabled;

      const { nc, subjects } = yield* Nats;
      const outbox = yield* EventOutbox;
      // As eventSourceOf (./events.ts), which imports this module for the automatic adds.
      const source = { node: config.nodeId, tenantOf: (sender: string) => tenantOf(sender, config.api.tenants) };
      const added = new Counter<"reason">({
        name: "tern_suppressions_added_total",
        help: "Entries this node wrote to the suppression list, by reason (bounces and complaints automatically, the rest by the API or tern suppress)",
        labelNames: ["reason"],
        registers: [registry],
      });
      for (const reason of suppressionReasons) added.inc({ reason }, 0);
      const list = makeSuppressionList();
      registerGauge(registry, "tern_suppressions", "Entries of the suppression list in this node's view", list.size);
      registerGauge(registry, "tern_suppressions_loaded", "1 once this node loaded its view of the suppression list (before that, nothing is refused)", () => (list.loaded() ? 1 : 0));
      const bucket = openSuppressions(nc, { bucket: subjects.suppressionsBucket, replicas: config.nats.replicas, watcherPrefix: subjects.nodeInbox(config.nodeId) });

      const firstLoad = yield* Deferred.make<void>();
      yield* bucket.follow(list, {
        loaded: (entries) => {
          log("suppression.loaded", { entries });
          Deferred.doneUnsafe(firstLoad, Effect.void);
        },
        failed: (detail, retryInMs) => log("suppression.watch.failed", { level: "warn", error: detail, retryInMs }),
        malformed: (key) => log("suppression.malformed", { level: "warn", key }),
      });
      const loaded = yield* Deferred.await(firstLoad).pipe(Effect.timeoutOption(config.suppression.loadTimeoutMs));
      if (loaded._tag === "None") log("suppression.load.late", { level: "warn", waitedMs: config.suppression.loadTimeoutMs });

      const check: SuppressionCheck = {
        lookup: list.lookup,
        refused: (refusal) => {
          suppressed.inc({ where: refusal.where });
          log("recipient.suppressed", {
            ...(refusal.conn !== undefined ? { conn: refusal.conn } : {}),
            where: refusal.where,
            sender: refusal.sender,
            recipient: refusal.recipient,
            scope: refusal.match.scope,
            reason: refusal.match.reason,
          });
          // Its own small transaction, not awaited: the client's answer does not wait for a disk write.
          outbox.append([refusalEvent(source, refusal, clock.currentTimeMillisUnsafe())]).catch((error: unknown) =>
            log("suppression.event.failed", { level: "warn", recipient: refusal.recipient, error: String(error) }),
          );
        },
      };

      const add = (wanted: SuppressionAdd) =>
        Effect.map(bucket.store.create(wanted.key, wanted.record), (created) => {
          // Present already (a retry, a second bounce): its first record stays, in the view too.
          if (!created) return;
          list.put(wanted.key, wanted.record.reason);
          added.inc({ reason: wanted.record.reason });
          log("suppression.added", { recipient: wanted.record.address, scope: wanted.record.scope, reason: wanted.record.reason, queueId: wanted.record.msg });
        });
      const policy = { scope: config.suppression.scope, kinds: new Set(config.suppression.autoAdd) };

      return {
        check,
        admin: makeSuppressionAdmin({
          list,
          store: bucket.store,
          node: config.nodeId,
          now: () => clock.currentTimeMillisUnsafe(),
          added: (reason) => added.inc({ reason }),
          log,
        }),
        withAutoAdds: (sink) => addingSuppressions(sink, policy, add),
        deliverySuppressed: () => suppressed.inc({ where: "delivery" }),
      } satisfies SuppressionsShape;
    }),
  );
}

/**
 * The scopes an application of `tenant` manages: its sender domains; for "default", the
 * local domains no named tenant owns. Undefined for a tenant that is not configured.
 */
export const tenantScopes = (
  tenants: ReadonlyArray<{ readonly name: string; readonly senderDomains: ReadonlyArray<string> }>,
  localDomains: ReadonlyArray<string>,
): ((tenant: string) => ReadonlyArray<string> | undefined) => {
  const owned = new Set(tenants.flatMap((t) => t.senderDomains.map((d) => d.toLowerCase())));
  const normal = (domains: ReadonlyArray<string>) => domains.flatMap((d) => normalScope(d) ?? []).filter((d) => d !== "global");
  const scopes = new Map(tenants.map((t) => [t.name, normal(t.senderDomains)]));
  scopes.set("default", normal(localDomains.filter((d) => !owned.has(d.toLowerCase()))));
  return (tenant) => scopes.get(tenant);
};

/** `tern suppress` over NATS: one node of the queue group answers each request, until the node stops. */
export const SuppressionAdminLayer = Layer.effectDiscard(
  Effect.gen(function* () {
    const config = yield* Config;
    const { nc, subjects } = yield* Nats;
    const { admin } = yield* Suppressions;
    if (admin === undefined) return;
    const operator = { kind: "operator" } as const;
    const handle = (request: SuppressionAdminRequest): Effect.Effect<{ value: SuppressionAdminReply }, SuppressionAdminError> => {
      const changed = (effect: Effect.Effect<{ changed: ReadonlyArray<string>; unchanged: ReadonlyArray<string> }, SuppressionAdminError>) =>
        Effect.map(effect, (reply) => ({ value: { _tag: "Changed" as const, node: config.nodeId, ...reply } }));
      switch (request._tag) {
        case "Add":
          return changed(admin.add(operator, request));
        case "Import":
          return changed(admin.import(operator, request));
        case "Remove":
          return changed(admin.remove(operator, request));
        case "List":
          return Effect.map(admin.list(operator, request), (reply) => ({ value: { _tag: "Listed" as const, node: config.nodeId, ...reply } }));
      }
    };
    yield* servedInScope((run) => serveEndpoint(nc, subjects.suppressionAdmin, suppressionAdminEndpoint, handle, { queue: subjects.suppressionAdminQueueGroup, run }));
  }),
);
