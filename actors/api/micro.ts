// A service served under the NATS micro conventions (ADR-32), so that standard tooling
// (`nats micro ls|info|stats`, any micro client) discovers it: every instance answers
// $SRV.PING, $SRV.INFO and $SRV.STATS, bare or followed by `.<name>` or `.<name>.<id>`,
// with the io.nats.micro.v1.* JSON shapes; error replies carry the Nats-Service-Error and
// Nats-Service-Error-Code headers beside their JSON body.
//
// @nats-io/services implements this too, but is only published as a pre-release tied to
// an old pre-release of nats-core, so Tern follows the wire conventions itself.
// Endpoints are plain values (name, subject, queue group, handler): adding one is adding
// a value to the list. Handlers run as fibers of the caller's scope (servedInScope).
import { Cause, Clock, Effect, Exit, Schema, type Scope } from "effect";
import { headers as natsHeaders, type Msg, type MsgHdrs, type NatsConnection } from "@nats-io/transport-node";
import {
  ApiError,
  ERROR_CODE_HEADER,
  ERROR_HEADER,
  errorStatus,
  type ApiErrorBody,
  type InfoResponse,
  type PingResponse,
  type StatsResponse,
} from "../../protocol/api.ts";
import { servedInScope } from "../runtime/remote.ts";

export interface ServiceIdentity {
  /** Shared by every instance of the service: `[A-Za-z0-9_-]+`. */
  readonly name: string;
  /** This instance (Tern: the node id). */
  readonly id: string;
  readonly version: string;
  readonly description: string;
  readonly metadata: Readonly<Record<string, string>>;
}

/** One request as a handler sees it. */
export interface ApiCall {
  readonly subject: string;
  readonly data: Uint8Array;
  readonly headers: MsgHdrs | undefined;
}

/** A handler answers with a JSON value, or fails with a typed ApiError. */
export type ApiHandler = (call: ApiCall) => Effect.Effect<unknown, ApiError>;

export interface ApiEndpoint {
  readonly name: string;
  readonly subject: string;
  /** Queue group; undefined for a subject only this instance serves. */
  readonly queue: string | undefined;
  readonly metadata?: Readonly<Record<string, string>>;
  readonly handle: ApiHandler;
}

interface Stats {
  requests: number;
  errors: number;
  lastError: string;
  nanos: bigint;
}

const VERBS = ["PING", "INFO", "STATS"] as const;

const json = (value: unknown) => new TextEncoder().encode(JSON.stringify(value));

/**
 * Serves the endpoints and the discovery subjects until the scope closes. `mayReplyTo`
 * decides which reply subjects get an answer: the node publishes it with its own rights,
 * so a forged reply subject (a KV key, the events stream) is never answered.
 */
export const serveMicro = (
  nc: NatsConnection,
  identity: ServiceIdentity,
  endpoints: ReadonlyArray<ApiEndpoint>,
  mayReplyTo: (reply: string) => boolean,
): Effect.Effect<void, never, Scope.Scope> =>
  Effect.gen(function* () {
    const started = new Date(yield* Clock.currentTimeMillis).toISOString();
    const stats = new Map<string, Stats>(endpoints.map((e) => [e.name, { requests: 0, errors: 0, lastError: "", nanos: 0n }]));
    const base = { name: identity.name, id: identity.id, version: identity.version, metadata: { ...identity.metadata } };

    const discovery = (verb: (typeof VERBS)[number]): PingResponse | InfoResponse | StatsResponse => {
      switch (verb) {
        case "PING":
          return { type: "io.nats.micro.v1.ping_response", ...base };
        case "INFO":
          return {
            type: "io.nats.micro.v1.info_response",
            ...base,
            description: identity.description,
            endpoints: endpoints.map((e) => ({ name: e.name, subject: e.subject, queue_group: e.queue ?? "", metadata: { ...e.metadata } })),
          };
        case "STATS":
          return {
            type: "io.nats.micro.v1.stats_response",
            ...base,
            started,
            endpoints: endpoints.map((e) => {
              const s = stats.get(e.name)!;
              return {
                name: e.name,
                subject: e.subject,
                queue_group: e.queue ?? "",
                num_requests: s.requests,
                num_errors: s.errors,
                last_error: s.lastError,
                processing_time: Number(s.nanos),
                average_processing_time: s.requests === 0 ? 0 : Number(s.nanos / BigInt(s.requests)),
              };
            }),
          };
      }
    };

    for (const verb of VERBS) {
      for (const subject of [`$SRV.${verb}`, `$SRV.${verb}.${identity.name}`, `$SRV.${verb}.${identity.name}.${identity.id}`]) {
        yield* servedInScope(() =>
          nc.subscribe(subject, {
            callback: (error, msg) => {
              if (!error && msg.reply && mayReplyTo(msg.reply)) msg.respond(json(discovery(verb)));
            },
          }),
        );
      }
    }

    for (const endpoint of endpoints) {
      const counted = stats.get(endpoint.name)!;
      yield* servedInScope((run) =>
        nc.subscribe(endpoint.subject, {
          ...(endpoint.queue !== undefined ? { queue: endpoint.queue } : {}),
          callback: (error, msg) => {
            if (error || !msg.reply || !mayReplyTo(msg.reply)) return;
            run(answer(endpoint, msg, counted))
              .then((reply) => void msg.respond(reply.data, reply.headers ? { headers: reply.headers } : undefined))
              .catch((failure: unknown) => process.stderr.write(`tern: no reply sent on ${msg.subject}: ${String(failure)}\n`));
          },
        }),
      );
    }
  });

