// Routes mailbox asks to the owner node: straight to the local actor when this node
// owns the mailbox, over NATS otherwise. Also serves this node's mailboxes on NATS.
// Any failure to reach the owner is MailboxUnavailable: the caller defers, never bounces.
import { Effect } from "effect";
import type { NatsConnection, Subscription } from "@nats-io/transport-node";
import type { MailboxOwners } from "../../cluster/ownership.ts";
import { mailboxEndpoints, NotOwner, type MailboxError } from "../../protocol/mailbox.ts";
import type { Subjects } from "../../protocol/subjects.ts";
import { callEndpoint, serveEndpoint, type Endpoint, type Reply } from "../runtime/remote.ts";
import { MailboxUnavailable, type MaildropEntry } from "../retriever/maildrop.ts";
import type { LocalMailboxes } from "./actor.ts";

export interface MailboxRouter {
  readonly deliver: (user: string, entryId: string, body: Uint8Array) => Effect.Effect<string, MailboxError>;
  readonly list: (user: string) => Effect.Effect<ReadonlyArray<MaildropEntry>, MailboxError>;
  readonly retrieve: (user: string, uid: string) => Effect.Effect<Uint8Array, MailboxError>;
  readonly remove: (user: string, uids: ReadonlyArray<string>) => Effect.Effect<void, MailboxError>;
  /** Answers asks for the mailboxes this node owns. */
  readonly serve: () => ReadonlyArray<Subscription>;
}

export interface MailboxRouterOptions {
  readonly nodeId: string;
  readonly nc: NatsConnection;
  readonly subjects: Subjects;
  readonly owners: MailboxOwners;
  readonly local: LocalMailboxes;
  /** The node a user's mailbox is configured to live on, if the config says. */
  readonly homeOf: (user: string) => string | undefined;
  readonly timeoutMs: number;
}

