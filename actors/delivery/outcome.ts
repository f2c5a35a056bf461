// What one attempt means for its queue entry, decided in one pure function: each
// recipient's outcome and category, the attempt record kept with the entry, whether and
// when the entry waits again, and which notices (DSNs) are due.
//
// Temporary trouble never bounces: a deferred recipient fails only once the entry is
// older than the queue lifetime ("expired"), and then reports the last reply it got. Time
// an operator kept the entry on hold does not count (lifeStartOf).
import {
  enhancedStatus,
  renderResult,
  statusOfResult,
  type AttemptRecord,
  type BounceCategory,
  type QueueHoldReason,
  type RecipientResult,
  type RecipientStatus,
  type WaitReason,
} from "../../protocol/delivery.ts";
import { HISTORY_LIMIT, lifeStartOf, type QueueEntry } from "../queue/entry.ts";
import type { Attempt } from "./attempt.ts";
import { retryDelayMs, type RetrySchedule } from "./backoff.ts";
import type { Classifier } from "./classify.ts";
import { wants, type DsnAction, type DsnParams, type DsnRecipient } from "./dsn.ts";

export interface OutcomePolicy {
  /** Queue lifetime: a recipient still deferred after this age fails ("expired"). */
  readonly maxAgeMs: number;
  /** Age after which a still-deferred entry sends its one delay notice. */
  readonly delayNoticeMs: number;
  readonly retry: RetrySchedule;
  readonly classify: Classifier;
}

export interface RecipientOutcome {
  readonly recipient: string;
  readonly status: RecipientStatus;
  /** What the attempt got; for "expired", the last thing it got. */
  readonly result: RecipientResult;
  /** For every outcome but "delivered". */
  readonly category?: BounceCategory | undefined;
}

export interface Notice {
  readonly action: DsnAction;
  readonly recipients: ReadonlyArray<DsnRecipient>;
}

export interface Decision {
  readonly outcomes: ReadonlyArray<RecipientOutcome>;
  readonly record: AttemptRecord;
  /** The entry as it waits again, or undefined when nothing is left (it is finished). */
  readonly next: QueueEntry | undefined;
  /** DSNs the recipients' NOTIFY asks for (before the null-sender and Auto-Submitted checks). */
  readonly notices: ReadonlyArray<Notice>;
  /** The destination itself is in trouble (unreachable, rate limiting): hold its queue a while. */
  readonly holdQueue: QueueHoldReason | undefined;
}

const expiresAt = (entry: QueueEntry, policy: OutcomePolicy, now: number): number => lifeStartOf(entry, now) + policy.maxAgeMs;

export const decide = (
  entry: QueueEntry,
  attempt: Attempt,
  now: number,
  random: number,
  policy: OutcomePolicy,
  dsn: DsnParams,
): Decision => {
  const expired = now >= expiresAt(entry, policy, now);
  const outcomes = attempt.results.map(({ recipient, result }): RecipientOutcome => {
    const own = statusOfResult(result);
    // Time on hold does not count toward the lifetime: a held entry never expires here.
    const status: RecipientStatus = own === "deferred" && expired && result._tag !== "OperatorHold" ? "expired" : own;
    return { recipient, status, result, ...(status === "delivered" ? {} : { category: policy.classify(result) }) };
  });
  const waiting = outcomes.filter((o) => o.status === "deferred");
  const reason = waiting.length > 0 ? requeueReason(waiting) : undefined;
  const record: AttemptRecord = {
    at: now,
    ...(attempt.mx ? { mx: attempt.mx.host, ip: attempt.mx.ip, ...(attempt.source !== undefined ? { source: attempt.source } : {}) } : { via: attempt.server }),
    results: outcomes.map((o) => ({ rcpt: o.recipient, status: o.status, result: o.result, ...(o.category ? { category: o.category } : {}) })),
    ...(reason ? { requeued: reason } : {}),
  };
  const delayDue = waiting.length > 0 && !entry.delayNotified && now - lifeStartOf(entry, now) >= policy.delayNoticeMs;
  const ownWait = notAttemptedWait(waiting, now);
  // A wait for a warm-up cap or a reputation hold made no attempt: it neither counts as one nor lengthens the backoff.
  const attempts = ownWait ? entry.attempts : entry.attempts + 1;
  const due = ownWait ? ownWait.until + Math.round(random * ownWait.spreadMs) : now + retryDelayMs(policy.retry, attempts, random);
  const next: QueueEntry | undefined =
    waiting.length === 0
      ? undefined
      : {
          ...entry,
          recipients: waiting.map((o) => o.recipient),
          attempts,
          // The last attempt falls at the expiry time, so an entry never outlives it by a whole backoff.
          nextAttemptAt: Math.min(Math.max(due, pausedUntil(waiting)), Math.max(expiresAt(entry, policy, now), now + 1)),
          reason: reason!,
          history: [...(entry.history ?? []), record].slice(-HISTORY_LIMIT),
          ...(delayDue ? { delayNotified: true } : {}),
        };
  return {
    outcomes,
    record,
    next,
    notices: notices(entry, attempt, outcomes, now, policy, dsn, delayDue),
    // A warm-up cap or a reputation hold is one source address's or sender's, not the destination's: other mail for it goes on.
    holdQueue: outcomes.some((o) => o.status !== "delivered" && o.category === "rate-limited" && !isOwnWait(o.result))
      ? "rate-limited"
      : outcomes.some((o) => o.result._tag === "ConnectionFailed" || o.result._tag === "Timeout")
        ? "unreachable"
        : undefined,
  };
};

