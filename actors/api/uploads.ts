// The chunked path for bodies larger than one NATS message (docs/api.md, "Uploads"):
// `begin` checks the submit as MAIL FROM and RCPT TO would, before any byte is sent, and
// opens a body in the spool; chunks stream into it in sequence order (a repeated chunk is
// acknowledged again, not written twice), each acknowledged once the spool keeps up, so
// memory stays bounded whatever the size; `commit` ends the body and commits it like a
// whole submit. An upload idle past its timeout is discarded, body and all. A finished
// upload's outcome is kept until then, so a commit retried after a lost reply gets it.
import { randomBytes } from "node:crypto";
import { Clock, Effect, Exit, Schedule, Semaphore, type Scope } from "effect";
import {
  ApiError,
  type SubmitReply,
  type UploadBeginReply,
  type UploadBeginRequest,
  type UploadChunkReply,
  type UploadCommitRequest,
} from "../../protocol/api.ts";
import type { Prepared, Submission, Submitter } from "./submit.ts";
import type { Log } from "../../protocol/log.ts";

export interface UploadConfig {
  /** Uploads open at once on this node; beyond: Busy. */
  readonly maxUploads: number;
  readonly idleTimeoutMs: number;
  readonly maxChunkBytes: number;
  readonly maxMessageBytes: number;
}

interface Upload {
  readonly id: string;
  readonly tenant: string;
  readonly prepared: Prepared;
  readonly submission: Submission;
  /** Chunks and the commit of one upload are handled one at a time, in arrival order. */
  readonly lock: Semaphore.Semaphore;
  chunks: number;
  bytes: number;
  lastActivity: number;
  state: "receiving" | "committing" | "done";
  outcome?: Exit.Exit<SubmitReply, ApiError>;
}

export interface Uploads {
  readonly begin: (tenant: string, request: UploadBeginRequest, subjectOf: (uploadId: string) => string) => Effect.Effect<UploadBeginReply, ApiError>;
  readonly chunk: (tenant: string, uploadId: string, seq: number, data: Uint8Array) => Effect.Effect<UploadChunkReply, ApiError>;
  readonly commit: (tenant: string, uploadId: string, request: UploadCommitRequest) => Effect.Effect<SubmitReply, ApiError>;
  /** Uploads receiving or committing now. */
  readonly open: () => number;
}

const SWEEP_EVERY_MS = 1_000;

