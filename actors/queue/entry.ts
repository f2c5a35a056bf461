// What the node's durable queue holds. One message is stored once; each next hop
// (a remote domain, or a local user's mailbox) gets its own queue entry, so each can
// succeed, defer or fail on its own.

/** Where a queue entry goes next. */
export type Route =
  | { readonly kind: "remote"; readonly domain: string }
  | { readonly kind: "local"; readonly user: string };

/**
 * Why the entry is (again) waiting: KumoMTA-style requeue reasons, kept for operators.
 * "deferred" and "dispatch-failed" are older, generic spellings still found in spools.
 */
export type WaitReason =
  | "received"
  | "deferred"
  | "dispatch-failed"
  /** The next hop answered 4xx. */
  | "temporary-reply"
  /** No MX host could be reached: refused, timed out, closed, 4xx/5xx greeting. */
  | "connection-failed"
  | "dns-temporary"
  /** TLS is required for the domain and the host did not offer it (or the handshake failed). */
  | "tls-unavailable"
  | "rate-limited"
  /** Local delivery: the mailbox's owner node did not take it (down, busy, over quota). */
  | "mailbox-unavailable"
  /** The operator asked for an attempt now (`tern queue retry`). */
  | "retry-now"
  /** The operator resumed the entry's suspended queue. */
  | "resumed";

/** How one recipient came out of one attempt. "expired" is a deferral past the queue lifetime. */
export type RecipientStatus = "delivered" | "deferred" | "failed" | "expired";

/** Failure classes for bounces and deferrals (see actors/delivery/classify.ts). */
export type BounceCategory = "bad-mailbox" | "bad-domain" | "policy" | "quota" | "rate-limited" | "tls" | "dns" | "too-large" | "other";

/** One attempt, as kept with its entry: when, where, what each recipient got, and why it waits again. */
export interface AttemptRecord {
  readonly at: number;
  /** The MX host name and address that answered, or the last one tried when none did. */
  readonly mx?: string;
  readonly ip?: string;
  /** The next hop when it was not an MX: "dns" (resolution failed), "mailbox/<user>". */
  readonly via?: string;
  readonly results: ReadonlyArray<{
    readonly rcpt: string;
    readonly status: RecipientStatus;
    readonly reply: string;
    readonly category?: BounceCategory;
  }>;
  /** Set when recipients are left: why the entry waits again. */
  readonly requeued?: WaitReason;
}

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
  /** The last reply or error seen for this entry, for `tern queue` and logs. */
  readonly lastResult?: string;
  /** The most recent attempts (at most HISTORY_LIMIT; `attempts` counts them all). */
  readonly history?: ReadonlyArray<AttemptRecord>;
  /** A delay notice (RFC 3464 "delayed") went out for this entry; it is sent once. */
  readonly delayNotified?: boolean;
}

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

/** What happened to each recipient in one attempt. */
export type RecipientResult =
  | { readonly recipient: string; readonly status: "delivered"; readonly reply: string }
  | { readonly recipient: string; readonly status: "deferred"; readonly reply: string }
  | { readonly recipient: string; readonly status: "failed"; readonly reply: string };

export const newMessageId = (now: number): string =>
  `${now.toString(36).padStart(9, "0")}${Math.floor(Math.random() * 36 ** 8).toString(36).padStart(8, "0")}`.toUpperCase();

/**
 * The queue an entry waits in: its destination domain, or `local:<user>` for a mailbox
 * (domains never contain ':'). Each queue has its own due order, can be suspended, and
 * has a bound on entries in flight, so one busy destination never holds up the rest.
 */
export const queueOf = (route: Route): string => (route.kind === "remote" ? route.domain : `local:${route.user}`);

/** When the message behind a queue id arrived: ids start with the arrival time in base 36. */
export const arrivalOf = (id: string): number => parseInt(id.slice(0, 9), 36);