/**
 * Entries that wait for a warm-up window come back spread over its first twelfth (5 minutes
 * of an hour, 2 hours of a day), not all at the instant it opens.
 */
const WARMUP_SPREAD_MS = { hour: 5 * 60_000, day: 2 * 3_600_000 } as const;

/**
 * Entries held by a reputation pause come back spread over a minute after it ends (over
 * what is left of the pause when that is shorter); a slowed sender's entry comes back
 * exactly at its turn (the turn was given to it).
 */
const PAUSE_SPREAD_MS = 60_000;

/** Not attempted for a reason of this node's own (a warm-up cap, a reputation hold, an operator's hold): no attempt was made. */
const isOwnWait = (result: RecipientResult): boolean => result._tag === "WarmupCap" || result._tag === "ReputationHold" || result._tag === "OperatorHold";

/**
 * When every recipient left waits for a warm-up cap, a reputation hold or an operator's
 * hold (one attempt's recipients share it): the wait that ends last, and how widely to
 * spread the comeback.
 */
const notAttemptedWait = (waiting: ReadonlyArray<RecipientOutcome>, now: number): { readonly until: number; readonly spreadMs: number } | undefined => {
  let latest: { until: number; spreadMs: number } | undefined;
  for (const { result } of waiting) {
    if (!isOwnWait(result)) return undefined;
    // Held: the spool keeps the entry held (its due time is the hold's); due now should the hold be gone already.
    if (result._tag === "OperatorHold") {
      if (latest === undefined) latest = { until: now, spreadMs: 0 };
      continue;
    }
    if (result._tag !== "WarmupCap" && result._tag !== "ReputationHold") return undefined;
    const spreadMs =
      result._tag === "WarmupCap" ? WARMUP_SPREAD_MS[result.window]
      : result.action === "pause" ? Math.min(PAUSE_SPREAD_MS, Math.max(0, result.until - now))
      : 0;
    if (latest === undefined || result.until > latest.until) latest = { until: result.until, spreadMs };
  }
  return latest;
};
/** A recipient not attempted because its site is paused waits at least until the pause ends. */
const pausedUntil = (waiting: ReadonlyArray<RecipientOutcome>): number =>
  waiting.reduce((latest, o) => (o.result._tag === "BackedOff" ? Math.max(latest, o.result.until) : latest), 0);

