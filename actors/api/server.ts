// The application API of one node (docs/api.md): submit and the chunked upload, served
// under the NATS micro conventions in the cluster's API queue group, one subscription per
// endpoint with the tenant token as a wildcard. Every request gets a reply: the endpoint's
// JSON, or a typed error (actors/api/micro.ts), never silence.
import { Clock, Effect, type Schema, type Scope } from "effect";
import type { NatsConnection } from "@nats-io/transport-node";
import {
  API_VERSION,
  ApiError,
  SubmitRequest,
  UPLOAD_SEQ_HEADER,
  UploadBeginRequest,
  UploadCommitRequest,
  type SubmitReply,
} from "../../protocol/api.ts";
import { NotFound, StatusReply, StatusRequest, Unavailable } from "../../protocol/status.ts";
import { isReplySubject, type Subjects } from "../../protocol/subjects.ts";
import { decodeJson, serveMicro, type ApiCall, type ApiEndpoint } from "./micro.ts";
import { compose, decodeBase64, submitWhole, type Submitter } from "./submit.ts";
import type { Uploads } from "./uploads.ts";
import type { Caller, SuppressionAdmin } from "../suppression/admin.ts";
import {
  SuppressionAddRequest,
  SuppressionImportRequest,
  SuppressionListRequest,
  SuppressionRemoveRequest,
  type SuppressionAdminError,
} from "../../protocol/suppression.ts";

export interface ApiServerDeps {
  readonly nodeId: string;
  readonly subjects: Subjects;
  readonly submitter: Submitter;
  readonly uploads: Uploads;
  readonly maxMessageBytes: number;
  /** Submits handled at once (api.maxConcurrentSubmits); beyond: Busy before anything is decoded. */
  readonly maxConcurrentSubmits: number;
  /** A message's status from whichever node holds it (nodes/services/status.ts). */
  readonly statusOf: (messageId: string) => Effect.Effect<StatusReply, NotFound | Unavailable>;
  /**
   * The suppression list's admin, and the scopes (sender domains) each tenant manages:
   * undefined for a tenant that is not configured. Absent: no suppression endpoints.
   */
  readonly suppressions?: { readonly admin: SuppressionAdmin; readonly scopesOf: (tenant: string) => ReadonlyArray<string> | undefined } | undefined;
}

/** `tern.<cluster>.api.v1.<tenant>.<endpoint…>`: the tenant is the fifth token. */
const tenantOfSubject = (subject: string): string => subject.split(".")[4] ?? "";

const lastToken = (subject: string) => subject.slice(subject.lastIndexOf(".") + 1);

const apiEndpoints = (deps: ApiServerDeps): ReadonlyArray<ApiEndpoint> => {
  const { subjects, submitter, uploads } = deps;
  // Submits being handled at once, counted from their arrival: decoding and composing a
  // body take memory before the commit's own limit applies, so the limit holds from here.
  let handling = 0;
  const admitted = <A>(handle: Effect.Effect<A, ApiError>): Effect.Effect<A, ApiError> =>
    Effect.suspend(() => {
      if (handling >= deps.maxConcurrentSubmits) {
        return Effect.fail(new ApiError({ code: "Busy", message: `this node is handling ${handling} submits already; retry shortly` }));
      }
      handling++;
      return handle.pipe(Effect.ensuring(Effect.sync(() => void handling--)));
    });
  return [
    {
      name: "submit",
      subject: subjects.api("*", "submit"),
      queue: subjects.apiQueueGroup,
      metadata: { request: "SubmitRequest", reply: "SubmitReply" },
      handle: (call) => admitted(Effect.flatMap(decodeJson(SubmitRequest, call.data), (request) => submit(deps, tenantOfSubject(call.subject), request))),
    },
    {
      name: "upload-begin",
      subject: subjects.api("*", "upload.begin"),
      queue: subjects.apiQueueGroup,
      metadata: { request: "UploadBeginRequest", reply: "UploadBeginReply" },
      handle: (call) =>
        Effect.flatMap(decodeJson(UploadBeginRequest, call.data), (request) =>
          uploads.begin(tenantOfSubject(call.subject), request, (id) => subjects.api(tenantOfSubject(call.subject), `upload.${deps.nodeId}.${id}`)),
        ),
    },
    {
      name: "status",
      subject: subjects.api("*", "status"),
      queue: subjects.apiQueueGroup,
      metadata: { request: "StatusRequest", reply: "StatusReply" },
      handle: (call) => Effect.flatMap(decodeJson(StatusRequest, call.data), (request) => status(deps, tenantOfSubject(call.subject), request.messageId)),
    },
    ...(deps.suppressions ? suppressionEndpoints(subjects, deps.suppressions) : []),
    {
      // This node's own uploads: chunks (header Tern-Upload-Seq) and the commit (without it).
      name: "upload",
      subject: subjects.api("*", `upload.${deps.nodeId}.*`),
      queue: undefined,
      metadata: { chunk: "raw bytes, header Tern-Upload-Seq; reply UploadChunkReply", commit: "UploadCommitRequest; reply SubmitReply" },
      handle: (call) => upload(uploads, call),
    },
  ];
};

