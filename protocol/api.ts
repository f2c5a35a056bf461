// The application API over NATS, version 1 (docs/api.md is its reference): requests and
// replies of `submit` and of the chunked upload, the typed error codes every endpoint
// answers with, and the NATS micro discovery replies ($SRV.PING, $SRV.INFO, $SRV.STATS).
// Bodies are JSON; an error reply also carries the micro headers Nats-Service-Error
// (the message) and Nats-Service-Error-Code (the HTTP-like status of the code).
import { Schema } from "effect";
import { SuppressionReason } from "./suppression.ts";

export const API_VERSION = "1.0.0";

// ---------------------------------------------------------------------------
// Limits a request is held to (the node's own limits — size, recipients, rate — come from its config)

const LIMITS = {
  tags: 16,
  tagLength: 64,
  metadataKeys: 16,
  metadataKeyLength: 64,
  metadataValueLength: 512,
  idempotencyKeyLength: 128,
  headers: 50,
  headerValueLength: 998,
} as const;

/** Printable ASCII without space: what an idempotency key and a metadata key may hold. */
const Printable = /^[\x21-\x7e]+$/;
const NoLineBreak = Schema.makeFilter((s: string) => !/[\r\n\0]/.test(s) || "must not contain CR, LF or NUL");

/** An address as the envelope names it: local@domain, no spaces or angle brackets. */
const EnvelopeAddress = Schema.String.check(
  Schema.makeFilter((s: string) => /^[^@\s<>,;]+@[^@\s<>,;]+$/.test(s) || "expected local@domain"),
);

export const Envelope = Schema.Struct({
  from: EnvelopeAddress,
  to: Schema.Array(EnvelopeAddress).check(Schema.isMinLength(1)),
});
export type Envelope = typeof Envelope.Type;

/** Address lists as nodemailer takes them: "a@x", "Name <a@x>", or several. */
const Addresses = Schema.Union([Schema.String, Schema.Array(Schema.String)]);

const Attachment = Schema.Struct({
  filename: Schema.optional(Schema.String),
  contentType: Schema.optional(Schema.String),
  /** The attachment's bytes, base64. */
  content: Schema.String,
  /** Content-ID, to refer to an inline image from the HTML part (cid:…). */
  cid: Schema.optional(Schema.String),
  contentDisposition: Schema.optional(Schema.Literals(["attachment", "inline"])),
});
export type Attachment = typeof Attachment.Type;

/** A message the node composes with nodemailer's MailComposer. */
export const StructuredMessage = Schema.Struct({
  from: Schema.String,
  to: Schema.optional(Addresses),
  cc: Schema.optional(Addresses),
  bcc: Schema.optional(Addresses),
  replyTo: Schema.optional(Addresses),
  subject: Schema.optional(Schema.String),
  text: Schema.optional(Schema.String),
  html: Schema.optional(Schema.String),
  attachments: Schema.optional(Schema.Array(Attachment)),
  /** Extra header fields; a name cannot be one MailComposer sets from the fields above. */
  headers: Schema.optional(
    Schema.Record(
      Schema.String.check(Schema.isPattern(/^[!-9;-~]+$/)),
      Schema.String.check(NoLineBreak, Schema.isMaxLength(LIMITS.headerValueLength)),
    ).check(Schema.makeFilter((r: object) => Object.keys(r).length <= LIMITS.headers || `at most ${LIMITS.headers} headers`)),
  ),
});
export type StructuredMessage = typeof StructuredMessage.Type;

/** When a message becomes due: epoch milliseconds, or an ISO 8601 date-time ("2030-01-01T09:00:00Z"). */
const SendAt = Schema.Union([Schema.Int, Schema.String]);

/** What travels with a message besides its body: idempotency key, send-at time and labels. */
export const SubmitOptions = {
  /** A retried submit with the same key (per tenant) returns the first reply and queues nothing. */
  idempotencyKey: Schema.optional(Schema.String.check(Schema.isPattern(Printable), Schema.isMaxLength(LIMITS.idempotencyKeyLength))),
  sendAt: Schema.optional(SendAt),
  /** The IP pool to leave from (a name of the node's `delivery.pools`); else the pool rules decide. */
  pool: Schema.optional(Schema.String.check(Schema.isMaxLength(64))),
  tags: Schema.optional(
    Schema.Array(Schema.String.check(Schema.isMinLength(1), Schema.isMaxLength(LIMITS.tagLength), NoLineBreak)).check(Schema.isMaxLength(LIMITS.tags)),
  ),
  metadata: Schema.optional(
    Schema.Record(
      Schema.String.check(Schema.isPattern(Printable), Schema.isMaxLength(LIMITS.metadataKeyLength)),
      Schema.String.check(Schema.isMaxLength(LIMITS.metadataValueLength), NoLineBreak),
    ).check(Schema.makeFilter((r: object) => Object.keys(r).length <= LIMITS.metadataKeys || `at most ${LIMITS.metadataKeys} keys`)),
  ),
};

