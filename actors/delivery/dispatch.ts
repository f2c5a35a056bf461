// Sends one queue entry to its next hop and reports what happened to each recipient.
// Local entries go to the owner node's mailbox; remote ones are resolved, then handed
// to the site's delivery actor. Only permanent answers fail a recipient; everything
// else (DNS trouble, owner node down, 4xx, no connection) defers it. Remote mail of a
// sender domain a reputation threshold holds is deferred unsent, before anything is asked
// of DNS or a site.
import { Clock, Effect, Exit, Random } from "effect";
import { statusOfResult, type RecipientResult } from "../../protocol/delivery.ts";
import type { MailboxError } from "../../protocol/mailbox.ts";
import type { DnsPermanentFailure, DnsTemporaryFailure, MailRoute, ResolveFailure } from "../../protocol/route.ts";
import { domainOf } from "../common/domains.ts";
import type { MailboxRouter } from "../mailbox/router.ts";
import type { MessageRecord, QueueEntry } from "../queue/entry.ts";
import { everyone, type Attempt } from "./attempt.ts";
import { dsnParamsOf } from "./dsn.ts";
import { pickSource, poolOf, type PoolsConfig, type SourceAddress } from "./pools.ts";
import { providerOfHosts, type ProviderTable } from "./providers.ts";
import type { ReputationHolds } from "./reputation-holds.ts";
import type { Sites } from "./sites.ts";
import { chooseSource, type CapReached, type Spend, type WarmupUsage } from "./warmup-usage.ts";

/**
 * `body` loads the message only when a next hop is ready for it (bodies can be large);
 * undefined when it is gone, and nothing is sent. `mayStart` is asked at that moment too:
 * false (an operator held the entry meanwhile, or it left the queue) and nothing is sent;
 * the recipients get an OperatorHold result.
 */
export type Dispatch = (entry: QueueEntry, message: MessageRecord, body: () => Uint8Array | undefined, mayStart: () => boolean) => Effect.Effect<Attempt>;

export interface DispatchDeps {
  readonly mailboxes: MailboxRouter;
  readonly sites: Sites;
  readonly resolve: (domain: string) => Effect.Effect<MailRoute, DnsTemporaryFailure | DnsPermanentFailure>;
  /** Domains whose mail must go over TLS (a leading "." also matches subdomains). */
  readonly requireTls: (domain: string) => boolean;
  /** IP pools: the message's pool (from its attributes) gives each attempt one of its source addresses. */
  readonly pools?: PoolsConfig | undefined;
  /** Warm-up caps of cold pool addresses: their usage, and the provider table that names a destination's provider. */
  readonly warmup?: { readonly usage: WarmupUsage; readonly providers: ProviderTable } | undefined;
  /** The envelope sender a remote attempt uses (VERP, actors/feedback/token.ts); default the entry's own. */
  readonly envelopeSender?: ((entry: QueueEntry) => string) | undefined;
  /** Sender domains reputation thresholds pause or slow. */
  readonly holds?: ReputationHolds | undefined;
}

/** Where an attempt leaves from: an address (none: the system's default), with the warm-up allowance it took; or a wait for a cap. */
type Source = { readonly source: SourceAddress | undefined; readonly spend?: Spend | undefined } | { readonly wait: CapReached };

const DEFAULT_SOURCE: Source = { source: undefined };

type SourceOf = (message: MessageRecord, route: MailRoute) => Effect.Effect<Source>;

/**
 * The source of one attempt: an address of the message's pool by weight; none without a
 * pool (or one no longer configured). Only pools with a cold address consult the warm-up
 * ledger (and name the destination's provider), so other mail pays nothing for warm-up.
 */
const makeSourceOf = (deps: DispatchDeps): SourceOf => {
  const { pools, warmup } = deps;
  const warming = new Set(Object.entries(pools?.pools ?? {}).filter(([, sources]) => sources.some((s) => s.warmup !== undefined)).map(([name]) => name));
  // Routes come from the resolver memo, the same object for a while: the provider is found once per route.
  const providers = new WeakMap<MailRoute, string>();
  const providerOf = (table: ProviderTable, route: MailRoute) => {
    let provider = providers.get(route);
    if (provider === undefined) providers.set(route, (provider = providerOfHosts(route.hosts.map((host) => host.name), table)));
    return provider;
  };
  return (message, route) => {
    const pool = poolOf(message.attributes);
    const sources = pool === undefined ? undefined : pools?.pools[pool];
    if (sources === undefined) return Effect.succeed(DEFAULT_SOURCE);
    if (warmup === undefined || !warming.has(pool!)) return Effect.map(Random.next, (random): Source => ({ source: pickSource(sources, random) }));
    return Effect.flatMap(Random.next, (random) =>
      Effect.flatMap(Random.next, (overflowRandom) =>
        Clock.clockWith((clock) =>
          Effect.sync((): Source => {
            const overflow = pools?.overflow?.[pool!] ?? "warm";
            const provider = providerOf(warmup.providers, route);
            return chooseSource(warmup.usage, sources, overflow, provider, clock.currentTimeMillisUnsafe(), random, overflowRandom) ?? DEFAULT_SOURCE;
          }),
        ),
      ),
    );
  };
};