/** Runs the handler, timing it, and turns its outcome into a reply (typed errors and defects alike). */
const answer = (endpoint: ApiEndpoint, msg: Msg, stats: Stats): Effect.Effect<{ data: Uint8Array; headers?: MsgHdrs }> =>
  Effect.gen(function* () {
    const start = yield* Clock.currentTimeNanos;
    const exit = yield* Effect.exit(Effect.suspend(() => endpoint.handle({ subject: msg.subject, data: msg.data, headers: msg.headers })));
    stats.requests++;
    stats.nanos += (yield* Clock.currentTimeNanos) - start;
    if (Exit.isSuccess(exit)) return { data: json(exit.value) };
    const failure = Cause.findErrorOption(exit.cause);
    const error =
      failure._tag === "Some" ? failure.value : new ApiError({ code: "Internal", message: `internal error: ${firstLine(Cause.pretty(exit.cause))}` });
    stats.errors++;
    stats.lastError = `${error.code}: ${error.message}`;
    return errorReply(error);
  });

const firstLine = (text: string) => text.split("\n")[0] ?? text;

const errorReply = (error: ApiError): { data: Uint8Array; headers: MsgHdrs } => {
  const headers = natsHeaders();
  // Header values are one line: a message naming a schema path may have several.
  headers.set(ERROR_HEADER, `${error.code}: ${error.message}`.replace(/[\r\n]+/g, " ").slice(0, 1024));
  headers.set(ERROR_CODE_HEADER, String(errorStatus[error.code]));
  const body: ApiErrorBody = { error: { code: error.code, message: error.message, ...(error.refused ? { refused: error.refused } : {}) } };
  return { data: json(body), headers };
};

/** Decodes a JSON request body with `schema`; anything else is a BadRequest naming the problem. */
export const decodeJson = <S extends Schema.Codec<unknown, unknown>>(schema: S, data: Uint8Array): Effect.Effect<S["Type"], ApiError> =>
  Effect.suspend(() => {
    let value: unknown;
    try {
      value = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(data));
    } catch (error) {
      return Effect.fail(new ApiError({ code: "BadRequest", message: `the request is not JSON: ${(error as Error).message}` }));
    }
    const decoded = Schema.decodeUnknownExit(schema as Schema.Codec<S["Type"], unknown>)(value, { errors: "all", onExcessProperty: "error" });
    if (Exit.isSuccess(decoded)) return Effect.succeed(decoded.value);
    const issue = Cause.findErrorOption(decoded.cause);
    const detail = issue._tag === "Some" ? issue.value.message : Cause.pretty(decoded.cause);
    return Effect.fail(new ApiError({ code: "BadRequest", message: `the request does not match the schema: ${detail.replace(/\s*\n\s*/g, " ")}` }));
  });
