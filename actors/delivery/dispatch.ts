// Sends one queue entry to its next hop and reports what happened to each recipient.
// Local entries go to the owner node's mailbox; remote ones are resolved, then handed
// to the site's delivery actor. Only permanent answers fail a recipient; everything
// else (DNS trouble, owner node down, 4xx, no connection) defers it.
import { Effect } from "effect";
import { dnsFailureReply, type DnsPermanentFailure, type DnsTemporaryFailure, type MailRoute } from "../../protocol/route.ts";
import type { MailboxError } from "../../protocol/mailbox.ts";
import type { MailboxRouter } from "../mailbox/router.ts";
import type { MessageRecord, QueueEntry } from "../queue/entry.ts";
import { everyone, type Attempt } from "./attempt.ts";
import { dsnParamsOf } from "./dsn.ts";
import type { Sites } from "./sites.ts";

/** `body` loads the message only when a next hop is ready for it (bodies can be large). */
export type Dispatch = (entry: QueueEntry, message: MessageRecord, body: () => Uint8Array) => Effect.Effect<Attempt>;

export interface DispatchDeps {
  readonly mailboxes: MailboxRouter;
  readonly sites: Sites;
  readonly resolve: (domain: string) => Effect.Effect<MailRoute, DnsTemporaryFailure | DnsPermanentFailure>;
  /** Domains whose mail must go over TLS (a leading "." also matches subdomains). */
  readonly requireTls: (domain: string) => boolean;
}

/** Routes are remembered this long on the delivering node: a backlog for one domain asks the resolver once, not once per message. */
const ROUTE_MEMO_MS = 5_000;
const ROUTE_MEMO_ENTRIES = 10_000;

/** The resolver over NATS, with a short memo of answers (the resolver's own cache keeps DNS TTLs; this only saves the round trips). */
const memoized = (resolve: DispatchDeps["resolve"]): DispatchDeps["resolve"] => {
  const memo = new Map<string, { readonly route: MailRoute; readonly until: number }>();
  return (domain) =>
    Effect.suspend(() => {
      const known = memo.get(domain);
      if (known && known.until > Date.now()) return Effect.succeed(known.route);
      return resolve(domain).pipe(
        Effect.tap((route) =>
          Effect.sync(() => {
            memo.delete(domain);
            if (memo.size >= ROUTE_MEMO_ENTRIES) memo.delete(memo.keys().next().value!);
            memo.set(domain, { route, until: Date.now() + ROUTE_MEMO_MS });
          }),
        ),
      );
    });
};

export const makeDispatch = (deps: DispatchDeps): Dispatch => {
  const resolve = memoized(deps.resolve);
  return (entry, message, body) => dispatchOne(deps, resolve, entry, message, body);
};

const dispatchOne = (
  deps: DispatchDeps,
  resolve: DispatchDeps["resolve"],
  entry: QueueEntry,
  message: MessageRecord,
  body: () => Uint8Array,
): Effect.Effect<Attempt> => {
  const route = entry.route;
  if (route.kind === "local") {
    const via = `mailbox/${route.user}`;
    return Effect.suspend(() => deps.mailboxes.deliver(route.user, entry.id, body())).pipe(
      Effect.map((uid): Attempt => ({ server: via, results: everyone(entry.recipients, "delivered", `250 2.0.0 stored as uid ${uid}`) })),
      Effect.catch((error) => Effect.succeed<Attempt>({ server: via, trouble: "mailbox", results: everyone(entry.recipients, "deferred", mailboxReply(error)) })),
    );
  }
  return resolve(route.domain).pipe(
    Effect.matchEffect({
      onFailure: (failure) =>
        Effect.succeed<Attempt>({
          server: "dns",
          trouble: "dns",
          results: everyone(entry.recipients, failure._tag === "DnsPermanentFailure" ? "failed" : "deferred", dnsFailureReply(failure)),
        }),
      onSuccess: (mailRoute) =>
        deps.sites.deliver({
          route: mailRoute,
          sender: entry.sender,
          recipients: entry.recipients,
          body,
          dsn: dsnParamsOf(message.attributes),
          tls: deps.requireTls(route.domain) ? "require" : "opportunistic",
        }),
    }),
  );
};

/** Every mailbox trouble defers (the owner may be down, the user may make room); the text keeps the reason. */
const mailboxReply = (error: MailboxError): string => {
  switch (error._tag) {
    case "OverQuota":
      return `452 4.2.2 mailbox full: ${error.detail}`;
    case "UnknownUser":
      return `450 4.1.1 no mailbox for ${error.user} on its owner node`;
    default:
      return `451 4.2.0 mailbox: ${error._tag}${"detail" in error && error.detail ? `: ${error.detail}` : ""}`;
  }
};
