// What the node's durable queue holds. One message is stored once; each next hop
// (a remote domain, or a local user's mailbox) gets its own queue entry, so each can
// succeed, defer or fail on its own.
import type { AttemptRecord, WaitReason } from "../../protocol/delivery.ts";
import { domainOf } from "../common/domains.ts";

/** Where a queue entry goes next. */
export type Route =
  | { readonly kind: "remote"; readonly domain: string }
  | { readonly kind: "local"; readonly user: string };

export interface QueueEntry {
  /** `<messageId>.<n>`: ids sort by arrival. */
  readonly id: string;
  readonly messageId: string;
  readonly route: Route;
  /** Empty string is the null sender `<>`. */
  readonly sender: string;
  /** Recipients still to deliver on this route. */
  readonly recipients: ReadonlyArray<string>;
  readonly createdAt: number;
  readonly attempts: number;
  readonly nextAttemptAt: number;
  readonly reason: WaitReason;
  /**
   * The most recent attempts (at most HISTORY_LIMIT; `attempts` counts them all), oldest
   * first.
   */
  readonly history?: ReadonlyArray<AttemptRecord>;
  /** A delay notice (RFC 3464 "delayed") went out for this entry; it is sent once. */
  readonly delayNotified?: boolean;
  /**
   * An operator put the entry on hold at this time (`tern queue hold`): it is never attempted,
   * and its `nextAttemptAt` is HELD_DUE, until it is released. Stored with the entry, so a
   * hold survives a restart and crosses a drain's hand-off.
   */
  readonly heldAt?: number;
  /** Time spent on hold before the last release: not counted in the entry's queue life. */
  readonly heldMs?: number;
}

/**
 * The due time of a held entry: after any real time, so the due index never reaches it
 * and it sorts last in its queue (its queue's head moves past it).
 */
export const HELD_DUE = Number.MAX_SAFE_INTEGER;

/**
 * When the entry's queue life (its lifetime before expiry, and the age of a delay notice)
 * started: its creation, moved later by the time it spent on hold, so a hold never eats
 * into the time the entry has to be delivered. A hold still running is added too.
 */
export const lifeStartOf = (entry: QueueEntry, now: number): number =>
  entry.createdAt + (entry.heldMs ?? 0) + (entry.heldAt !== undefined ? Math.max(0, now - entry.heldAt) : 0);

/**
 * What an operator decided about an entry and the stored copy keeps over an attempt's
 * outcome: an attempt decides from the copy it was given, and a hold (or release) may have
 * been recorded while it was in flight. `next` as it waits again, with `current`'s hold.
 */
export const keepingHold = (next: QueueEntry, current: QueueEntry): QueueEntry => {
  const { heldAt: _heldAt, heldMs: _heldMs, ...rest } = next;
  return {
    ...rest,
    ...(current.heldMs !== undefined ? { heldMs: current.heldMs } : {}),
    ...(current.heldAt !== undefined ? { heldAt: current.heldAt, nextAttemptAt: HELD_DUE, reason: "held" as const } : {}),
  };
};

/** Attempts kept per entry: an entry retried for days must not grow without bound. */
export const HISTORY_LIMIT = 20;

export interface MessageRecord {
  readonly id: string;
  readonly sender: string;
  readonly receivedAt: number;
  readonly size: number;
  /** Queue entries not yet finished; the body is deleted when this reaches 0. */
  readonly openEntries: number;
  /** What the session learned that later hops need: DSN parameters, the authenticated user. */
  readonly attributes?: Readonly<Record<string, unknown>>;
}

/** The id of a message's `n`th queue entry (its `n`th route). */
export const entryIdOf = (messageId: string, n: number): string => `${messageId}.${n}`;

export const newMessageId = (now: number): string =>
  `${now.toString(36).padStart(9, "0")}${Math.floor(Math.random() * 36 ** 8).toString(36).padStart(8, "0")}`.toUpperCase();

/** Where mail for `address` goes from this node: its mailbox when the user is local, else its domain. */
export const routeOf = (address: string, isLocalUser: (address: string) => boolean): Route =>
  isLocalUser(address) ? { kind: "local", user: address.toLowerCase() } : { kind: "remote", domain: domainOf(address) };

/**
 * One queue entry per local user (each mailbox is its own next hop) and one per remote
 * domain, or with `onePerRemoteRecipient` one per remote recipient (per-recipient VERP:
 * each recipient's copy leaves with its own envelope sender, so in its own transaction).
 */
export const routesFor = (
  recipients: ReadonlyArray<string>,
  isLocalUser: (address: string) => boolean,
  options: { readonly onePerRemoteRecipient?: boolean } = {},
): Array<{ route: Route; recipients: string[] }> => {
  const byKey = new Map<string, { route: Route; recipients: string[] }>();
  for (const recipient of recipients) {
    const route = routeOf(recipient, isLocalUser);
    const key = route.kind === "remote" && options.onePerRemoteRecipient === true ? `${queueOf(route)} ${recipient.toLowerCase()}` : queueOf(route);
    const group = byKey.get(key) ?? { route, recipients: [] };
    if (!group.recipients.includes(recipient)) group.recipients.push(recipient);
    byKey.set(key, group);
  }
  return [...byKey.values()];
};

/**
 * The queue an entry waits in: its destination domain, or `local:<user>` for a mailbox
 * (domains never contain ':'). Each queue has its own due order, can be suspended, and
 * has a bound on entries in flight, so one busy destination never holds up the rest.
 */
export const queueOf = (route: Route): string => (route.kind === "remote" ? route.domain : `local:${route.user}`);

/** When the message behind a queue id arrived: ids start with the arrival time in base 36. */
export const arrivalOf = (id: string): number => parseInt(id.slice(0, 9), 36);