/** Uploads of this node; the idle sweeper runs, and every unfinished body is discarded, until the scope closes. */
export const makeUploads = (submitter: Submitter, config: UploadConfig, log: Log): Effect.Effect<Uploads, never, Scope.Scope> =>
  Effect.gen(function* () {
    const uploads = new Map<string, Upload>();

    const drop = (upload: Upload, why: string) => {
      uploads.delete(upload.id);
      if (upload.state !== "done") {
        submitter.discard(upload.submission);
        log("api.upload.discarded", { upload: upload.id, queueId: upload.submission.id, tenant: upload.tenant, size: upload.bytes, reason: why });
      }
    };

    const sweep = Effect.map(Clock.currentTimeMillis, (now) => {
      for (const upload of uploads.values()) {
        if (upload.state !== "committing" && now - upload.lastActivity > config.idleTimeoutMs) drop(upload, "idle");
      }
    });
    yield* Effect.forkScoped(Effect.repeat(sweep, Schedule.spaced(SWEEP_EVERY_MS)));
    yield* Effect.addFinalizer(() => Effect.sync(() => [...uploads.values()].forEach((upload) => drop(upload, "node stopping"))));

    const find = (tenant: string, uploadId: string): Effect.Effect<Upload, ApiError> => {
      const upload = uploads.get(uploadId);
      // Another tenant's upload is as unknown as a missing one.
      return upload && upload.tenant === tenant
        ? Effect.succeed(upload)
        : Effect.fail(new ApiError({ code: "NotFound", message: `no upload ${uploadId} on this node (unknown, finished long ago, or idle past ${config.idleTimeoutMs} ms)` }));
    };

    const touch = (upload: Upload) => Effect.map(Clock.currentTimeMillis, (now) => void (upload.lastActivity = now));

    const begin: Uploads["begin"] = (tenant, request, subjectOf) =>
      Effect.gen(function* () {
        const prepared = yield* submitter.prepare(tenant, request.envelope, request);
        if (request.size !== undefined && request.size > config.maxMessageBytes) {
          return yield* new ApiError({ code: "TooLarge", message: `the message exceeds ${config.maxMessageBytes} bytes (limits.maxMessageBytes)` });
        }
        const remembered = yield* submitter.recall(tenant, request.idempotencyKey);
        if (remembered) return { submitted: remembered };
        if (uploads.size >= config.maxUploads) {
          return yield* new ApiError({ code: "Busy", message: `this node has ${uploads.size} uploads open (api.maxUploads); retry shortly` });
        }
        const submission = yield* submitter.start(prepared);
        const id = randomBytes(12).toString("hex");
        const upload: Upload = { id, tenant, prepared, submission, lock: yield* Semaphore.make(1), chunks: 0, bytes: 0, lastActivity: 0, state: "receiving" };
        yield* touch(upload);
        uploads.set(id, upload);
        return { upload: { id, subject: subjectOf(id), maxChunkBytes: config.maxChunkBytes, idleTimeoutMs: config.idleTimeoutMs } };
      });

    const chunk: Uploads["chunk"] = (tenant, uploadId, seq, data) =>
      Effect.flatMap(find(tenant, uploadId), (upload) =>
        upload.lock.withPermit(
          Effect.gen(function* () {
            yield* touch(upload);
            const ack = { chunks: upload.chunks, bytes: upload.bytes };
            if (upload.state !== "receiving") return yield* new ApiError({ code: "BadRequest", message: `upload ${uploadId} is committed already` });
            if (seq < upload.chunks) return ack; // sent again after a lost acknowledgement: written once
            if (seq > upload.chunks) return yield* new ApiError({ code: "BadRequest", message: `chunk ${seq} out of order: expected ${upload.chunks}` });
            if (data.length > config.maxChunkBytes) return yield* new ApiError({ code: "TooLarge", message: `a chunk holds at most ${config.maxChunkBytes} bytes` });
            if (upload.bytes + data.length > config.maxMessageBytes) {
              drop(upload, "too large");
              return yield* new ApiError({ code: "TooLarge", message: `the message exceeds ${config.maxMessageBytes} bytes (limits.maxMessageBytes); the upload is discarded` });
            }
            upload.chunks++;
            upload.bytes += data.length;
            yield* write(upload.submission, data);
            return { chunks: upload.chunks, bytes: upload.bytes };
          }),
        ),
      );

    const commit: Uploads["commit"] = (tenant, uploadId, request) =>
      Effect.flatMap(find(tenant, uploadId), (upload) =>
        upload.lock.withPermit(
          Effect.gen(function* () {
            yield* touch(upload);
            if (upload.outcome) return yield* upload.outcome; // a retried commit: the first one's reply
            if (request.chunks !== upload.chunks || request.bytes !== upload.bytes) {
              return yield* new ApiError({
                code: "BadRequest",
                message: `the commit names ${request.chunks} chunks (${request.bytes} bytes), the node received ${upload.chunks} (${upload.bytes} bytes)`,
              });
            }
            upload.state = "committing";
            upload.submission.input.end();
            const outcome = yield* Effect.exit(submitter.commit(upload.prepared, upload.submission)).pipe(
              Effect.onInterrupt(() => Effect.sync(() => submitter.discard(upload.submission))),
            );
            if (Exit.isFailure(outcome)) submitter.discard(upload.submission);
            upload.state = "done";
            upload.outcome = outcome;
            yield* touch(upload);
            return yield* outcome;
          }),
        ),
      );

    return { begin, chunk, commit, open: () => [...uploads.values()].filter((u) => u.state !== "done").length };
  });

/** Writes a chunk into the body's stream; resolves once the stream can take more (the spool keeps up). */
const write = (submission: Submission, data: Uint8Array): Effect.Effect<void> =>
  Effect.callback<void>((resume) => {
    const { input } = submission;
    if (input.destroyed || input.write(data)) return resume(Effect.void);
    const done = () => {
      input.off("drain", done);
      input.off("close", done);
      resume(Effect.void);
    };
    input.once("drain", done);
    input.once("close", done);
  });
