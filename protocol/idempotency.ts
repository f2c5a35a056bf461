// Node to node: the reply recorded under an idempotency key, asked of the node that took
// the key first (`Subjects.idempotencyOf`). That node answers from its spool's record,
// after waiting for a commit of the key still under way; no reply in the answer means it
// queued nothing under the key (it stopped between claim and commit, or the commit failed).
import { Schema } from "effect";
import { SubmitReply } from "./api.ts";

const RecordedRequest = Schema.Struct({ tenant: Schema.String, key: Schema.String });
export type RecordedRequest = typeof RecordedRequest.Type;

const RecordedAnswer = Schema.Struct({ reply: Schema.optional(SubmitReply) });
export type RecordedAnswer = typeof RecordedAnswer.Type;

export const recordedEndpoint = { request: RecordedRequest, response: RecordedAnswer, error: Schema.Never } as const;
