// Sends one queue entry to its next hop and reports what happened to each recipient.
// Local entries go to the owner node's mailbox; remote ones are resolved, then handed
// to the site's delivery actor. Only permanent answers fail a recipient; everything
// else (DNS trouble, owner node down, 4xx, no connection) defers it.
import { Clock, Effect, Random } from "effect";
import type { RecipientResult } from "../../protocol/delivery.ts";
import type { MailboxError } from "../../protocol/mailbox.ts";
import type { DnsPermanentFailure, DnsTemporaryFailure, MailRoute, ResolveFailure } from "../../protocol/route.ts";
import type { MailboxRouter } from "../mailbox/router.ts";
import type { MessageRecord, QueueEntry } from "../queue/entry.ts";
import { everyone, type Attempt } from "./attempt.ts";
import { dsnParamsOf } from "./dsn.ts";
import { pickSource, poolOf, type PoolsConfig, type SourceAddress } from "./pools.ts";
import type { Sites } from "./sites.ts";

/** `body` loads the message only when a next hop is ready for it (bodies can be large). */
export type Dispatch = (entry: QueueEntry, message: MessageRecord, body: () => Uint8Array) => Effect.Effect<Attempt>;

export interface DispatchDeps {
  readonly mailboxes: MailboxRouter;
  readonly sites: Sites;
  readonly resolve: (domain: string) => Effect.Effect<MailRoute, DnsTemporaryFailure | DnsPermanentFailure>;
  /** Domains whose mail must go over TLS (a leading "." also matches subdomains). */
  readonly requireTls: (domain: string) => boolean;
  /** IP pools: the message's pool (from its attributes) gives each attempt one of its source addresses. */
  readonly pools?: PoolsConfig | undefined;
}

/** The source address of one attempt: one of the message's pool by weight, none without a pool (or one no longer configured). */
const sourceOf = (pools: PoolsConfig | undefined, message: MessageRecord): Effect.Effect<SourceAddress | undefined> => {
  const pool = poolOf(message.attributes);
  const sources = pool === undefined ? undefined : pools?.pools[pool];
  return sources === undefined ? Effect.succeed(undefined) : Effect.map(Random.next, (random) => pickSource(sources, random));
};

/** Routes are remembered this long on the delivering node: a backlog for one domain asks the resolver once, not once per message. */
const ROUTE_MEMO_MS = 5_000;
const ROUTE_MEMO_ENTRIES = 10_000;

/** The resolver over NATS, with a short memo of answers (the resolver's own cache keeps DNS TTLs; this only saves the round trips). */
const memoized = (resolve: DispatchDeps["resolve"]): DispatchDeps["resolve"] => {
  const memo = new Map<string, { readonly route: MailRoute; readonly until: number }>();
  return (domain) =>
    Clock.clockWith((clock) => {
      const known = memo.get(domain);
      if (known && known.until > clock.currentTimeMillisUnsafe()) return Effect.succeed(known.route);
      return resolve(domain).pipe(
        Effect.tap((route) =>
          Effect.sync(() => {
            memo.delete(domain);
            if (memo.size >= ROUTE_MEMO_ENTRIES) memo.delete(memo.keys().next().value!);
            memo.set(domain, { route, until: clock.currentTimeMillisUnsafe() + ROUTE_MEMO_MS });
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
      Effect.map((uid): Attempt => ({ server: via, results: everyone(entry.recipients, { _tag: "Stored", uid }) })),
      Effect.catch((error) => Effect.succeed<Attempt>({ server: via, results: everyone(entry.recipients, mailboxFailure(route.user, error)) })),
    );
  }
  return resolve(route.domain).pipe(
    Effect.matchEffect({
      onFailure: (failure) => Effect.succeed<Attempt>({ server: "dns", results: everyone(entry.recipients, dnsFailure(failure)) }),
      onSuccess: (mailRoute) =>
        Effect.flatMap(sourceOf(deps.pools, message), (source) =>
          deps.sites.deliver({
            route: mailRoute,
            sender: entry.sender,
            recipients: entry.recipients,
            body,
            dsn: dsnParamsOf(message.attributes),
            tls: deps.requireTls(route.domain) ? "require" : "opportunistic",
            source,
          })),
    }),
  );
};

/** Every mailbox trouble defers (the owner may be down, the user may make room); the value keeps the reason. */
const mailboxFailure = (user: string, error: MailboxError): RecipientResult => {
  switch (error._tag) {
    case "OverQuota":
      return { _tag: "OverQuota", user, usedBytes: error.usedBytes, quotaBytes: error.quotaBytes, messageBytes: error.messageBytes };
    case "UnknownUser":
      return { _tag: "UnknownUser", user };
    default:
      return { _tag: "MailboxUnavailable", user, error: error._tag, detail: mailboxErrorDetail(error) };
  }
};

const mailboxErrorDetail = (error: MailboxError): string => {
  switch (error._tag) {
    case "NoSuchMessage":
      return `no message ${error.uid}`;
    case "NotOwner":
      return `not the owner node (${error.node})`;
    case "MaildropInUse":
      return `in use by ${error.holder}`;
    case "LockLost":
      return "lock lost";
    default:
      return "detail" in error ? error.detail : error._tag;
  }
};

/** Temporary DNS trouble defers; a definite answer (NXDOMAIN, null MX, no address) fails. */
const dnsFailure = (failure: ResolveFailure): RecipientResult => {
  const source = { ...(failure.rcode !== undefined ? { rcode: failure.rcode } : {}), ...(failure.server !== undefined ? { server: failure.server } : {}) };
  return failure._tag === "DnsTemporaryFailure"
    ? { _tag: "DnsTemporary", domain: failure.domain, detail: failure.detail, ...source }
    : { _tag: "DnsPermanent", domain: failure.domain, reason: failure.reason ?? "nxdomain", detail: failure.detail, ...source };
};
