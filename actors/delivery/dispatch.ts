// Sends one queue entry to its next hop and reports what happened to each recipient.
// Local entries go to the owner node's mailbox; remote ones are resolved, then handed
// to the site's delivery actor. Only permanent answers fail a recipient; everything
// else (DNS trouble, owner node down, 4xx, no connection) defers it.
import { Effect } from "effect";
import type { MailRoute } from "../../protocol/route.ts";
import type { DnsPermanentFailure, DnsTemporaryFailure } from "../../protocol/route.ts";
import type { MailboxRouter } from "../mailbox/router.ts";
import type { QueueEntry, RecipientResult } from "../queue/entry.ts";
import type { Attempt } from "./smtp-client.ts";
import type { Sites } from "./sites.ts";

/** `body` loads the message only when a next hop is ready for it (bodies can be large). */
export type Dispatch = (entry: QueueEntry, body: () => Uint8Array) => Effect.Effect<Attempt>;

const everyone = (entry: QueueEntry, status: RecipientResult["status"], reply: string, server: string): Attempt => ({
  server,
  results: entry.recipients.map((recipient) => ({ recipient, status, reply }) as RecipientResult),
});

export const makeDispatch = (deps: {
  readonly nodeId: string;
  readonly mailboxes: MailboxRouter;
  readonly sites: Sites;
  readonly resolve: (domain: string) => Effect.Effect<MailRoute, DnsTemporaryFailure | DnsPermanentFailure>;
}): Dispatch => (entry, body) => {
  const route = entry.route;
  if (route.kind === "local") {
    return Effect.suspend(() => deps.mailboxes.deliver(route.user, entry.id, body())).pipe(
      Effect.map((uid) => everyone(entry, "delivered", `250 2.0.0 stored as uid ${uid}`, `mailbox/${route.user}`)),
      Effect.catch((error) => Effect.succeed(everyone(entry, "deferred", `451 4.2.0 mailbox: ${describe(error)}`, `mailbox/${route.user}`))),
    );
  }
  return deps.resolve(route.domain).pipe(
    Effect.matchEffect({
      onFailure: (failure) =>
        Effect.succeed(
          failure._tag === "DnsPermanentFailure"
            ? everyone(entry, "failed", `550 5.1.2 ${failure.detail}`, "dns")
            : everyone(entry, "deferred", `451 4.4.3 ${failure.detail}`, "dns"),
        ),
      onSuccess: (mailRoute) =>
        Effect.suspend(() => deps.sites.deliver({ route: mailRoute, sender: entry.sender, recipients: entry.recipients, body: body() })),
    }),
  );
};

const describe = (error: { _tag: string; detail?: string }) => (error.detail ? `${error._tag}: ${error.detail}` : error._tag);
