// What one attempt means for its queue entry, decided in one pure function: each
// recipient's outcome and category, the attempt record kept with the entry, whether and
// when the entry waits again, and which notices (DSNs) are due.
//
// Temporary trouble never bounces: a deferred recipient fails only once the entry is
// older than the queue lifetime ("expired"), and then reports the last reply it got.
import { HISTORY_LIMIT, type AttemptRecord, type BounceCategory, type QueueEntry, type RecipientStatus, type WaitReason } from "../queue/entry.ts";
import type { Attempt } from "./attempt.ts";
import { retryDelayMs, type RetrySchedule } from "./backoff.ts";
import type { Classifier } from "./classify.ts";
import { wants, type DsnAction, type DsnParams, type DsnRecipient } from "./dsn.ts";
import { parseReply, statusOf } from "./reply.ts";

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
  readonly reply: string;
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
  readonly holdQueue: "rate-limited" | "unreachable" | undefined;
}

export const expiresAt = (entry: QueueEntry, policy: OutcomePolicy): number => entry.createdAt + policy.maxAgeMs;

export const decide = (
  entry: QueueEntry,
  attempt: Attempt,
  now: number,
  random: number,
  policy: OutcomePolicy,
  dsn: DsnParams,
): Decision => {
  const expired = now >= expiresAt(entry, policy);
  const outcomes = attempt.results.map((result): RecipientOutcome => {
    const status: RecipientStatus = result.status === "deferred" && expired ? "expired" : result.status;
    return { recipient: result.recipient, status, reply: result.reply, ...(status === "delivered" ? {} : { category: policy.classify(result.reply, attempt.trouble) }) };
  });
  const waiting = outcomes.filter((o) => o.status === "deferred");
  const reason = waiting.length > 0 ? requeueReason(attempt, waiting) : undefined;
  const record: AttemptRecord = {
    at: now,
    ...(attempt.mx ? { mx: attempt.mx.host, ip: attempt.mx.ip } : { via: attempt.server }),
    results: outcomes.map((o) => ({ rcpt: o.recipient, status: o.status, reply: o.reply, ...(o.category ? { category: o.category } : {}) })),
    ...(reason ? { requeued: reason } : {}),
  };
  const delayDue = waiting.length > 0 && !entry.delayNotified && now - entry.createdAt >= policy.delayNoticeMs;
  const attempts = entry.attempts + 1;
  const next: QueueEntry | undefined =
    waiting.length === 0
      ? undefined
      : {
          ...entry,
          recipients: waiting.map((o) => o.recipient),
          attempts,
          // The last attempt falls at the expiry time, so an entry never outlives it by a whole backoff.
          nextAttemptAt: Math.min(now + retryDelayMs(policy.retry, attempts, random), Math.max(expiresAt(entry, policy), now + 1)),
          reason: reason!,
          lastResult: `${attempt.server}: ${waiting[0]!.reply}`,
          history: [...(entry.history ?? []), record].slice(-HISTORY_LIMIT),
          ...(delayDue ? { delayNotified: true } : {}),
        };
  return {
    outcomes,
    record,
    next,
    notices: notices(entry, attempt, outcomes, now, policy, dsn, delayDue),
    holdQueue: outcomes.some((o) => o.status !== "delivered" && o.category === "rate-limited")
      ? "rate-limited"
      : attempt.trouble === "connection" || attempt.trouble === "timeout"
        ? "unreachable"
        : undefined,
  };
};

const requeueReason = (attempt: Attempt, waiting: ReadonlyArray<RecipientOutcome>): WaitReason => {
  // A host that says "slow down" (even in its greeting) is rate limiting, whatever else broke.
  if (waiting.some((o) => o.category === "rate-limited")) return "rate-limited";
  switch (attempt.trouble) {
    case "connection":
    case "timeout":
    case "protocol":
      return "connection-failed";
    case "tls":
      return "tls-unavailable";
    case "dns":
      return "dns-temporary";
    case "mailbox":
      return "mailbox-unavailable";
    default:
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
  const fromPeer = attempt.trouble === undefined && attempt.mx !== undefined;
  const report = (o: RecipientOutcome, action: DsnAction): DsnRecipient => {
    const reply = parseReply(o.reply);
    return {
      finalRecipient: o.recipient,
      orcpt: dsn.recipient(o.recipient).orcpt,
      action,
      // RFC 3463 4.4.7: delivery time expired; the last reply stays in Diagnostic-Code.
      status: o.status === "expired" ? "4.4.7" : o.status === "delivered" ? "2.0.0" : statusOf(reply, o.status === "failed" ? "5" : "4"),
      remoteMta: attempt.mx?.host,
      diagnostic: { type: fromPeer && reply.code !== undefined ? "smtp" : "x-tern", text: o.reply },
      lastAttemptAt: now,
      ...(action === "delayed" ? { willRetryUntil: expiresAt(entry, policy) } : {}),
    };
  };
  const pick = (status: ReadonlyArray<RecipientStatus>, kind: "FAILURE" | "DELAY" | "SUCCESS") =>
    outcomes.filter((o) => status.includes(o.status) && wants(dsn.recipient(o.recipient).notify, kind));
  const failed = pick(["failed", "expired"], "FAILURE").map((o) => report(o, "failed"));
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
