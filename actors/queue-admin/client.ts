// The caller's side of queue administration: one node by name, or every node of the
// cluster at once (each answers the shared subject; ../runtime/gather.ts gathers the
// replies). Replies are decoded with the protocol's schemas, like any actor reply.
import { Schema } from "effect";
import type { NatsConnection } from "@nats-io/transport-node";
import { QueueAdminError, QueueAdminReply, type QueueAdminRequest } from "../../protocol/queue-admin.ts";
import type { Subjects } from "../../protocol/subjects.ts";
import { decodeFrame, encodeFrame } from "../../protocol/wire.ts";
import { gatherAnswers, type GatherOptions } from "../runtime/gather.ts";

export type NodeAnswer = { readonly ok: true; readonly reply: QueueAdminReply } | { readonly ok: false; readonly node: string; readonly detail: string };

export interface AskOptions extends GatherOptions {
  /** Ask this node only; default every node (see GatherOptions for how their answers are gathered). */
  readonly node?: string | undefined;
}

export const askQueueAdmin = async (
  nc: NatsConnection,
  subjects: Subjects,
  request: QueueAdminRequest,
  options: AskOptions,
): Promise<ReadonlyArray<NodeAnswer>> => {
  const payload = encodeFrame(request);
  if (options.node !== undefined) {
    const msg = await nc.request(subjects.queueAdminOf(options.node), payload, { timeout: options.timeoutMs });
    return [interpret(msg.data, options.node)];
  }
  return gatherAnswers(nc, subjects.queueAdmin, payload, (data) => interpret(data, "?"), nodeOfAnswer, options);
};

/** The node that gave an answer (a failure names it when the node said who it is). */
const nodeOfAnswer = (answer: NodeAnswer) => (answer.ok ? answer.reply.node : answer.node);

const interpret = (data: Uint8Array, node: string): NodeAnswer => {
  const frame = decodeFrame(data);
  if (typeof frame === "string") return { ok: false, node, detail: `malformed reply: ${frame}` };
  const wire = frame.json as { ok?: boolean; value?: unknown; error?: unknown; malformed?: string; internal?: string };
  if (wire.ok === true) {
    const reply = Schema.decodeUnknownExit(QueueAdminReply)(wire.value);
    return reply._tag === "Success" ? { ok: true, reply: reply.value } : { ok: false, node, detail: "reply does not match the protocol" };
  }
  const error = Schema.decodeUnknownExit(QueueAdminError)(wire.error);
  if (error._tag === "Success") return { ok: false, node: error.value.node, detail: error.value.detail };
  return { ok: false, node, detail: wire.malformed ?? wire.internal ?? "unknown failure" };
};