export const makeMailboxRouter = (options: MailboxRouterOptions): MailboxRouter => {
  const { nodeId, nc, subjects, owners, local } = options;

  const unavailable = (user: string, detail: string) => new MailboxUnavailable({ user, detail });

  const lookUpOwner = (user: string, claimIfFree: boolean) =>
    Effect.tryPromise({
      try: async () => {
        const owner = await owners.ownerOf(user);
        if (owner !== undefined || !claimIfFree) return owner;
        const home = options.homeOf(user);
        // A mailbox configured to live elsewhere waits for its home node to claim it.
        if (home !== undefined && home !== nodeId) return undefined;
        return owners.claim(user, nodeId);
      },
      catch: (error) => unavailable(user, `owner lookup failed: ${String(error)}`),
    });

  const remote = <Req, Res>(
    owner: string,
    operation: keyof typeof mailboxEndpoints,
    request: Req,
    attachment?: Uint8Array,
  ): Effect.Effect<Reply<Res>, MailboxError> =>
    callEndpoint(nc, subjects.mailbox(owner, operation), mailboxEndpoints[operation] as unknown as Endpoint<Req, Res, MailboxError>, request, {
      timeoutMs: options.timeoutMs,
      attachment,
    }).pipe(
      Effect.mapError((error): MailboxError =>
        error._tag === "RemoteUnavailable" || error._tag === "MalformedMessage"
          ? unavailable((request as { user: string }).user, `${error._tag}: node ${owner}: ${error.detail}`)
          : error,
      ),
    );

  const withOwner = <A>(
    user: string,
    claimIfFree: boolean,
    whenUnowned: Effect.Effect<A, MailboxError>,
    onOwner: (owner: string) => Effect.Effect<A, MailboxError>,
  ) => lookUpOwner(user, claimIfFree).pipe(Effect.flatMap((owner) => (owner === undefined ? whenUnowned : onOwner(owner))));

  const router: MailboxRouter = {
    deliver: (user, entryId, body) =>
      withOwner(user, true, Effect.fail(unavailable(user, "mailbox has no owner node yet")), (owner) =>
        owner === nodeId
          ? local.ask(user, { _tag: "Deliver", entryId, body }).pipe(Effect.map((answer) => (answer._tag === "Delivered" ? answer.uid : "")))
          : remote<{ user: string; entryId: string }, { uid: string }>(owner, "deliver", { user, entryId }, body).pipe(
              Effect.map((reply) => reply.value.uid),
            ),
      ),

    list: (user) =>
      withOwner(user, false, Effect.succeed([]), (owner) =>
        owner === nodeId
          ? local.ask(user, { _tag: "List" }).pipe(Effect.map((answer) => (answer._tag === "Listing" ? answer.messages : [])))
          : remote<{ user: string }, { messages: ReadonlyArray<MaildropEntry> }>(owner, "list", { user }).pipe(
              Effect.map((reply) => reply.value.messages),
            ),
      ),

    retrieve: (user, uid) =>
      withOwner(user, false, Effect.fail(unavailable(user, "mailbox has no owner node")), (owner) =>
        owner === nodeId
          ? local.ask(user, { _tag: "Retrieve", uid }).pipe(Effect.map((answer) => (answer._tag === "Body" ? answer.body : new Uint8Array())))
          : remote<{ user: string; uid: string }, { size: number }>(owner, "retrieve", { user, uid }).pipe(
              Effect.map((reply) => reply.attachment ?? new Uint8Array()),
            ),
      ),

    remove: (user, uids) =>
      withOwner(user, false, Effect.void, (owner) =>
        owner === nodeId
          ? local.ask(user, { _tag: "Remove", uids }).pipe(Effect.asVoid)
          : remote<{ user: string; uids: ReadonlyArray<string> }, { removed: number }>(owner, "remove", { user, uids }).pipe(Effect.asVoid),
      ),

    serve: () => {
      // Only answer for mailboxes this node really owns: a stale route gets NotOwner.
      const ownedHere = (user: string) =>
        Effect.promise(() => owners.ownerOf(user)).pipe(
          Effect.flatMap((owner) => (owner === nodeId ? Effect.void : Effect.fail(new NotOwner({ user, node: nodeId })))),
        );
      return [
        serveEndpoint(nc, subjects.mailbox(nodeId, "deliver"), mailboxEndpoints.deliver, (request, body) =>
          ownedHere(request.user).pipe(
            Effect.andThen(local.ask(request.user, { _tag: "Deliver", entryId: request.entryId, body: body ?? new Uint8Array() })),
            Effect.map((answer) => ({ value: { uid: answer._tag === "Delivered" ? answer.uid : "" } })),
          ),
        ),
        serveEndpoint(nc, subjects.mailbox(nodeId, "list"), mailboxEndpoints.list, (request) =>
          ownedHere(request.user).pipe(
            Effect.andThen(local.ask(request.user, { _tag: "List" })),
            Effect.map((answer) => ({ value: { messages: answer._tag === "Listing" ? answer.messages : [] } })),
          ),
        ),
        serveEndpoint(nc, subjects.mailbox(nodeId, "retrieve"), mailboxEndpoints.retrieve, (request) =>
          ownedHere(request.user).pipe(
            Effect.andThen(local.ask(request.user, { _tag: "Retrieve", uid: request.uid })),
            Effect.map((answer) => {
              const body = answer._tag === "Body" ? answer.body : new Uint8Array();
              return { value: { size: body.length }, attachment: body };
            }),
          ),
        ),
        serveEndpoint(nc, subjects.mailbox(nodeId, "remove"), mailboxEndpoints.remove, (request) =>
          ownedHere(request.user).pipe(
            Effect.andThen(local.ask(request.user, { _tag: "Remove", uids: request.uids })),
            Effect.map(() => ({ value: { removed: request.uids.length } })),
          ),
        ),
      ];
    },
  };
  return router;
};
