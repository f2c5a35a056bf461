// What the node's durable queue holds. One message is stored once; each next hop
// (a remote domain, or a local user's mailbox) gets its own queue entry, so each can
// succeed, defer or fail on its own.

/** Where a queue entry goes next. */
export type Route =
  | { readonly kind: "remote"; readonly domain: string }
  | { readonly kind: "local"; readonly user: string };

/** Why the entry is (again) waiting: KumoMTA-style requeue reasons, kept for operators. */
export type WaitReason = "received" | "deferred" | "dispatch-failed";

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
}

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
