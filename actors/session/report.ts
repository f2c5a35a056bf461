// The session's side of a report transaction (a bounce to a VERP address, a feedback
// report to a feedback-loop address, actors/feedback/intake.ts): its body is read into
// memory, never into the spool, and what the intake made of it becomes the reply.
import type { IntakeOutcome } from "../feedback/intake.ts";
import type { BodyWriter } from "../queue/spool.ts";

/**
 * Bytes of a report kept: its parts that count (the text, the delivery-status or
 * feedback-report part, the returned header section) come first; a returned message's
 * body beyond this is dropped, so a large one costs no memory.
 */
export const MAX_REPORT_BYTES = 256 * 1024;

/** A BodyWriter that keeps the first `limit` bytes in memory (what ingest writes, checked as any DATA). */
export const memoryBody = (limit: number): BodyWriter & { readonly bytes: () => Uint8Array } => {
  let chunks: Buffer[] = [];
  let kept = 0;
  let size = 0;
  return {
    append: (chunk) => {
      size += chunk.length;
      if (kept < limit) {
        const part = Buffer.from(chunk.subarray(0, limit - kept));
        chunks.push(part);
        kept += part.length;
      }
      return undefined;
    },
    size: () => size,
    prepend: () => undefined,
    discard: () => {
      chunks = [];
      kept = 0;
    },
    flushed: () => Promise.resolve(),
    bytes: () => Buffer.concat(chunks),
  };
};

export type ReportReply = { readonly ok: true; readonly text: string } | { readonly ok: false; readonly code: number; readonly text: string };

/**
 * 250 once the events are on disk, and for a report that is dropped (refusing it would
 * only bounce a bounce); 451 when nothing could be recorded now, so the reporter retries.
 */
export const reportReply = (outcome: IntakeOutcome): ReportReply => {
  switch (outcome._tag) {
    case "Recorded":
      return { ok: true, text: `2.0.0 Ok: ${outcome.kind} of message ${outcome.messageId} recorded` };
    case "Dropped":
      return { ok: true, text: `2.0.0 Ok: report received, nothing recorded (${outcome.result})` };
    case "Failed":
      return { ok: false, code: 451, text: "4.3.0 Cannot record the report now, try again later" };
  }
};
