// Makes an actor kind addressable over NATS: request/reply for asks, a queue group
// for stateless kinds. Requests and replies are Effect Schema types decoded at the
// edge; a malformed message gets a typed MalformedMessage reply and never reaches
// (or crashes) the handler.
//
// A NATS subscription callback is an edge where plain code starts an Effect: it runs the
// handler with `ServeOptions.run`. `servedInScope` makes that run the handlers with the
// services of the fiber that starts serving (the node's Clock among them), as fibers of
// its scope: when the scope closes, the subscription ends first, then handlers still
// running are interrupted, so none outlives what it uses (the spool, the mailboxes).
import { Cause, Effect, Exit, FiberSet, Schema, type Scope } from "effect";
import type { NatsConnection, Subscription } from "@nats-io/transport-node";
import { MalformedMessage, RemoteBusy, RemoteUnavailable } from "../../protocol/errors.ts";
import { clusterOfSubject, isReplySubject } from "../../protocol/subjects.ts";
import { decodeFrame, encodeBlobFrame, encodeFrame } from "../../protocol/wire.ts";
import { fetchBlob, inlineLimitOf, offerBlob, transferAllowanceMs, type BlobTransport } from "./blobs.ts";

export interface Endpoint<Req, Res, Err> {
  readonly request: Schema.Codec<Req, unknown>;
  readonly response: Schema.Codec<Res, unknown>;
  readonly error: Schema.Codec<Err, unknown>;
}

export interface Reply<Res> {
  readonly value: Res;
  readonly attachment?: Uint8Array | undefined;
}

type WireReply =
  | { readonly ok: true; readonly value: unknown }
  | { readonly ok: false; readonly error: unknown }
  | { readonly ok: false; readonly malformed: string }
  /** The server is at a cap (blob pulls): nothing was done, ask again later. */
  | { readonly ok: false; readonly busy: string }
  | { readonly ok: false; readonly internal: string };

export type Handle<Req, Res, Err> = (
  request: Req,
  attachment: Uint8Array | undefined,
) => Effect.Effect<Reply<Res>, Err>;

/** Runs a handler's Effect from the subscription callback. */
export type RunHandler = <A, E>(effect: Effect.Effect<A, E>) => Promise<A>;

export interface ServeOptions {
  /** Queue group: one member answers each request. */
  readonly queue?: string;
  /** How handlers run (default: a fiber of their own with no services, so the live Clock). */
  readonly run?: RunHandler;
}

/**
 * Keeps the subscription `subscribe` makes for as long as the scope is open. Its handlers
 * run with the services of the fiber that called this, as fibers of the scope.
 */
export const servedInScope = (subscribe: (run: RunHandler) => Subscription): Effect.Effect<Subscription, never, Scope.Scope> =>
  Effect.gen(function* () {
    const handlers = yield* FiberSet.make();
    const run: RunHandler = yield* FiberSet.runtimePromise(handlers)<never>();
    // Added after the FiberSet, so released before it: no new request, then the rest interrupted.
    return yield* Effect.acquireRelease(Effect.sync(() => subscribe(run)), (subscription) => Effect.sync(() => subscription.unsubscribe()));
  });

/**
 * A handler whose reply could not be sent: the connection closed or is draining (the node
 * stops), or a bug. The asker times out and retries, as with any lost reply; the cause is
 * written to stderr rather than left as an unhandled rejection that would end the process.
 */
const unanswered = (subject: string) => (error: unknown) => {
  process.stderr.write(`tern: no reply sent on ${subject}: ${String(error)}\n`);
};

/**
 * The reply frame, or when NATS would refuse it (over the server's max payload) an internal
 * error saying so: the asker hears at once why, instead of waiting out its timeout for a
 * reply that was never sent (a scatter-gather asker would take the silence for "not here").
 */
const fitted = (nc: NatsConnection, frame: Uint8Array): Uint8Array => {
  const limit = inlineLimitOf(nc);
  return frame.length <= limit ? frame : encodeFrame({ ok: false, internal: `the reply of ${frame.length} bytes is larger than NATS takes (${limit})` });
};

/** A request is answered only on an inbox of the served subject's cluster (protocol/subjects.ts `isReplySubject`). */
const mayAnswer = (servedSubject: string, reply: string | undefined): reply is string => {
  if (!reply) return false;
  const cluster = clusterOfSubject(servedSubject);
  return cluster === undefined ? !reply.startsWith("$") : isReplySubject(cluster, reply);
};

