// Answers the cluster-wide status lookup from this node's spool: every node subscribes to
// the one subject (no queue group), and the node holding the message answers with its
// status, the others that they do not hold it, so the asker knows who answered.
//
// Served in a Scope: the subscription ends when it closes.
import { Effect, Schema, type Scope } from "effect";
import type { NatsConnection } from "@nats-io/transport-node";
import { StatusLookupReply, StatusRequest, type StatusReply } from "../../protocol/status.ts";
import type { Subjects } from "../../protocol/subjects.ts";
import type { Spool } from "../queue/spool.ts";
import { serveEndpoint, servedInScope, type Endpoint } from "../runtime/remote.ts";
import { fitStatus, statusView, type ViewContext } from "./view.ts";

const statusLookupEndpoint: Endpoint<StatusRequest, StatusLookupReply, never> = {
  request: StatusRequest,
  response: StatusLookupReply,
  error: Schema.Never,
};

export interface LocalStatusDeps extends ViewContext {
  readonly spool: Pick<Spool, "message" | "entriesOf" | "finished">;
  /** The largest status answered, in bytes of JSON: what one NATS message carries, less room for the reply around it. */
  readonly maxStatusBytes: number;
}

/** Room in a reply for what wraps the status (the frame, `Found`, an API reply's fields). */
export const STATUS_REPLY_HEADROOM = 4 * 1024;

/**
 * The message's status from this node's spool, or undefined when it holds nothing of it;
 * its histories cut when it would not fit in one NATS message (fitStatus).
 */
export const localStatus = (deps: LocalStatusDeps, messageId: string): StatusReply | undefined => {
  const status = statusView(
    messageId,
    { message: deps.spool.message(messageId), entries: deps.spool.entriesOf(messageId), finished: deps.spool.finished(messageId) },
    deps,
  );
  return status && fitStatus(status, deps.maxStatusBytes);
};

export const serveStatusLookup = (nc: NatsConnection, subjects: Subjects, deps: LocalStatusDeps): Effect.Effect<void, never, Scope.Scope> =>
  Effect.asVoid(
    servedInScope((run) =>
      serveEndpoint(
        nc,
        subjects.statusLookup,
        statusLookupEndpoint,
        (request) =>
          Effect.sync(() => {
            const status = localStatus(deps, request.messageId);
            return { value: status ? { _tag: "Found" as const, status } : { _tag: "NotHere" as const, node: deps.nodeId } };
          }),
        { run },
      ),
    ),
  );
