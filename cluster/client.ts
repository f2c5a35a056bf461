// The typed client of Tern's NATS API (docs/api.md), for applications to import:
//
//   const tern = await connectTern({ cluster: "tern", tenant: "acme", servers: ["nats://…"], connectOptions: { user, pass } });
//   const reply = await tern.submit({ from: "app@acme.example", to: "x@example.org", subject: "Hi", text: "…" }, { idempotencyKey: "order-42" });
//   await tern.close();
//
// Replies are decoded with the protocol's schemas; a refusal throws a TernApiError with
// its typed code. A request too large for one NATS message goes through the chunked
// upload without the caller noticing (a large structured message is composed here, with
// the same MailComposer the node uses, and uploaded as raw bytes).
import { Exit, Schema } from "effect";
import { connect, headers as natsHeaders, type ConnectionOptions, type Msg, type NatsConnection } from "@nats-io/transport-node";
import MailComposer from "nodemailer/lib/mail-composer";
import {
  ApiErrorBody,
  ERROR_CODE_HEADER,
  SubmitReply,
  UPLOAD_SEQ_HEADER,
  UploadBeginReply,
  UploadChunkReply,
  type ApiErrorCode,
  type Envelope,
  type RefusedRecipient,
  type StructuredMessage,
  type SubmitRequest,
} from "../protocol/api.ts";
import { StatusReply } from "../protocol/status.ts";
import {
  SuppressionChangeReply,
  SuppressionListReply,
  type SuppressionAddRequest,
  type SuppressionImportRequest,
  type SuppressionListRequest,
  type SuppressionRemoveRequest,
} from "../protocol/suppression.ts";
import { makeSubjects, type Subjects } from "../protocol/subjects.ts";

export interface TernClientOptions {
  readonly cluster: string;
  /** The tenant whose subjects this application uses (default "default"). */
  readonly tenant?: string;
  /** Use this connection (close() leaves it open) instead of connecting. */
  readonly nc?: NatsConnection;
  readonly servers?: ReadonlyArray<string>;
  /** Credentials, TLS… as nats.js takes them. */
  readonly connectOptions?: Partial<ConnectionOptions>;
  /** Time allowed for each request (default 30 s). */
  readonly timeoutMs?: number;
}

export interface SubmitOptions {
  readonly idempotencyKey?: string;
  readonly sendAt?: Date | number | string;
  readonly tags?: ReadonlyArray<string>;
  readonly metadata?: Readonly<Record<string, string>>;
  /** The IP pool to leave from (one of the node's `delivery.pools`). */
  readonly pool?: string;
}

/** An attachment as an application has it: bytes, or text. */
export interface ClientAttachment {
  readonly filename?: string;
  readonly contentType?: string;
  readonly content: Uint8Array | string;
  readonly cid?: string;
  readonly contentDisposition?: "attachment" | "inline";
}

export type ClientMessage = Omit<StructuredMessage, "attachments"> & {
  readonly attachments?: ReadonlyArray<ClientAttachment>;
  /** Overrides the envelope MailComposer derives from from/to/cc/bcc. */
  readonly envelope?: Envelope;
};

/** A typed refusal from the API (or "Unavailable" when no node answered in time). */
export class TernApiError extends Error {
  override readonly name = "TernApiError";
  constructor(
    readonly code: ApiErrorCode,
    message: string,
    readonly refused: ReadonlyArray<RefusedRecipient> = [],
  ) {
    super(`${code}: ${message}`);
  }
}

export interface TernClient {
  readonly nc: NatsConnection;
  readonly subjects: Subjects;
  readonly tenant: string;
  /** Submits a structured message (composed by the node, or here when it is too large for one NATS message). */
  readonly submit: (message: ClientMessage, options?: SubmitOptions) => Promise<SubmitReply>;
  /** Submits RFC 5322 bytes with their envelope. */
  readonly submitRaw: (raw: Uint8Array | string, envelope: Envelope, options?: SubmitOptions) => Promise<SubmitReply>;
  /** A message's state and each recipient's, with attempts, from whichever node holds it (NotFound for another tenant's). */
  readonly status: (messageId: string) => Promise<StatusReply>;
  /** The suppression list in the tenant's own scopes (its sender domains; ScopeNotAllowed for others). */
  readonly suppressions: {
    readonly add: (request: SuppressionAddRequest) => Promise<SuppressionChangeReply>;
    readonly import: (request: SuppressionImportRequest) => Promise<SuppressionChangeReply>;
    readonly remove: (request: SuppressionRemoveRequest) => Promise<SuppressionChangeReply>;
    readonly list: (request?: SuppressionListRequest) => Promise<SuppressionListReply>;
  };
  readonly close: () => Promise<void>;
}

