// Routes mailbox asks to the owner node: straight to the local actor when this node
// owns the mailbox, over NATS otherwise (bodies over NATS's max payload take the chunked
// path). Also serves this node's mailboxes on NATS. Any failure to reach the owner is
// MailboxUnavailable (an owner too busy pulling other bodies among them): the caller
// defers (delivery) or answers [SYS/TEMP] (POP3), never bounces.
// Which node owns a mailbox is placement.ts's decision: this node's own record first, then
// the KV, then the other nodes' records. An ask that arrives here over NATS is served only
// for a mailbox this node holds (or may take): anything else gets NotOwner.
import { Effect, type Scope } from "effect";
import {
  MAILBOX_OPERATIONS,
  MailboxUnavailable,
  mailboxEndpoints,
  NoSuchFolder,
  NotOwner,
  type MailboxError,
  type MailboxOperationName,
  type RequestOf,
  type ResponseOf,
} from "../../protocol/mailbox.ts";
import type { Subjects } from "../../protocol/subjects.ts";
import type { BlobTransport } from "../runtime/blobs.ts";
import { callChunkedEndpoint, serveChunkedEndpoint, servedInScope, type Endpoint, type Reply } from "../runtime/remote.ts";
import type { LocalMailboxes } from "./actor.ts";
import type { Placement } from "./placement.ts";

export interface MailboxRouter {
  /** Stores a queue entry's body in the user's mailbox; resolves to its UID once committed on the owner. */
  /** Into `folder` when given (created when missing), else INBOX. */
  readonly deliver: (user: string, entryId: string, body: Uint8Array, folder?: string) => Effect.Effect<string, MailboxError>;
  /** Any mailbox operation, on whichever node owns the mailbox. */
  readonly call: <K extends MailboxOperationName>(
    op: K,
    request: RequestOf<K>,
    attachment?: Uint8Array,
  ) => Effect.Effect<Reply<ResponseOf<K>>, MailboxError>;
  /** Answers asks for the mailboxes this node owns, for as long as the scope is open. */
  readonly serve: () => Effect.Effect<void, never, Scope.Scope>;
}

export interface MailboxRouterOptions {
  readonly nodeId: string;
  /** The node's NATS connection with its inbox and pull budget (bodies are pulled within it). */
  readonly transport: BlobTransport;
  readonly subjects: Subjects;
  readonly placement: Placement;
  readonly local: LocalMailboxes;
  readonly timeoutMs: number;
}

/** Lock token of a maildrop that has no owner node yet: empty, nothing to guard. */
export const UNOWNED_LOCK = "unowned";

/** Operations that store something: a mailbox nobody owns yet is placed (claimed) for them. */
const CLAIMING: ReadonlySet<MailboxOperationName> = new Set(["deliver", "append", "folder", "copy"]);

/** What a mailbox that never received mail looks like: an empty INBOX. */
const EMPTY_INBOX = { name: "INBOX", uidValidity: 1, uidNext: 1, messages: 0, bytes: 0, unseen: 0 };