/**
 * `submit`: exactly one of `raw` (base64 RFC 5322 bytes, with `envelope`) or `message`
 * (structured; `envelope` optional, else taken from from/to/cc/bcc).
 */
export const SubmitRequest = Schema.Struct({
  envelope: Schema.optional(Envelope),
  raw: Schema.optional(Schema.String),
  message: Schema.optional(StructuredMessage),
  ...SubmitOptions,
}).check(
  Schema.makeFilter((r: { raw?: string; message?: unknown; envelope?: unknown }) =>
    r.raw !== undefined && r.message !== undefined
      ? "give either raw or message, not both"
      : r.raw === undefined && r.message === undefined
        ? "give raw (with envelope) or message"
        : r.raw !== undefined && r.envelope === undefined
          ? "raw needs an envelope"
          : true,
  ),
);
export type SubmitRequest = typeof SubmitRequest.Type;

/** A recipient the node will not take, and why (the SMTP reply submission would have given). */
export const RefusedRecipient = Schema.Struct({
  recipient: Schema.String,
  /** unknown-user, relay-denied, bad-recipient-domain, utf8-without-smtputf8, suppressed… */
  reason: Schema.String,
  /** The SMTP reply submission would have given: "550 5.1.1 No such user here". */
  reply: Schema.String,
  /** reason "suppressed": the suppression list's entry that refused it. */
  suppression: Schema.optional(Schema.Struct({ scope: Schema.String, reason: SuppressionReason })),
});
export type RefusedRecipient = typeof RefusedRecipient.Type;

/** Sent only after the message and its queue entries are committed to disk (as SMTP's 250). */
export const SubmitReply = Schema.Struct({
  messageId: Schema.String,
  /** The node that holds the message (status asks reach it). */
  node: Schema.String,
  tenant: Schema.String,
  accepted: Schema.Array(Schema.String),
  refused: Schema.Array(RefusedRecipient),
  /** Epoch ms at which the message is due (the send-at time, or when it was committed). */
  dueAt: Schema.Number,
  /** True when this answers a retry: the message was queued by the first submit with this key. */
  duplicate: Schema.Boolean,
});
export type SubmitReply = typeof SubmitReply.Type;

// ---------------------------------------------------------------------------
// The chunked path, for bodies larger than what one NATS message carries:
//   1. `upload.begin` (queue group) with the submit request minus the body: checked at once
//      like MAIL FROM and RCPT TO, before any byte is sent; the reply names the upload's
//      subject on the node that took it, `api.v1.<tenant>.upload.<nodeId>.<uploadId>`.
//   2. chunks to that subject, header `Tern-Upload-Seq: 0, 1, …`, raw bytes, each answered.
//   3. the commit to that subject (no Tern-Upload-Seq header): answered with SubmitReply
//      after the durable commit, like submit.

export const UploadBeginRequest = Schema.Struct({
  envelope: Envelope,
  /** Total bytes to come, when known: refused at once beyond the node's size limit. */
  size: Schema.optional(Schema.Int.check(Schema.isGreaterThanOrEqualTo(0))),
  ...SubmitOptions,
});
export type UploadBeginRequest = typeof UploadBeginRequest.Type;

export const UploadBeginReply = Schema.Union([
  Schema.Struct({
    upload: Schema.Struct({
      id: Schema.String,
      /** Where chunks and the commit go. */
      subject: Schema.String,
      /** Bytes a chunk may hold at most. */
      maxChunkBytes: Schema.Int,
      /** The upload is discarded after this long without a chunk. */
      idleTimeoutMs: Schema.Int,
    }),
  }),
  /** The idempotency key was used already: no upload needed, this is the first submit's reply. */
  Schema.Struct({ submitted: SubmitReply }),
]);
export type UploadBeginReply = typeof UploadBeginReply.Type;

export const UPLOAD_SEQ_HEADER = "Tern-Upload-Seq";

export const UploadChunkReply = Schema.Struct({
  /** Chunks received so far (the next sequence number expected). */
  chunks: Schema.Int,
  bytes: Schema.Int,
});
export type UploadChunkReply = typeof UploadChunkReply.Type;

