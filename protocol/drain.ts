// Draining a node (`tern node drain ID`) and the hand-off of its queue to its peers.
//
// Operator → node (`tern.<cluster>.node.drain.<node>`): Start begins the drain (asking
// again is harmless) and Progress reads how far it got; both answer with DrainProgress,
// which the node also publishes at each change to the inbox a Start names (`follow`).
//
// Node → node (`tern.<cluster>.handoff.<receiver>`): one message with its entries still
// queued, the body as the frame's attachment (pulled as a blob when large). The receiver
// answers only after it committed them durably (or found it already holds them); only
// then does the sender remove its copy. The key of a hand-off is the message id and how
// many hand-offs the message went through before (`generation`): a retry of the same
// hand-off (the sender crashed before removing its copy, or the reply was lost) finds the
// receiver's record and is answered Duplicate, while the same message coming back later
// through a chain of drains has a new generation and is taken.
import { Schema } from "effect";
import { AttemptRecord, WaitReason } from "./delivery.ts";

const Count = Schema.Int.check(Schema.isGreaterThanOrEqualTo(0));

/**
 * `follow`: an inbox of the operator's (`tern.<cluster>.operator.inbox.…`) where the node
 * publishes its progress at each change, the last one ("finished") before it stops, so the
 * operator hears the end even when the drain is over between two questions.
 */
export const DrainRequest = Schema.Union([
  Schema.TaggedStruct("Start", { follow: Schema.optional(Schema.String) }),
  Schema.TaggedStruct("Progress", {}),
]);
export type DrainRequest = typeof DrainRequest.Type;

/**
 * `draining`: handing entries over; `waiting`: entries left but no live, ready, non-draining
 * peer to take them (nothing is dropped: the drain waits); `finished`: the queue is empty and
 * the node is stopping.
 */
export const DrainState = Schema.Literals(["idle", "draining", "waiting", "finished"]);
export type DrainState = typeof DrainState.Type;

export const DrainProgress = Schema.Struct({
  node: Schema.String,
  state: DrainState,
  startedAt: Schema.optional(Schema.Number),
  /** Queue entries still in this node's spool. */
  queued: Count,
  /** Messages the peers committed (and this node then removed), and how many of them a peer already held (a retried hand-off). */
  messagesHandedOff: Count,
  entriesHandedOff: Count,
  duplicates: Count,
  /** Hand-offs that failed (the peer was busy, away or refused); they are tried again. */
  failures: Count,
  /** Messages handed to each peer. */
  byPeer: Schema.Record(Schema.String, Count),
  /** The peers entries may go to now. */
  peers: Schema.Array(Schema.String),
  /** The last failure, for the operator. */
  problem: Schema.optional(Schema.String),
});
export type DrainProgress = typeof DrainProgress.Type;

/** The drain cannot start (the node is stopping). */
export class DrainRefused extends Schema.TaggedError<DrainRefused>()("DrainRefused", {
  reason: Schema.String,
}) {}

const HandOffRoute = Schema.Union([
  Schema.Struct({ kind: Schema.Literal("remote"), domain: Schema.String }),
  Schema.Struct({ kind: Schema.Literal("local"), user: Schema.String }),
]);

/** A queue entry as it crosses: its id, recipients and attempt state are kept by the receiver. */
export const HandOffEntry = Schema.Struct({
  id: Schema.String,
  route: HandOffRoute,
  recipients: Schema.Array(Schema.String).check(Schema.isMinLength(1)),
  createdAt: Schema.Number,
  attempts: Count,
  nextAttemptAt: Schema.Number,
  reason: WaitReason,
  history: Schema.optional(Schema.Array(AttemptRecord)),
  delayNotified: Schema.optional(Schema.Boolean),
  /** An operator's hold goes with the entry: the receiver keeps it held until released there. */
  heldAt: Schema.optional(Schema.Number),
  /** Time spent on hold so far, not counted in the entry's queue life. */
  heldMs: Schema.optional(Schema.Number),
});
export type HandOffEntry = typeof HandOffEntry.Type;

export const HandOffRequest = Schema.Struct({
  /** The node handing the message over. */
  from: Schema.String,
  message: Schema.Struct({
    id: Schema.String.check(Schema.isPattern(/^[0-9A-Za-z]{1,64}$/)),
    sender: Schema.String,
    receivedAt: Schema.Number,
    size: Count,
    attributes: Schema.optional(Schema.Record(Schema.String, Schema.Unknown)),
    /** Hand-offs this message went through before this one. */
    generation: Count,
  }),
  entries: Schema.Array(HandOffEntry).check(Schema.isMinLength(1)),
});
export type HandOffRequest = typeof HandOffRequest.Type;

/** Committed: the receiver now holds it. Duplicate: it held it already (a retried hand-off); nothing was written. */
export const HandOffReply = Schema.Struct({
  node: Schema.String,
  outcome: Schema.Literals(["committed", "duplicate"]),
});
export type HandOffReply = typeof HandOffReply.Type;

/** The receiver does not take mail now (it drains too, or its spool cannot commit); try another peer or later. */
export class HandOffRefused extends Schema.TaggedError<HandOffRefused>()("HandOffRefused", {
  node: Schema.String,
  reason: Schema.String,
}) {}

/** The idempotency record a receiver keeps for a hand-off (spool scope `handoff`). */
export const handOffKey = (messageId: string, generation: number): string => `${messageId}#${generation}`;

/** Where a message's hand-off count is kept in its attributes. */
export const HANDOFFS_ATTRIBUTE = "handoffs";

export const generationOf = (attributes: Readonly<Record<string, unknown>> | undefined): number => {
  const value = attributes?.[HANDOFFS_ATTRIBUTE];
  return typeof value === "number" && Number.isInteger(value) && value >= 0 ? value : 0;
};