export const makeMailboxRouter = (options: MailboxRouterOptions): MailboxRouter => {
  const { nodeId, transport, subjects, placement, local } = options;

  const unavailable = (user: string, detail: string) => new MailboxUnavailable({ user, detail });

  const endpoint = <K extends MailboxOperationName>(op: K) =>
    mailboxEndpoints[op] as unknown as Endpoint<RequestOf<K>, ResponseOf<K>, MailboxError>;

  const ask = <K extends MailboxOperationName>(owner: string, op: K, request: RequestOf<K>, attachment?: Uint8Array) =>
    callChunkedEndpoint(transport, subjects.mailbox(owner, op), endpoint(op), request, { timeoutMs: options.timeoutMs, attachment });

  /**
   * Asks the owner; when it does not serve the mailbox (NotOwner) or cannot be reached
   * (down, or a forged KV entry naming a node that does not exist), the other nodes are
   * asked whether one holds it, and that holder is asked instead.
   */
  const remote = <K extends MailboxOperationName>(owner: string, op: K, request: RequestOf<K>, attachment?: Uint8Array) =>
    ask(owner, op, request, attachment).pipe(
      Effect.catchIf(
        (error) => error._tag === "NotOwner" || error._tag === "RemoteUnavailable",
        (error) =>
          placement.holderOtherThan(request.user, owner).pipe(
            Effect.flatMap((holder) => (holder === undefined ? Effect.fail(error) : ask(holder, op, request, attachment))),
          ),
      ),
      Effect.mapError((error): MailboxError => {
        switch (error._tag) {
          case "RemoteUnavailable":
          case "RemoteBusy":
          case "MalformedMessage":
            return unavailable(request.user, `${error._tag}: node ${owner}: ${error.detail}`);
          case "NotOwner":
            // A stale owner record; ownership is sticky, so this clears up on a retry.
            return unavailable(request.user, `node ${owner} does not own the mailbox`);
          default:
            return error;
        }
      }),
    );

  const onOwner = <K extends MailboxOperationName>(owner: string, op: K, request: RequestOf<K>, attachment?: Uint8Array) =>
    owner === nodeId
      ? (local[op] as (request: RequestOf<K>, attachment?: Uint8Array) => Effect.Effect<Reply<ResponseOf<K>>, MailboxError>)(request, attachment)
      : remote(owner, op, request, attachment);

  /** What a mailbox nobody owns yet answers: it has never received mail, so it is empty. */
  const unowned = <K extends MailboxOperationName>(op: K, request: RequestOf<K>): Effect.Effect<Reply<ResponseOf<K>>, MailboxError> => {
    const user = request.user;
    switch (op) {
      case "deliver":
        return Effect.fail(unavailable(user, "mailbox has no owner node yet"));
      case "list":
        return Effect.succeed({ value: { messages: [] } as ResponseOf<K> });
      case "open":
        return Effect.succeed({ value: { lock: UNOWNED_LOCK, messages: [] } as ResponseOf<K> });
      case "commit":
        return Effect.succeed({ value: { removed: 0 } as ResponseOf<K> });
      case "retrieve":
      case "body":
        return Effect.fail(unavailable(user, "mailbox has no owner node"));
      case "folders":
        // A new mailbox starts with INBOX subscribed (store.ts).
        return Effect.succeed({ value: { folders: [EMPTY_INBOX], subscribed: ["INBOX"] } as ResponseOf<K> });
      case "view":
        return (request as RequestOf<"view">).folder.toUpperCase() === "INBOX"
          ? Effect.succeed({ value: { folder: EMPTY_INBOX, messages: [] } as ResponseOf<K> })
          : Effect.fail(new NoSuchFolder({ user, folder: (request as RequestOf<"view">).folder }));
      case "flags":
        return Effect.succeed({ value: { messages: [] } as ResponseOf<K> });
      case "expunge":
        return Effect.succeed({ value: { removed: 0 } as ResponseOf<K> });
      default:
        return Effect.succeed({ value: {} as ResponseOf<K> });
    }
  };

  const call = <K extends MailboxOperationName>(op: K, request: RequestOf<K>, attachment?: Uint8Array) =>
    placement.ownerFor(request.user, CLAIMING.has(op)).pipe(
      Effect.flatMap((owner) => (owner === undefined ? unowned(op, request) : onOwner(owner, op, request, attachment))),
    );

  const serveOne = <K extends MailboxOperationName>(op: K) =>
    servedInScope((run) =>
      serveChunkedEndpoint(
        transport,
        subjects.mailbox(nodeId, op),
        endpoint(op),
        // Only for mailboxes this node holds: a stale or forged route gets NotOwner.
        (request, attachment) => placement.servesHere(request.user).pipe(Effect.andThen(onOwner(nodeId, op, request, attachment))),
        { timeoutMs: options.timeoutMs, run },
      ));

  return {
    deliver: (user, entryId, body, folder) =>
      call("deliver", { user, entryId, ...(folder !== undefined ? { folder } : {}) }, body).pipe(Effect.map((reply) => reply.value.uid)),
    call,
    serve: () => Effect.forEach(MAILBOX_OPERATIONS, serveOne, { discard: true }).pipe(Effect.andThen(placement.serve())),
  };
};
