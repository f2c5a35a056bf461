// The caller's side of queue administration: one node by name, or every node of the
// cluster at once (each answers the shared subject; replies are gathered until every
// member named by `members` has answered, or until they stop coming). Replies are
// decoded with the protocol's schemas, like any actor reply.
import { Schema } from "effect";
import type { NatsConnection } from "@nats-io/transport-node";
import { QueueAdminError, QueueAdminReply, type QueueAdminRequest } from "../../protocol/queue-admin.ts";
import type { Subjects } from "../../protocol/subjects.ts";
import { decodeFrame, encodeFrame } from "../../protocol/wire.ts";

export type NodeAnswer = { readonly ok: true; readonly reply: QueueAdminReply } | { readonly ok: false; readonly node: string; readonly detail: string };

export interface AskOptions {
  /** Ask this node only; default every node. */
  readonly node?: string | undefined;
  /** How long to wait for the first answer. */
  readonly timeoutMs: number;
  /** Once answers come, how long a silence ends the gathering. */
  readonly quietMs?: number;
  /**
   * The nodes expected to answer (the cluster's member list, asked for at the same time):
   * once each has answered the gathering ends, without waiting for the silence. Undefined
   * (the list could not be read): the silence ends it.
   */
  readonly members?: Promise<ReadonlySet<string> | undefined> | undefined;
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
  const answers: NodeAnswer[] = [];
  const replies = await nc.requestMany(subjects.queueAdmin, payload, { strategy: "stall", stall: options.quietMs ?? 1_000, maxWait: options.timeoutMs });
  const iterator = replies[Symbol.asyncIterator]();
  let members: ReadonlySet<string> | undefined;
  let listPending = options.members !== undefined;
  const listed = (options.members ?? Promise.resolve(undefined)).then(
    (set) => {
      members = set;
      listPending = false;
      return LISTED;
    },
    () => {
      listPending = false;
      return LISTED;
    },
  );
  const answered = new Set<string>();
  const everyoneAnswered = () => members !== undefined && members.size > 0 && [...members].every((node) => answered.has(node));
  // One `next` at a time: when the member list arrives first, the same pending `next` is awaited again.
  let pending: Promise<IteratorResult<{ readonly data: Uint8Array }>> | undefined;
  for (;;) {
    if (everyoneAnswered()) {
      void iterator.return?.();
      break;
    }
    pending ??= iterator.next();
    const woke = listPending ? await Promise.race([pending, listed]) : await pending;
    if (typeof woke === "symbol") continue;
    pending = undefined;
    if (woke.done) break;
    const answer = interpret(woke.value.data, "?");
    answers.push(answer);
    answered.add(answer.ok ? answer.reply.node : answer.node);
  }
  return answers;
};

const LISTED: unique symbol = Symbol("listed");

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