/** Not attempted: the pool waits for a cold address's cap. Every recipient defers until the window opens. */
const waitForCap = (recipients: ReadonlyArray<string>, cap: CapReached): Attempt => ({
  server: "warm-up",
  source: cap.source.address,
  results: everyone(recipients, { _tag: "WarmupCap", source: cap.source.address, provider: cap.provider, window: cap.window, cap: cap.cap, until: cap.until }),
});

/** The remote server took the message for at least one recipient: it counts against the address's warm-up cap. */
const tookIt = (attempt: Attempt) => attempt.results.some(({ result }) => statusOfResult(result) === "delivered");

/** Settles the allowance the attempt took, however it ends (an interrupted one spends nothing). */
const spending = (spend: Spend, attempt: Effect.Effect<Attempt>): Effect.Effect<Attempt> =>
  Effect.onExit(attempt, (exit) => Effect.map(Clock.currentTimeMillis, (now) => spend.settle(Exit.isSuccess(exit) && tookIt(exit.value), now)));

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
  const sourceOf = makeSourceOf(deps);
  return (entry, message, body, mayStart) => dispatchOne(deps, resolve, sourceOf, entry, message, body, mayStart);
};

const dispatchOne = (
  deps: DispatchDeps,
  resolve: DispatchDeps["resolve"],
  sourceOf: SourceOf,
  entry: QueueEntry,
  message: MessageRecord,
  body: () => Uint8Array | undefined,
  mayStart: () => boolean,
): Effect.Effect<Attempt> => {
  const route = entry.route;
  if (route.kind === "local") {
    const via = `mailbox/${route.user}`;
    const gone: RecipientResult = { _tag: "Internal", detail: "the message body is gone from the spool" };
    return Effect.suspend((): Effect.Effect<RecipientResult, MailboxError> => {
      if (!mayStart()) return Effect.succeed({ _tag: "OperatorHold" });
      const bytes = body();
      if (bytes === undefined) return Effect.succeed(gone);
      return deps.mailboxes
        .deliver(route.user, entry.id, withFinalDeliveryHeaders(entry.sender, route.user, bytes), folderOf(message.attributes))
        .pipe(Effect.map((uid): RecipientResult => ({ _tag: "Stored", uid })));
    }).pipe(
      Effect.map((result): Attempt => ({ server: via, results: everyone(entry.recipients, result) })),
      Effect.catch((error) => Effect.succeed<Attempt>({ server: via, results: everyone(entry.recipients, mailboxFailure(route.user, error)) })),
    );
  }
  const remote = resolve(route.domain).pipe(
    Effect.matchEffect({
      onFailure: (failure) => Effect.succeed<Attempt>({ server: "dns", results: everyone(entry.recipients, dnsFailure(failure)) }),
      onSuccess: (mailRoute) =>
        Effect.flatMap(sourceOf(message, mailRoute), (chosen) => {
          if ("wait" in chosen) return Effect.succeed(waitForCap(entry.recipients, chosen.wait));
          const sent = deps.sites.deliver({
            route: mailRoute,
            sender: deps.envelopeSender?.(entry) ?? entry.sender,
            recipients: entry.recipients,
            body,
            mayStart,
            dsn: dsnParamsOf(message.attributes),
            tls: deps.requireTls(route.domain) ? "require" : "opportunistic",
            source: chosen.source,
          });
          return chosen.spend ? spending(chosen.spend, sent) : sent;
        }),
    }),
  );
  return unlessSenderHeld(deps.holds, entry, remote);
};

/** Not attempted when the sender domain is paused, or slowed and this is not its turn; else `send`. */
const unlessSenderHeld = (holds: ReputationHolds | undefined, entry: QueueEntry, send: Effect.Effect<Attempt>): Effect.Effect<Attempt> => {
  if (holds === undefined || entry.sender === "") return send;
  const senderDomain = domainOf(entry.sender);
  return Clock.clockWith((clock) => {
    const hold = holds.sender(senderDomain, clock.currentTimeMillisUnsafe());
    return hold === undefined ? send : Effect.succeed<Attempt>({ server: "reputation", results: everyone(entry.recipients, hold) });
  });
};

/**
 * The headers of final delivery, in front of the message as stored in the mailbox:
 * `Return-Path:` with the envelope sender (RFC 5321 §4.4; `<>` for DSNs and other mail
 * from the null sender) and `Delivered-To:` with the mailbox's address, as Postfix writes
 * it (it also lets a user's filters see which of their addresses the mail came by).
 */
export const withFinalDeliveryHeaders = (sender: string, mailbox: string, message: Uint8Array): Uint8Array =>
  Buffer.concat([Buffer.from(`Return-Path: <${sender}>\r\nDelivered-To: ${mailbox}\r\n`, "utf8"), message]);

/** The folder the session chose for the message (Junk when inbound authentication quarantined it); undefined: INBOX. */
const folderOf = (attributes: Readonly<Record<string, unknown>> | undefined): string | undefined =>
  typeof attributes?.folder === "string" ? attributes.folder : undefined;

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
