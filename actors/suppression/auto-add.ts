// Automatic adds to the suppression list: a recipient that hard-bounced (bad mailbox, bad
// domain) or complained is added once the event that reports it is published.
//
// Why there: the event is in the node's LMDB outbox, written in the same transaction as
// the outcome, and leaves it only once JetStream acknowledged it. The publisher's sink is
// wrapped so that an acknowledged event that calls for an add is reported published only
// once the add is in the KV bucket too; a failed add keeps the event in the outbox, and
// the publisher's retry publishes it again (JetStream drops the duplicate by id) and adds
// again. So an add happens on the node that recorded the outcome, survives a crash, and
// needs no consumer of the stream. Adds are "create if absent": a retry, or a second
// bounce of an address already listed, keeps the first record.
import { Effect } from "effect";
import type { EventSink, PublishOutcome } from "../events/publisher.ts";
import type { OutboxEvent } from "../../protocol/events.ts";
import { GLOBAL_SCOPE, MAX_DETAIL, suppressionKey, type SuppressionReason, type SuppressionRecord } from "../../protocol/suppression.ts";
import { senderScope } from "./list.ts";

/** What adds a recipient by itself (config `suppression.autoAdd`). */
export type AutoAddKind = "bad-mailbox" | "bad-domain" | "complaint";

export interface AutoAddPolicy {
  /** "global": every sender's mail; "sender-domain": mail from the sender domain of the message that bounced or drew the complaint. */
  readonly scope: "global" | "sender-domain";
  readonly kinds: ReadonlySet<AutoAddKind>;
}

export interface SuppressionAdd {
  readonly key: string;
  readonly record: SuppressionRecord;
}

const clip = (text: string) => (text.length > MAX_DETAIL ? `${text.slice(0, MAX_DETAIL - 1)}…` : text);

/** The add an event calls for, if any. Pure. */
export const autoAddOf = (event: OutboxEvent, policy: AutoAddPolicy): SuppressionAdd | undefined => {
  let reason: SuppressionReason;
  let detail: string;
  if (event.type === "bounced" && (event.category === "bad-mailbox" || event.category === "bad-domain") && policy.kinds.has(event.category)) {
    reason = event.category;
    detail = event.reply;
  } else if (event.type === "complained" && policy.kinds.has("complaint")) {
    reason = "complaint";
    detail = `feedback ${event.feedbackType}`;
  } else {
    return undefined;
  }
  if (!event.rcpt.includes("@")) return undefined;
  // Without a sender domain (the null sender, an unknown original) there is no scope to add to.
  const scope = policy.scope === "global" ? GLOBAL_SCOPE : senderScope(event.sender ?? "");
  if (scope === undefined) return undefined;
  return {
    key: suppressionKey(scope, event.rcpt),
    record: {
      address: event.rcpt,
      scope,
      reason,
      at: event.time,
      ...(event.msg !== "" ? { msg: event.msg } : {}),
      node: event.node,
      detail: clip(detail),
    },
  };
};

/** Adds at most this many at once per published batch. */
const ADD_CONCURRENCY = 16;

/**
 * `sink` with the automatic adds: an acknowledged event whose add fails is reported
 * failed, so it stays in the outbox and is published (and added) again.
 */
export const addingSuppressions = (
  sink: EventSink,
  policy: AutoAddPolicy,
  add: (add: SuppressionAdd) => Effect.Effect<void, { readonly detail: string }>,
): EventSink => ({
  ensure: sink.ensure,
  // Most batches call for no add at all: their outcomes pass through as they are, without a
  // fiber per event (Effect.forEach with concurrency forks one for each element).
  publish: (events) =>
    Effect.flatMap(sink.publish(events), (outcomes) => {
      const adds = outcomes.flatMap((outcome, n) => {
        const wanted = outcome._tag === "Acked" ? autoAddOf(events[n]!, policy) : undefined;
        return wanted === undefined ? [] : [{ n, wanted }];
      });
      if (adds.length === 0) return Effect.succeed(outcomes);
      return Effect.map(
        Effect.forEach(
          adds,
          ({ n, wanted }) =>
            add(wanted).pipe(
              Effect.as([n, outcomes[n]!] as const),
              Effect.catch((error) => Effect.succeed([n, { _tag: "Failed", detail: `suppression list: ${error.detail}` }] as const)),
            ),
          { concurrency: ADD_CONCURRENCY },
        ),
        (added) => {
          const merged: PublishOutcome[] = [...outcomes];
          for (const [n, outcome] of added) merged[n] = outcome;
          return merged;
        },
      );
    }),
});