/** Room kept below the server's max payload for headers and the JSON around a body. */
const HEADROOM = 8 * 1024;
/** Times a chunk or commit is sent again after a timeout (the node writes a repeated chunk once). */
const RESENDS = 3;

const encoder = new TextEncoder();

export const connectTern = async (options: TernClientOptions): Promise<TernClient> => {
  const nc = options.nc ?? (await connect({ servers: [...(options.servers ?? ["nats://127.0.0.1:4222"])], ...options.connectOptions }));
  const subjects = makeSubjects(options.cluster);
  const tenant = options.tenant ?? "default";
  const timeout = options.timeoutMs ?? 30_000;
  const inlineLimit = () => (nc.info?.max_payload ?? 1024 * 1024) - HEADROOM;

  const ask = async <A>(subject: string, schema: Schema.Codec<A, unknown>, payload: Uint8Array, headers?: Record<string, string>): Promise<A> => {
    let msg: Msg;
    try {
      const h = headers ? natsHeaders() : undefined;
      for (const [name, value] of Object.entries(headers ?? {})) h!.set(name, value);
      msg = await nc.request(subject, payload, { timeout, ...(h ? { headers: h } : {}) });
    } catch (error) {
      throw new TernApiError("Unavailable", `no reply on ${subject}: ${error instanceof Error ? error.message : String(error)}`);
    }
    return decodeReply(msg, schema);
  };

  const askJson = <A>(subject: string, schema: Schema.Codec<A, unknown>, value: unknown) => ask(subject, schema, encoder.encode(JSON.stringify(value)));

  /** Resends on a lost reply: chunks and commits are idempotent on the node. */
  const askAgain = async <A>(send: () => Promise<A>): Promise<A> => {
    for (let attempt = 0; ; attempt++) {
      try {
        return await send();
      } catch (error) {
        if (!(error instanceof TernApiError && error.code === "Unavailable") || attempt >= RESENDS) throw error;
      }
    }
  };

  const labels = (options: SubmitOptions) => ({
    ...(options.idempotencyKey !== undefined ? { idempotencyKey: options.idempotencyKey } : {}),
    ...(options.sendAt !== undefined ? { sendAt: options.sendAt instanceof Date ? options.sendAt.toISOString() : options.sendAt } : {}),
    ...(options.tags !== undefined ? { tags: options.tags } : {}),
    ...(options.metadata !== undefined ? { metadata: options.metadata } : {}),
    ...(options.pool !== undefined ? { pool: options.pool } : {}),
  });

  const upload = async (bytes: Uint8Array, envelope: Envelope, options: SubmitOptions): Promise<SubmitReply> => {
    const begun = await askJson(subjects.api(tenant, "upload.begin"), UploadBeginReply, { envelope, size: bytes.length, ...labels(options) });
    if ("submitted" in begun) return begun.submitted;
    const { subject, maxChunkBytes } = begun.upload;
    let chunks = 0;
    for (let offset = 0; offset < bytes.length; offset += maxChunkBytes, chunks++) {
      const chunk = bytes.subarray(offset, offset + maxChunkBytes);
      const seq = chunks;
      await askAgain(() => ask(subject, UploadChunkReply, chunk, { [UPLOAD_SEQ_HEADER]: String(seq) }));
    }
    return askAgain(() => askJson(subject, SubmitReply, { chunks, bytes: bytes.length }));
  };

  const submitRaw: TernClient["submitRaw"] = async (raw, envelope, options = {}) => {
    const bytes = typeof raw === "string" ? encoder.encode(raw) : raw;
    const request: SubmitRequest = { envelope, raw: Buffer.from(bytes).toString("base64"), ...labels(options) };
    const payload = encoder.encode(JSON.stringify(request));
    if (payload.length <= inlineLimit()) return ask(subjects.api(tenant, "submit"), SubmitReply, payload);
    return upload(bytes, envelope, options);
  };

  const submit: TernClient["submit"] = async (message, options = {}) => {
    const { envelope, attachments, ...fields } = message;
    const request = {
      message: {
        ...fields,
        ...(attachments
          ? {
              attachments: attachments.map((a) => ({
                ...a,
                content: Buffer.from(typeof a.content === "string" ? encoder.encode(a.content) : a.content).toString("base64"),
              })),
            }
          : {}),
      },
      ...(envelope ? { envelope } : {}),
      ...labels(options),
    };
    const payload = encoder.encode(JSON.stringify(request));
    if (payload.length <= inlineLimit()) return ask(subjects.api(tenant, "submit"), SubmitReply, payload);
    const composed = await composeHere(message);
    return upload(composed.bytes, envelope ?? composed.envelope, options);
  };

  return {
    nc,
    subjects,
    tenant,
    submit,
    submitRaw,
    status: (messageId) => askJson(subjects.api(tenant, "status"), StatusReply, { messageId }),
    suppressions: {
      add: (request) => askJson(subjects.api(tenant, "suppressions.add"), SuppressionChangeReply, request),
      import: (request) => askJson(subjects.api(tenant, "suppressions.import"), SuppressionChangeReply, request),
      remove: (request) => askJson(subjects.api(tenant, "suppressions.remove"), SuppressionChangeReply, request),
      list: (request = {}) => askJson(subjects.api(tenant, "suppressions.list"), SuppressionListReply, request),
    },
    close: async () => {
      if (!options.nc) await nc.close();
    },
  };
};

