// The resolver actor: stateless, so every node runs one and they share a NATS queue
// group; any node's delivery can ask "where does mail for this domain go?".
// It lives in the Scope it is started in: closing it leaves the queue group first, then
// stops the actor (in-flight lookups get a second to finish).
import { Effect, Schema, type Scope } from "effect";
import type { NatsConnection, Subscription } from "@nats-io/transport-node";
import { DnsPermanentFailure, DnsTemporaryFailure, MailRoute, ResolveFailure, ResolveRequest } from "../../protocol/route.ts";
import type { Subjects } from "../../protocol/subjects.ts";
import { spawnActor, type ActorRef } from "../runtime/actor.ts";
import { callEndpoint, serveEndpoint, servedInScope, type Endpoint } from "../runtime/remote.ts";
import type { Supervisor } from "../runtime/supervisor.ts";
import type { CachedResolver } from "./resolver.ts";

const resolveEndpoint: Endpoint<ResolveRequest, MailRoute, ResolveFailure> = {
  request: ResolveRequest,
  response: MailRoute,
  error: ResolveFailure as Schema.Codec<ResolveFailure, unknown>,
};

const RESOLVE_TIMEOUT_MS = 15_000;
const STOP_GRACE_MS = 1_000;

export interface ResolverActor {
  readonly subscription: Subscription;
  readonly actor: ActorRef<string, MailRoute, ResolveFailure>;
}

export const startResolverActor = (
  nc: NatsConnection,
  subjects: Subjects,
  resolver: CachedResolver,
  supervisor: Supervisor,
): Effect.Effect<ResolverActor, never, Scope.Scope> =>
  Effect.gen(function* () {
    const actor = yield* spawnActor<string, MailRoute, ResolveFailure>(
      { name: "resolver", capacity: 10_000, concurrency: 64, init: Effect.succeed((domain) => resolver.resolve(domain)) },
      supervisor,
    );
    yield* Effect.addFinalizer(() => actor.stop(STOP_GRACE_MS));
    const answer = (request: ResolveRequest) =>
      actor.ask(request.domain.toLowerCase(), RESOLVE_TIMEOUT_MS).pipe(
        Effect.map((route) => ({ value: route })),
        Effect.catchTags({
          MailboxFull: (e) => Effect.fail(new DnsTemporaryFailure({ domain: request.domain, detail: e._tag })),
          AskTimeout: (e) => Effect.fail(new DnsTemporaryFailure({ domain: request.domain, detail: e._tag })),
          ActorCrashed: (e) => Effect.fail(new DnsTemporaryFailure({ domain: request.domain, detail: e.reason })),
          ActorStopped: (e) => Effect.fail(new DnsTemporaryFailure({ domain: request.domain, detail: e._tag })),
          ActorEscalated: (e) => Effect.fail(new DnsTemporaryFailure({ domain: request.domain, detail: `${e._tag}: ${e.reason}` })),
        }),
      );
    const subscription = yield* servedInScope((run) =>
      serveEndpoint(nc, subjects.resolve, resolveEndpoint, answer, { queue: subjects.resolverQueueGroup, run }));
    return { subscription, actor };
  });

/**
 * Asks any node's resolver. Not reaching one is temporary, never a bounce. Whoever can
 * publish on the subject can answer, so delivery takes the answer through
 * checked-resolve.ts, never as is.
 */
export const resolveOverNats = (
  nc: NatsConnection,
  subjects: Subjects,
  domain: string,
): Effect.Effect<MailRoute, DnsTemporaryFailure | DnsPermanentFailure> =>
  callEndpoint(nc, subjects.resolve, resolveEndpoint, { domain }, { timeoutMs: RESOLVE_TIMEOUT_MS }).pipe(
    Effect.map((reply) => reply.value),
    Effect.catchTags({
      RemoteUnavailable: (e) => Effect.fail(new DnsTemporaryFailure({ domain, detail: `resolver unreachable: ${e.detail}` })),
      MalformedMessage: (e) => Effect.fail(new DnsTemporaryFailure({ domain, detail: `resolver reply malformed: ${e.detail}` })),
    }),
  );
