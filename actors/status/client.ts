// The asker's side of the status lookup: the request goes to every node at once, and the
// answer is the one from the node holding the message (a node that handed it over while
// draining answers too, and is heard only when the holder is not). Answers are gathered until one is
// found, or until they stop coming for `stallMs` (every node answers, so a NotFound costs
// about that much), or `timeoutMs` in all.
import { Effect, Exit, Schema } from "effect";
import type { NatsConnection } from "@nats-io/transport-node";
import { decodeFrame, encodeFrame } from "../../protocol/wire.ts";
import { NotFound, StatusLookupReply, Unavailable, type StatusReply, type StatusRequest } from "../../protocol/status.ts";
import type { Subjects } from "../../protocol/subjects.ts";
import { isHandedOff } from "./view.ts";

export interface LookupOptions {
  /** How long to wait for the first answer (and for all of them). */
  readonly timeoutMs: number;
  /** Once answers come, how long a silence ends the gathering. */
  readonly stallMs: number;
}

type Gathered = { readonly found: StatusReply } | { readonly notHere: number; readonly problems: ReadonlyArray<string> };

export const lookupStatus = (
  nc: NatsConnection,
  subjects: Subjects,
  request: StatusRequest,
  options: LookupOptions,
): Effect.Effect<StatusReply, NotFound | Unavailable> =>
  Effect.tryPromise({
    try: () => gather(nc, subjects.statusLookup, request, options),
    catch: (error) => new Unavailable({ detail: error instanceof Error ? error.message : String(error) }),
  }).pipe(
    Effect.flatMap((gathered): Effect.Effect<StatusReply, NotFound | Unavailable> => {
      if ("found" in gathered) return Effect.succeed(gathered.found);
      // Not found only when no node failed to say: the one that failed may hold the message.
      if (gathered.notHere > 0 && gathered.problems.length === 0) return Effect.fail(new NotFound({ messageId: request.messageId, nodesAsked: gathered.notHere }));
      return Effect.fail(new Unavailable({ detail: gathered.problems.length > 0 ? gathered.problems.join("; ") : `no node of cluster ${subjects.cluster} answered` }));
    }),
  );

const gather = async (nc: NatsConnection, subject: string, request: StatusRequest, options: LookupOptions): Promise<Gathered> => {
  const replies = await nc.requestMany(subject, encodeFrame(request), { strategy: "stall", stall: options.stallMs, maxWait: options.timeoutMs });
  let notHere = 0;
  const problems: string[] = [];
  // A drained node still knows the message but only as handed off: the node that took it
  // over answers better, so that answer is kept only in case none comes.
  let handedOff: StatusReply | undefined;
  try {
    for await (const msg of replies) {
      const answer = interpret(msg.data);
      if (typeof answer === "string") problems.push(answer);
      else if (answer._tag === "Found" && !isHandedOff(answer.status)) return { found: answer.status };
      else if (answer._tag === "Found") handedOff = answer.status;
      else notHere++;
    }
  } catch (error) {
    // No responders, or the connection closed: what came before still counts.
    if (notHere === 0 && handedOff === undefined) throw error;
  }
  return handedOff ? { found: handedOff } : { notHere, problems };
};

/** One node's answer (the frame `serveEndpoint` sends), or what is wrong with it. */
const interpret = (data: Uint8Array): StatusLookupReply | string => {
  const frame = decodeFrame(data);
  if (typeof frame === "string") return `malformed answer: ${frame}`;
  const wire = frame.json as { ok?: boolean; value?: unknown; malformed?: string; internal?: string } | null;
  if (wire?.ok !== true) return wire?.malformed ?? wire?.internal ?? "a node failed to answer";
  const reply = Schema.decodeUnknownExit(StatusLookupReply)(wire.value);
  return Exit.isSuccess(reply) ? reply.value : "an answer does not match the protocol";
};
