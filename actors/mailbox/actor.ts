// The mailbox actors of this node: one per local user whose mailbox this node owns,
// spawned on first use. Each serialises its user's writes; the store does the I/O.
import { Effect } from "effect";
import type { ActorRef } from "../runtime/actor.ts";
import { spawnActor, type AskError } from "../runtime/actor.ts";
import type { Supervisor } from "../runtime/supervisor.ts";
import { MailboxUnavailable, NoSuchMessage, type MaildropEntry } from "../retriever/maildrop.ts";
import type { MailboxError } from "../../protocol/mailbox.ts";
import type { MailboxStore } from "./store.ts";

export type MailboxAsk =
  | { readonly _tag: "Deliver"; readonly entryId: string; readonly body: Uint8Array }
  | { readonly _tag: "List" }
  | { readonly _tag: "Retrieve"; readonly uid: string }
  | { readonly _tag: "Remove"; readonly uids: ReadonlyArray<string> };

export type MailboxAnswer =
  | { readonly _tag: "Delivered"; readonly uid: string }
  | { readonly _tag: "Listing"; readonly messages: ReadonlyArray<MaildropEntry> }
  | { readonly _tag: "Body"; readonly body: Uint8Array }
  | { readonly _tag: "Removed"; readonly count: number };

export interface LocalMailboxes {
  readonly ask: (user: string, message: MailboxAsk) => Effect.Effect<MailboxAnswer, MailboxError>;
  readonly stop: (graceMs: number) => Effect.Effect<void>;
}

const ASK_TIMEOUT_MS = 30_000;

export const makeLocalMailboxes = (store: MailboxStore, supervisor: Supervisor): LocalMailboxes => {
  const actors = new Map<string, ActorRef<MailboxAsk, MailboxAnswer, MailboxError>>();

  const handlerFor = (user: string) => (message: MailboxAsk): Effect.Effect<MailboxAnswer, MailboxError> => {
    switch (message._tag) {
      case "Deliver":
        return store.deliver(user, message.entryId, message.body).pipe(
          Effect.map((uid) => ({ _tag: "Delivered" as const, uid: String(uid) })),
        );
      case "List":
        return Effect.sync(() => ({
          _tag: "Listing" as const,
          messages: store.list(user).map((info) => ({ uid: String(info.uid), size: info.size })),
        }));
      case "Retrieve": {
        const body = store.body(user, Number(message.uid));
        return body ? Effect.succeed({ _tag: "Body" as const, body }) : Effect.fail(new NoSuchMessage({ user, uid: message.uid }));
      }
      case "Remove":
        return store.remove(user, message.uids.map(Number)).pipe(
          Effect.as({ _tag: "Removed" as const, count: message.uids.length }),
        );
    }
  };

  const actorFor = (user: string) =>
    Effect.gen(function* () {
      const existing = actors.get(user);
      if (existing) return existing;
      const actor = yield* spawnActor({ name: `mailbox/${user}`, capacity: 1_000, init: Effect.succeed(handlerFor(user)) }, supervisor);
      actors.set(user, actor);
      return actor;
    });

  const asUnavailable = (user: string) => (error: MailboxError | AskError): MailboxError =>
    "_tag" in error && (error._tag === "MailboxFull" || error._tag === "AskTimeout" || error._tag === "ActorCrashed" || error._tag === "ActorStopped")
      ? new MailboxUnavailable({ user, detail: `${error._tag}` })
      : (error as MailboxError);

  return {
    ask: (user, message) =>
      actorFor(user).pipe(
        Effect.flatMap((actor) => actor.ask(message, ASK_TIMEOUT_MS)),
        Effect.mapError(asUnavailable(user)),
      ),
    stop: (graceMs) => Effect.forEach([...actors.values()], (actor) => actor.stop(graceMs), { discard: true }),
  };
};
