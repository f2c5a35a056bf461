// A message's status as one node sees it, in one pure function: the entries still queued
// (recipients waiting, with their attempts so far) and the record of recipients that
// finished, merged into one list of recipients with their state and attempts.
import { renderResult, type AttemptRecord } from "../../protocol/delivery.ts";
import { WaitingState, type MessageState, type RecipientAttempt, type RecipientState, type RecipientView, type StatusReply } from "../../protocol/status.ts";
import { queueOf, type MessageRecord, type QueueEntry } from "../queue/entry.ts";
import type { FinishedMessage } from "../queue/finished.ts";

export interface Holdings {
  readonly message: MessageRecord | undefined;
  /** The message's entries still in the queue. */
  readonly entries: ReadonlyArray<QueueEntry>;
  readonly finished: FinishedMessage | undefined;
}

export interface ViewContext {
  readonly nodeId: string;
  readonly isSuspended: (queue: string) => boolean;
  readonly isInFlight: (entryId: string) => boolean;
  readonly tenantOf: (sender: string) => string;
}

/** The status of the message, or undefined when this node holds nothing of it. */
export const statusView = (messageId: string, holdings: Holdings, context: ViewContext): StatusReply | undefined => {
  const { message, entries, finished } = holdings;
  const summary = message ?? finished;
  if (!summary) return undefined;
  const done = (finished?.entries ?? []).flatMap((entry) =>
    entry.recipients.map(
      (r): RecipientView => ({
        recipient: r.rcpt,
        queue: queueOf(entry.route),
        entry: entry.id,
        state: r.state,
        attempts: entry.attempts,
        finishedAt: r.at,
        ...(r.to !== undefined ? { handedOffTo: r.to } : {}),
        history: attemptsOf(r.rcpt, entry.history ?? []),
      }),
    ),
  );
  const finishedKeys = new Set(done.map((r) => `${r.entry} ${r.recipient}`));
  const waiting = entries.flatMap((entry) => {
    const queue = queueOf(entry.route);
    const held = context.isSuspended(queue) || entry.heldAt !== undefined;
    const history = entry.history ?? [];
    return entry.recipients
      .filter((rcpt) => !finishedKeys.has(`${entry.id} ${rcpt}`))
      .map((rcpt): RecipientView => {
        const own = attemptsOf(rcpt, history);
        return {
          recipient: rcpt,
          queue,
          entry: entry.id,
          state: held ? "held" : entry.attempts > 0 || own.length > 0 ? "deferred" : "queued",
          attempts: entry.attempts,
          ...(held ? {} : { nextAttemptAt: entry.nextAttemptAt }),
          reason: entry.reason,
          ...(context.isInFlight(entry.id) ? { inFlight: true } : {}),
          history: own,
        };
      });
  });
  const recipients = [...waiting, ...done].sort((a, b) => entryNumber(a.entry) - entryNumber(b.entry) || a.recipient.localeCompare(b.recipient));
  const labels = message?.attributes ?? finished?.labels;
  const tags = stringsOf(labels?.tags);
  const metadata = stringRecordOf(labels?.metadata);
  return {
    message: {
      id: messageId,
      node: context.nodeId,
      sender: summary.sender,
      receivedAt: summary.receivedAt,
      size: summary.size,
      tenant: typeof labels?.tenant === "string" ? labels.tenant : context.tenantOf(summary.sender),
      ...(tags ? { tags } : {}),
      ...(metadata ? { metadata } : {}),
      state: messageState(recipients),
    },
    recipients,
  };
};

const entryNumber = (entryId: string) => Number(entryId.slice(entryId.lastIndexOf(".") + 1));

/** A recipient handed to a peer still waits there, as far as this node knows. */
const WAITING = new Set<RecipientState>([...WaitingState.literals, "handed-off"]);

/** Every recipient of this view went to peers: the node that took them over has the better answer. */
export const isHandedOff = (status: StatusReply): boolean => status.recipients.length > 0 && status.recipients.every((r) => r.state === "handed-off");

const messageState = (recipients: ReadonlyArray<RecipientView>): MessageState => {
  if (recipients.some((r) => WAITING.has(r.state))) return "pending";
  const delivered = recipients.filter((r) => r.state === "delivered").length;
  return delivered === recipients.length ? "delivered" : delivered === 0 ? "undelivered" : "partial";
};

/** What each attempt got for one recipient, oldest first. */
const attemptsOf = (rcpt: string, history: ReadonlyArray<AttemptRecord>): RecipientAttempt[] =>
  history.flatMap((attempt) => {
    const result = attempt.results.find((r) => r.rcpt === rcpt);
    if (!result) return [];
    return [
      {
        at: attempt.at,
        ...(attempt.mx !== undefined ? { mx: attempt.mx } : {}),
        ...(attempt.ip !== undefined ? { ip: attempt.ip } : {}),
        ...(attempt.source !== undefined ? { source: attempt.source } : {}),
        ...(attempt.via !== undefined ? { via: attempt.via } : {}),
        status: result.status,
        result: result.result,
        reply: renderResult(result.result),
        ...(result.category ? { category: result.category } : {}),
      },
    ];
  });

const stringsOf = (value: unknown): ReadonlyArray<string> | undefined =>
  Array.isArray(value) && value.every((v) => typeof v === "string") ? value : undefined;

const stringRecordOf = (value: unknown): Readonly<Record<string, string>> | undefined =>
  typeof value === "object" && value !== null && !Array.isArray(value) && Object.values(value).every((v) => typeof v === "string")
    ? (value as Record<string, string>)
    : undefined;

/** How many of its most recent attempts each recipient keeps when a status is cut to fit, tried in turn. */
const HISTORY_CUTS = [10, 5, 2, 1, 0];

/**
 * The status cut to at most `maxBytes` of JSON: each recipient's history keeps fewer of its
 * most recent attempts (its `attempts` still counts them all) until the status fits, down
 * to none. A message with recipients many enough that even that does not fit is returned
 * cut to none (its reply then fails as too large, rather than never coming).
 */
export const fitStatus = (status: StatusReply, maxBytes: number): StatusReply => {
  const fits = (candidate: StatusReply) => Buffer.byteLength(JSON.stringify(candidate)) <= maxBytes;
  if (fits(status)) return status;
  let cut = status;
  for (const keep of HISTORY_CUTS) {
    cut = {
      ...status,
      recipients: status.recipients.map((r) => (r.history.length <= keep ? r : { ...r, history: r.history.slice(r.history.length - keep) })),
    };
    if (fits(cut)) return cut;
  }
  return cut;
};