/** The commit names what was sent, so a lost chunk cannot go unnoticed. */
export const UploadCommitRequest = Schema.Struct({
  chunks: Schema.Int.check(Schema.isGreaterThanOrEqualTo(0)),
  bytes: Schema.Int.check(Schema.isGreaterThanOrEqualTo(0)),
});
export type UploadCommitRequest = typeof UploadCommitRequest.Type;

// ---------------------------------------------------------------------------
// Errors

export const ApiErrorCode = Schema.Literals([
  /** Not JSON, or not what the endpoint's schema asks for. */
  "BadRequest",
  /** The message itself is unacceptable (NUL bytes, unparsable base64, nothing to compose). */
  "BadMessage",
  /** Over the node's size limit (limits.maxMessageBytes) or the chunk size. */
  "TooLarge",
  /** Over a count limit: recipients (limits.maxRecipients), send-at too far ahead. */
  "LimitExceeded",
  /** The subject's tenant token is not a configured tenant. */
  "UnknownTenant",
  /** The envelope sender is not one this tenant may use. */
  "SenderNotAllowed",
  /** Every recipient was refused: nothing was queued (the refused list says why). */
  "AllRecipientsRefused",
  /** The tenant's submit rate (api.maxSubmitsPerTenantPerMinute) on this node was reached. */
  "RateLimited",
  /** No such upload (unknown, expired, or of another tenant). */
  "NotFound",
  /** A suppression list scope the tenant may not manage: "global", or another tenant's domain. */
  "ScopeNotAllowed",
  /** The node is at a cap on work it takes at once; retry shortly. */
  "Busy",
  /** The node cannot commit now (spool failure, stopping); retry, with the same idempotency key. */
  "Unavailable",
  /** A bug; nothing was committed. */
  "Internal",
]);
export type ApiErrorCode = typeof ApiErrorCode.Type;

/** The micro `Nats-Service-Error-Code` of each code (HTTP-like, as micro tooling expects). */
export const errorStatus: Readonly<Record<ApiErrorCode, number>> = {
  BadRequest: 400,
  BadMessage: 422,
  TooLarge: 413,
  LimitExceeded: 400,
  UnknownTenant: 404,
  SenderNotAllowed: 403,
  AllRecipientsRefused: 422,
  RateLimited: 429,
  NotFound: 404,
  ScopeNotAllowed: 403,
  Busy: 503,
  Unavailable: 503,
  Internal: 500,
};

export class ApiError extends Schema.TaggedError<ApiError>()("ApiError", {
  code: ApiErrorCode,
  message: Schema.String,
  refused: Schema.optional(Schema.Array(RefusedRecipient)),
}) {}

/** The JSON body of an error reply. */
export const ApiErrorBody = Schema.Struct({
  error: Schema.Struct({
    code: ApiErrorCode,
    message: Schema.String,
    refused: Schema.optional(Schema.Array(RefusedRecipient)),
  }),
});
export type ApiErrorBody = typeof ApiErrorBody.Type;

export const ERROR_HEADER = "Nats-Service-Error";
export const ERROR_CODE_HEADER = "Nats-Service-Error-Code";

// ---------------------------------------------------------------------------
// NATS micro discovery (ADR-32): every node answers $SRV.PING|INFO|STATS[.<name>[.<id>]]

const Metadata = Schema.Record(Schema.String, Schema.String);

const ServiceIdentity = {
  name: Schema.String,
  id: Schema.String,
  version: Schema.String,
  metadata: Metadata,
};

export const PingResponse = Schema.Struct({ type: Schema.Literal("io.nats.micro.v1.ping_response"), ...ServiceIdentity });
export type PingResponse = typeof PingResponse.Type;

const EndpointInfo = Schema.Struct({
  name: Schema.String,
  subject: Schema.String,
  queue_group: Schema.String,
  metadata: Metadata,
});

export const InfoResponse = Schema.Struct({
  type: Schema.Literal("io.nats.micro.v1.info_response"),
  ...ServiceIdentity,
  description: Schema.String,
  endpoints: Schema.Array(EndpointInfo),
});
export type InfoResponse = typeof InfoResponse.Type;

const EndpointStats = Schema.Struct({
  name: Schema.String,
  subject: Schema.String,
  queue_group: Schema.String,
  num_requests: Schema.Int,
  num_errors: Schema.Int,
  last_error: Schema.String,
  /** Nanoseconds, summed over requests. */
  processing_time: Schema.Number,
  average_processing_time: Schema.Number,
});

export const StatsResponse = Schema.Struct({
  type: Schema.Literal("io.nats.micro.v1.stats_response"),
  ...ServiceIdentity,
  /** RFC 3339 time the service started. */
  started: Schema.String,
  endpoints: Schema.Array(EndpointStats),
});
export type StatsResponse = typeof StatsResponse.Type;
