// Makes an actor kind addressable over NATS: request/reply for asks, a queue group
// for stateless kinds. Requests and replies are Effect Schema types decoded at the
// edge; a malformed message gets a typed MalformedMessage reply and never reaches
// (or crashes) the handler.
import { Cause, Effect, Exit, Schema } from "effect";
import type { NatsConnection, Subscription } from "@nats-io/transport-node";
import { MalformedMessage, RemoteUnavailable } from "../../protocol/errors.ts";
import { decodeFrame, encodeFrame } from "../../protocol/wire.ts";

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
  | { readonly ok: false; readonly internal: string };

export type Handle<Req, Res, Err> = (
  request: Req,
  attachment: Uint8Array | undefined,
) => Effect.Effect<Reply<Res>, Err>;

export const serveEndpoint = <Req, Res, Err>(
  nc: NatsConnection,
  subject: string,
  endpoint: Endpoint<Req, Res, Err>,
  handle: Handle<Req, Res, Err>,
  options: { readonly queue?: string } = {},
): Subscription =>
  nc.subscribe(subject, {
    ...(options.queue ? { queue: options.queue } : {}),
    callback: (error, msg) => {
      if (error) return;
      void Effect.runPromise(answer(endpoint, handle, msg.data)).then(({ json, attachment }) => {
        if (msg.reply) msg.respond(encodeFrame(json, attachment));
      });
    },
  });

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
    return yield* interpretReply(subject, endpoint, frame.json as WireReply, frame.attachment);
  });

const interpretReply = <Req, Res, Err>(
  subject: string,
  endpoint: Endpoint<Req, Res, Err>,
  reply: WireReply,
  attachment: Uint8Array | undefined,
): Effect.Effect<Reply<Res>, Err | RemoteUnavailable | MalformedMessage> => {
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
  return Schema.decodeUnknownEffect(endpoint.error)(reply.error).pipe(
    Effect.mapError((error) => new MalformedMessage({ subject, detail: error.message })),
    Effect.flatMap((error) => Effect.fail(error)),
  );
};

const describeNatsError = (error: unknown): string =>
  error instanceof Error ? `${error.name}: ${error.message}` : String(error);