export const serveEndpoint = <Req, Res, Err>(
  nc: NatsConnection,
  subject: string,
  endpoint: Endpoint<Req, Res, Err>,
  handle: Handle<Req, Res, Err>,
  options: ServeOptions = {},
): Subscription => {
  const run = options.run ?? Effect.runPromise;
  return nc.subscribe(subject, {
    ...(options.queue ? { queue: options.queue } : {}),
    callback: (error, msg) => {
      if (error) return;
      run(answer(endpoint, handle, msg.data))
        .then(({ json, attachment }) => {
          if (mayAnswer(subject, msg.reply)) msg.respond(fitted(nc, encodeFrame(json, attachment)));
        })
        .catch(unanswered(subject));
    },
  });
};

const answer = <Req, Res, Err>(
  endpoint: Endpoint<Req, Res, Err>,
  handle: Handle<Req, Res, Err>,
  data: Uint8Array,
): Effect.Effect<{ json: WireReply; attachment?: Uint8Array | undefined }> =>
  Effect.gen(function* () {
    const frame = decodeFrame(data);
    if (typeof frame === "string") return { json: { ok: false, malformed: frame } };
    const request = Schema.decodeUnknownExit(endpoint.request)(frame.json);
    if (Exit.isFailure(request)) return { json: { ok: false, malformed: Cause.pretty(request.cause) } };
    const exit = yield* Effect.exit(Effect.suspend(() => handle(request.value, frame.attachment)));
    if (Exit.isSuccess(exit)) {
      const value = Schema.encodeSync(endpoint.response)(exit.value.value);
      return { json: { ok: true, value }, attachment: exit.value.attachment };
    }
    const failure = Cause.findErrorOption(exit.cause);
    if (failure._tag === "Some") return { json: { ok: false, error: Schema.encodeSync(endpoint.error)(failure.value) } };
    return { json: { ok: false, internal: Cause.pretty(exit.cause) } };
  });

export const callEndpoint = <Req, Res, Err>(
  nc: NatsConnection,
  subject: string,
  endpoint: Endpoint<Req, Res, Err>,
  request: Req,
  options: { readonly timeoutMs: number; readonly attachment?: Uint8Array | undefined },
): Effect.Effect<Reply<Res>, Err | RemoteUnavailable | MalformedMessage> =>
  Effect.gen(function* () {
    const payload = encodeFrame(Schema.encodeSync(endpoint.request)(request), options.attachment);
    const msg = yield* Effect.tryPromise({
      try: () => nc.request(subject, payload, { timeout: options.timeoutMs }),
      catch: (error) => new RemoteUnavailable({ subject, detail: describeNatsError(error) }),
    });
    const frame = decodeFrame(msg.data);
    if (typeof frame === "string") return yield* new MalformedMessage({ subject, detail: frame });
    // Only a blob in the request can make a server busy, and this path sends none.
    const busy = (detail: string) => new RemoteUnavailable({ subject, detail: `busy: ${detail}` });
    return yield* interpretReply(subject, endpoint, frame.json as WireReply, frame.attachment, busy);
  });

const interpretReply = <Req, Res, Err, Busy>(
  subject: string,
  endpoint: Endpoint<Req, Res, Err>,
  reply: WireReply,
  attachment: Uint8Array | undefined,
  busy: (detail: string) => Busy,
): Effect.Effect<Reply<Res>, Err | RemoteUnavailable | Busy | MalformedMessage> => {
  if (typeof reply !== "object" || reply === null) {
    return Effect.fail(new MalformedMessage({ subject, detail: "reply is not an object" }));
  }
  if (reply.ok) {
    return Schema.decodeUnknownEffect(endpoint.response)(reply.value).pipe(
      Effect.map((value) => ({ value, attachment })),
      Effect.mapError((error) => new MalformedMessage({ subject, detail: error.message })),
    );
  }
  if ("malformed" in reply) return Effect.fail(new MalformedMessage({ subject, detail: reply.malformed }));
  if ("internal" in reply) return Effect.fail(new RemoteUnavailable({ subject, detail: reply.internal }));
  if ("busy" in reply) return Effect.fail(busy(reply.busy));
  return Schema.decodeUnknownEffect(endpoint.error)(reply.error).pipe(
    Effect.mapError((error) => new MalformedMessage({ subject, detail: error.message })),
    Effect.flatMap((error) => Effect.fail(error)),
  );
};

const describeNatsError = (error: unknown): string =>
  error instanceof Error ? `${error.name}: ${error.message}` : String(error);

// ---------------------------------------------------------------------------
// Endpoints whose requests or replies may be larger than NATS's max payload (mail
// bodies): a frame over the limit is offered as a blob and only its reference crosses
// NATS; the other side pulls it in chunks (actors/runtime/blobs.ts), within the node's
// pull budget. Small frames are sent exactly as by serveEndpoint/callEndpoint, so both
// ends interoperate with them. A request whose blob the server cannot pull now (its
// budget is spent) is answered `busy`, and the caller fails with RemoteBusy.

