// What `tern reputation` shows of a node: its reputation figures over one window, per
// source address, sender domain and provider, and the thresholds holding a key now.
// Served over NATS to the operator role (every node answers the shared subject, and its
// own); the command sums the nodes' figures.
import { Clock, Effect, Schema, type Scope } from "effect";
import type { NatsConnection } from "@nats-io/transport-node";
import { ReputationReply, ReputationRequest } from "../../protocol/reputation.ts";
import type { Subjects } from "../../protocol/subjects.ts";
import { decodeFrame, encodeFrame } from "../../protocol/wire.ts";
import { serveEndpoint, servedInScope, type Endpoint } from "../runtime/remote.ts";
import type { Reputation } from "./reputation.ts";
import { gatherAnswers, type GatherOptions } from "../runtime/gather.ts";

export const reputationEndpoint: Endpoint<ReputationRequest, ReputationReply, never> = { request: ReputationRequest, response: ReputationReply, error: Schema.Never };

/** The node's figures and actions as `tern reputation` shows them, at `now`. */
export const reputationView = (nodeId: string, reputation: Pick<Reputation, "figures" | "actions">, request: ReputationRequest, now: number): ReputationReply => ({
  node: nodeId,
  at: now,
  window: request.window,
  figures: reputation.figures(request.window, request.dimension).map(({ dimension, key, counts }) => ({
    dimension,
    key,
    delivered: counts.delivered,
    bounced: counts.bounced,
    deferred: counts.deferred,
    complained: counts.complained,
    bounces: { ...counts.bounces },
  })),
  actions: reputation.actions().map((view) => ({
    dimension: view.dimension,
    key: view.key,
    rule: view.rule,
    window: view.window,
    action: view.action,
    ...(view.level !== undefined ? { level: view.level } : {}),
    since: view.since,
    ...(view.pausedUntil !== undefined ? { pausedUntil: view.pausedUntil } : {}),
    kind: view.cause.kind,
    rate: view.cause.rate,
    limit: view.cause.limit,
    messages: view.cause.messages,
  })),
});

/** Answers on the cluster-wide subject and on this node's own, until the scope closes. */
export const serveReputationStatus = (nc: NatsConnection, subjects: Subjects, deps: { readonly nodeId: string; readonly reputation: Reputation }): Effect.Effect<void, never, Scope.Scope> =>
  Effect.gen(function* () {
    const handle = (request: ReputationRequest) => Effect.map(Clock.currentTimeMillis, (now) => ({ value: reputationView(deps.nodeId, deps.reputation, request, now) }));
    yield* servedInScope((run) => serveEndpoint(nc, subjects.reputationStatus, reputationEndpoint, handle, { run }));
    yield* servedInScope((run) => serveEndpoint(nc, subjects.reputationStatusOf(deps.nodeId), reputationEndpoint, handle, { run }));
  });

export type ReputationAnswer = { readonly ok: true; readonly reply: ReputationReply } | { readonly ok: false; readonly node: string; readonly detail: string };

/** Asks one node by name, or every node (answers gathered as ../runtime/gather.ts says). */
export const askReputation = async (
  nc: NatsConnection,
  subjects: Subjects,
  request: ReputationRequest,
  options: GatherOptions & { readonly node?: string | undefined },
): Promise<ReadonlyArray<ReputationAnswer>> => {
  const payload = encodeFrame(Schema.encodeSync(ReputationRequest)(request));
  if (options.node !== undefined) {
    const msg = await nc.request(subjects.reputationStatusOf(options.node), payload, { timeout: options.timeoutMs });
    return [interpret(msg.data, options.node)];
  }
  return gatherAnswers(nc, subjects.reputationStatus, payload, (data) => interpret(data, "?"), (answer) => (answer.ok ? answer.reply.node : answer.node), options);
};

const interpret = (data: Uint8Array, node: string): ReputationAnswer => {
  const frame = decodeFrame(data);
  if (typeof frame === "string") return { ok: false, node, detail: `malformed reply: ${frame}` };
  const wire = frame.json as { ok?: boolean; value?: unknown; malformed?: string; internal?: string };
  if (wire.ok !== true) return { ok: false, node, detail: wire.malformed ?? wire.internal ?? "unknown failure" };
  const reply = Schema.decodeUnknownExit(ReputationReply)(wire.value);
  return reply._tag === "Success" ? { ok: true, reply: reply.value } : { ok: false, node, detail: "reply does not match the protocol" };
};