/** `suppressions.add|import|remove|list`: a tenant's own scopes (its sender domains). */
const suppressionEndpoints = (subjects: Subjects, suppressions: NonNullable<ApiServerDeps["suppressions"]>): ReadonlyArray<ApiEndpoint> => {
  const { admin, scopesOf } = suppressions;
  const endpoint = <S extends Schema.Codec<unknown, unknown>>(
    operation: string,
    schema: S,
    reply: string,
    run: (caller: Caller, request: S["Type"]) => Effect.Effect<unknown, SuppressionAdminError>,
  ): ApiEndpoint => ({
    name: `suppressions-${operation}`,
    subject: subjects.api("*", `suppressions.${operation}`),
    queue: subjects.apiQueueGroup,
    metadata: { request: `Suppression${operation[0]!.toUpperCase()}${operation.slice(1)}Request`, reply },
    handle: (call) =>
      Effect.gen(function* () {
        const tenant = tenantOfSubject(call.subject);
        const scopes = scopesOf(tenant);
        if (scopes === undefined) return yield* new ApiError({ code: "UnknownTenant", message: `no tenant ${JSON.stringify(tenant)} is configured` });
        const request = yield* decodeJson(schema, call.data);
        return yield* run({ kind: "tenant", tenant, scopes }, request).pipe(Effect.mapError((error) => new ApiError({ code: error.code, message: error.message })));
      }),
  });
  return [
    endpoint("add", SuppressionAddRequest, "SuppressionChangeReply", admin.add),
    endpoint("import", SuppressionImportRequest, "SuppressionChangeReply", admin.import),
    endpoint("remove", SuppressionRemoveRequest, "SuppressionChangeReply", admin.remove),
    endpoint("list", SuppressionListRequest, "SuppressionListReply", admin.list),
  ];
};

const submit = (deps: ApiServerDeps, tenant: string, request: SubmitRequest): Effect.Effect<SubmitReply, ApiError> =>
  Effect.gen(function* () {
    if (request.raw !== undefined) {
      const bytes = yield* decodeBase64(request.raw, "raw");
      return yield* submitWhole(deps.submitter, tenant, request.envelope!, request, bytes, deps.maxMessageBytes);
    }
    const composed = yield* compose(request.message!, yield* Clock.currentTimeMillis);
    const envelope = request.envelope ?? { from: composed.envelope.from, to: composed.envelope.to };
    if (envelope.from === false || envelope.from === "") return yield* new ApiError({ code: "BadMessage", message: "the message has no from address" });
    if (envelope.to.length === 0) return yield* new ApiError({ code: "BadMessage", message: "the message has no recipients (to, cc or bcc)" });
    return yield* submitWhole(deps.submitter, tenant, { from: envelope.from, to: envelope.to }, request, composed.bytes, deps.maxMessageBytes);
  });

/**
 * A message's status, for its own tenant only: another tenant's message is NotFound, the
 * same answer as for an id that does not exist, so ids of other tenants cannot be probed.
 */
const status = (deps: ApiServerDeps, tenant: string, messageId: string): Effect.Effect<StatusReply, ApiError> =>
  deps.statusOf(messageId).pipe(
    Effect.mapError((error) =>
      error._tag === "NotFound"
        ? new ApiError({ code: "NotFound", message: `no node holds message ${messageId}` })
        : new ApiError({ code: "Unavailable", message: `status unavailable: ${error.detail}` }),
    ),
    Effect.filterOrFail(
      (reply) => reply.message.tenant === tenant,
      () => new ApiError({ code: "NotFound", message: `no node holds message ${messageId}` }),
    ),
  );

const upload = (uploads: Uploads, call: ApiCall): Effect.Effect<unknown, ApiError> => {
  const tenant = tenantOfSubject(call.subject);
  const uploadId = lastToken(call.subject);
  const seq = call.headers?.get(UPLOAD_SEQ_HEADER) ?? "";
  if (seq === "") return Effect.flatMap(decodeJson(UploadCommitRequest, call.data), (request) => uploads.commit(tenant, uploadId, request));
  if (!/^\d{1,9}$/.test(seq)) return Effect.fail(new ApiError({ code: "BadRequest", message: `${UPLOAD_SEQ_HEADER} must be a chunk number from 0` }));
  return uploads.chunk(tenant, uploadId, Number(seq), call.data);
};

/** Serves the API of this node until the scope closes. */
export const serveApi = (nc: NatsConnection, deps: ApiServerDeps): Effect.Effect<void, never, Scope.Scope> =>
  serveMicro(
    nc,
    {
      name: deps.subjects.apiService,
      id: deps.nodeId,
      version: API_VERSION,
      description: `Tern mail API of cluster ${deps.subjects.cluster}: submit messages, their status, the suppression list (docs/api.md)`,
      metadata: { cluster: deps.subjects.cluster, node: deps.nodeId },
    },
    apiEndpoints(deps),
    (reply) => isReplySubject(deps.subjects.cluster, reply),
  );