/** How long an offered reply waits to be pulled before it is dropped. */
const REPLY_OFFER_TTL_MS = 120_000;

const failureReply = (failure: RemoteUnavailable | RemoteBusy | MalformedMessage): WireReply => {
  switch (failure._tag) {
    case "MalformedMessage":
      return { ok: false, malformed: failure.detail };
    case "RemoteBusy":
      return { ok: false, busy: failure.detail };
    case "RemoteUnavailable":
      return { ok: false, internal: failure.detail };
  }
};

export const serveChunkedEndpoint = <Req, Res, Err>(
  transport: BlobTransport,
  subject: string,
  endpoint: Endpoint<Req, Res, Err>,
  handle: Handle<Req, Res, Err>,
  options: ServeOptions & { readonly timeoutMs: number },
): Subscription => {
  const run = options.run ?? Effect.runPromise;
  return transport.nc.subscribe(subject, {
    ...(options.queue ? { queue: options.queue } : {}),
    callback: (error, msg) => {
      if (error) return;
      const reply = msg.reply;
      run(
        receiveFrame(transport, subject, msg.data, options.timeoutMs).pipe(
          Effect.matchEffect({
            onFailure: (failure) => Effect.succeed({ json: failureReply(failure), attachment: undefined }),
            onSuccess: (frame) => answer(endpoint, handle, frame),
          }),
          Effect.flatMap(({ json, attachment }) => (mayAnswer(subject, reply) ? respondFramed(transport, (data) => msg.respond(data), json, attachment) : Effect.void)),
          // A pulled request keeps its place in the budget until it is answered: the bytes are held until then.
          Effect.scoped,
        ),
      ).catch(unanswered(subject));
    },
  });
};

export const callChunkedEndpoint = <Req, Res, Err>(
  transport: BlobTransport,
  subject: string,
  endpoint: Endpoint<Req, Res, Err>,
  request: Req,
  options: { readonly timeoutMs: number; readonly attachment?: Uint8Array | undefined },
): Effect.Effect<Reply<Res>, Err | RemoteUnavailable | RemoteBusy | MalformedMessage> =>
  Effect.gen(function* () {
    const { nc } = transport;
    const frame = encodeFrame(Schema.encodeSync(endpoint.request)(request), options.attachment);
    const offer = frame.length > inlineLimitOf(nc)
      ? yield* offerBlob(nc, transport.inboxPrefix, frame, options.timeoutMs + transferAllowanceMs(frame.length))
      : undefined;
    const payload = offer ? encodeBlobFrame(offer.ref) : frame;
    // The callee pulls our blob before it can answer, so the wait grows with its size.
    const timeout = options.timeoutMs + (offer ? transferAllowanceMs(frame.length) : 0);
    const msg = yield* Effect.tryPromise({
      try: () => nc.request(subject, payload, { timeout }),
      catch: (error) => new RemoteUnavailable({ subject, detail: describeNatsError(error) }),
    }).pipe(Effect.ensuring(Effect.sync(() => offer?.close())));
    // A pulled reply holds its place in the budget only while it is pulled and decoded:
    // from here on the bytes are the caller's.
    const replyFrame = yield* Effect.scoped(receiveFrame(transport, subject, msg.data, options.timeoutMs));
    const decoded = decodeFrame(replyFrame);
    if (typeof decoded === "string") return yield* new MalformedMessage({ subject, detail: decoded });
    return yield* interpretReply(subject, endpoint, decoded.json as WireReply, decoded.attachment, (detail) => new RemoteBusy({ subject, detail }));
  });

/** The bytes of the frame `data` stands for: itself, or the blob it references, pulled (within the scope's reservation). */
const receiveFrame = (
  transport: BlobTransport,
  subject: string,
  data: Uint8Array,
  timeoutMs: number,
): Effect.Effect<Uint8Array, RemoteUnavailable | RemoteBusy | MalformedMessage, Scope.Scope> => {
  const frame = decodeFrame(data);
  if (typeof frame === "string" || !frame.blob) return Effect.succeed(data);
  return fetchBlob(transport, subject, frame.json, timeoutMs);
};

/** Sends a reply frame inline when it fits, else offers it as a blob and sends the reference. */
const respondFramed = (
  transport: BlobTransport,
  respond: (data: Uint8Array) => boolean,
  json: WireReply,
  attachment: Uint8Array | undefined,
): Effect.Effect<void> =>
  Effect.suspend(() => {
    const frame = encodeFrame(json, attachment);
    if (frame.length <= inlineLimitOf(transport.nc)) return Effect.sync(() => void respond(frame));
    return Effect.map(offerBlob(transport.nc, transport.inboxPrefix, frame, REPLY_OFFER_TTL_MS), (offer) => void respond(encodeBlobFrame(offer.ref)));
  });