/** The reply's value, or the TernApiError its error headers and body describe. */
const decodeReply = <A>(msg: Msg, schema: Schema.Codec<A, unknown>): A => {
  let body: unknown;
  try {
    body = msg.json();
  } catch {
    throw new TernApiError("Internal", "the reply is not JSON");
  }
  if (msg.headers?.get(ERROR_CODE_HEADER)) {
    const error = Schema.decodeUnknownExit(ApiErrorBody)(body);
    if (Exit.isSuccess(error)) throw new TernApiError(error.value.error.code, error.value.error.message, error.value.error.refused);
    throw new TernApiError("Internal", `error reply without a readable body: ${msg.headers.get(ERROR_CODE_HEADER)}`);
  }
  const value = Schema.decodeUnknownExit(schema)(body);
  if (Exit.isFailure(value)) throw new TernApiError("Internal", "the reply does not match the protocol");
  return value.value;
};

/** Composes a message as the node would, for the chunked path. */
const composeHere = (message: ClientMessage): Promise<{ bytes: Uint8Array; envelope: Envelope }> =>
  new Promise((resolve, reject) => {
    const { envelope: _, attachments, to, cc, bcc, replyTo, headers, ...fields } = message;
    const list = (value: string | ReadonlyArray<string> | undefined) => (value === undefined || typeof value === "string" ? value : [...value]);
    const node = new MailComposer({
      ...fields,
      ...(to !== undefined ? { to: list(to) } : {}),
      ...(cc !== undefined ? { cc: list(cc) } : {}),
      ...(bcc !== undefined ? { bcc: list(bcc) } : {}),
      ...(replyTo !== undefined ? { replyTo: list(replyTo) } : {}),
      ...(headers ? { headers: { ...headers } } : {}),
      attachments: (attachments ?? []).map((a) => ({ ...a, content: typeof a.content === "string" ? a.content : Buffer.from(a.content) })),
    }).compile();
    const derived = node.getEnvelope() as { from: string | false; to: string[] };
    node.build((error, bytes) => {
      if (error) return reject(new TernApiError("BadMessage", `the message cannot be composed: ${error.message}`));
      if (derived.from === false) return reject(new TernApiError("BadMessage", "the message has no from address"));
      resolve({ bytes, envelope: { from: derived.from, to: derived.to } });
    });
  });