const requeueReason = (waiting: ReadonlyArray<RecipientOutcome>): WaitReason => {
  if (waiting.some((o) => o.result._tag === "OperatorHold")) return "held";
  if (waiting.some((o) => o.result._tag === "ReputationHold")) return "reputation-hold";
  if (waiting.some((o) => o.result._tag === "BackedOff")) return "backed-off";
  // A host that says "slow down" (even in its greeting) is rate limiting, whatever else broke.
  if (waiting.some((o) => o.category === "rate-limited" && o.result._tag !== "WarmupCap")) return "rate-limited";
  switch (waiting[0]!.result._tag) {
    case "ConnectionFailed":
    case "Timeout":
    case "ProtocolError":
      return "connection-failed";
    case "TlsFailed":
      return "tls-unavailable";
    case "DnsTemporary":
      return "dns-temporary";
    case "MailboxUnavailable":
    case "OverQuota":
    case "UnknownUser":
      return "mailbox-unavailable";
    case "Internal":
    case "QueueWaitExceeded":
      return "dispatch-failed";
    case "WarmupCap":
      return "warmup-cap";
    case "BackedOff":
      return "backed-off";
    case "ReputationHold":
      return "reputation-hold";
    case "OperatorHold":
      return "held";
    case "Reply":
      return "temporary-reply";
    // Never deferred: these fail the recipient or deliver it.
    case "Stored":
    case "DnsPermanent":
    case "ConversionFailed":
    case "TooLarge":
    case "Returned":
    case "Suppressed":
    case "AsyncBounce":
      return "temporary-reply";
  }
};

const notices = (
  entry: QueueEntry,
  attempt: Attempt,
  outcomes: ReadonlyArray<RecipientOutcome>,
  now: number,
  policy: OutcomePolicy,
  dsn: DsnParams,
  delayDue: boolean,
): Notice[] => {
  const report = (o: RecipientOutcome, action: DsnAction): DsnRecipient => ({
    finalRecipient: o.recipient,
    orcpt: dsn.recipient(o.recipient).orcpt,
    action,
    status: dsnStatus(o),
    remoteMta: attempt.mx?.host,
    diagnostic: diagnosticOf(o.result),
    lastAttemptAt: now,
    ...(action === "delayed" ? { willRetryUntil: expiresAt(entry, policy, now) } : {}),
  });
  const pick = (status: ReadonlyArray<RecipientStatus>, kind: "FAILURE" | "DELAY" | "SUCCESS") =>
    outcomes.filter((o) => status.includes(o.status) && wants(dsn.recipient(o.recipient).notify, kind));
  // A suppressed recipient gets no DSN: the list refused it, as submission would have, and
  // the sender hears of it from the "suppressed" event (a bulk sender wants no bounce mail for it).
  const failed = pick(["failed", "expired"], "FAILURE").filter((o) => o.result._tag !== "Suppressed").map((o) => report(o, "failed"));
  const delayed = delayDue ? pick(["deferred"], "DELAY").map((o) => report(o, "delayed")) : [];
  // A host that speaks DSN took NOTIFY along: it reports success from here on, not us (RFC 3461 §5.2.2).
  const successAction: DsnAction = entry.route.kind === "local" ? "delivered" : "relayed";
  const succeeded = entry.route.kind === "local" || !attempt.peerDsn ? pick(["delivered"], "SUCCESS").map((o) => report(o, successAction)) : [];
  return [
    ...(failed.length > 0 ? [{ action: "failed" as const, recipients: failed }] : []),
    ...(delayed.length > 0 ? [{ action: "delayed" as const, recipients: delayed }] : []),
    ...(succeeded.length > 0 ? [{ action: successAction, recipients: succeeded }] : []),
  ];
};

/** RFC 3463 4.4.7 (delivery time expired) once expired, the last result staying in Diagnostic-Code; else the result's own status. */
export const dsnStatus = (outcome: Pick<RecipientOutcome, "status" | "result">): string =>
  outcome.status === "expired" ? "4.4.7" : enhancedStatus(outcome.result);

/** Diagnostic-Code (RFC 3464 §2.3.6): `smtp` for a reply the remote MTA gave, `x-tern` for what this node saw. */
const diagnosticOf = (result: RecipientResult): NonNullable<DsnRecipient["diagnostic"]> => ({
  type: result._tag === "Reply" ? "smtp" : "x-tern",
  text: renderResult(result),
});
