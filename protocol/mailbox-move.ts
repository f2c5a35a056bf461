// Moving a mailbox from one node to another (`tern mailbox move`, actors/mailbox/move.ts):
// the operator's request to the target node, and the node-to-node steps between the
// target (which copies) and the source (which holds the mailbox now).
import { Schema } from "effect";

// ---------------------------------------------------------------------------
// What a mailbox is, as it crosses nodes: every record but the bodies, which are pulled
// by hash in batches (`MoveBodies`).

const MovedFolder = Schema.Struct({
  name: Schema.String,
  uidValidity: Schema.Number,
  uidNext: Schema.Number,
  /** CONDSTORE; absent from nodes that did not keep it yet. */
  highestModSeq: Schema.optional(Schema.Number),
  /** The first UID no session was told of as \Recent; absent from nodes that did not keep it yet. */
  recentFrom: Schema.optional(Schema.Number),
});
export type MovedFolder = typeof MovedFolder.Type;

export const MovedMessage = Schema.Struct({
  folder: Schema.String,
  uid: Schema.Number,
  size: Schema.Number,
  internalDate: Schema.Number,
  flags: Schema.Array(Schema.String),
  /** SHA-256 of the body. */
  body: Schema.String,
  /** CONDSTORE; absent from nodes that did not keep it yet. */
  modSeq: Schema.optional(Schema.Number),
  entryId: Schema.optional(Schema.String),
});
export type MovedMessage = typeof MovedMessage.Type;

/** A queue entry stored before: the target answers its redelivery as a duplicate, like the source would. */
const MovedDelivery = Schema.Struct({ entryId: Schema.String, folder: Schema.String, uid: Schema.Number, at: Schema.Number });
export type MovedDelivery = typeof MovedDelivery.Type;

export const MailboxSnapshot = Schema.Struct({
  user: Schema.String,
  /** The highest UIDVALIDITY the user ever had, so a folder made after the move never repeats one. */
  lastUidValidity: Schema.Number,
  folders: Schema.Array(MovedFolder),
  messages: Schema.Array(MovedMessage),
  deliveries: Schema.Array(MovedDelivery),
  /** The names the user subscribed to; absent when none were ever recorded (every folder counts). */
  subscribed: Schema.optional(Schema.Array(Schema.String)),
});
export type MailboxSnapshot = typeof MailboxSnapshot.Type;

// ---------------------------------------------------------------------------
// Errors

/**
 * Why a move was refused or stopped. `code` is what a script matches on:
 * - unknown-user: no such local user;
 * - already-there: the target already holds the mailbox;
 * - moving: another move of this mailbox is under way;
 * - not-holder: the node asked to give the mailbox away does not hold it;
 * - unavailable: a node, NATS or the ownership KV did not answer (nothing changed; retry);
 * - failed: the copy failed on the way (rolled back, nothing changed; retry).
 */
export const MoveFailureCode = Schema.Literals(["unknown-user", "already-there", "moving", "not-holder", "unavailable", "failed"]);
export type MoveFailureCode = typeof MoveFailureCode.Type;

export class MoveFailed extends Schema.TaggedError<MoveFailed>()("MoveFailed", {
  user: Schema.String,
  code: MoveFailureCode,
  detail: Schema.String,
}) {}

// ---------------------------------------------------------------------------
// The operator's request, sent to the target node (Subjects.mailboxMoveAdmin).

const MoveRequest = Schema.Struct({ user: Schema.String });
export const MoveReply = Schema.Struct({
  user: Schema.String,
  from: Schema.String,
  to: Schema.String,
  folders: Schema.Number,
  messages: Schema.Number,
  bytes: Schema.Number,
  /** How long new mail and POP3 waited (the source refused writes): the final copy. */
  frozenMs: Schema.Number,
});
export type MoveReply = typeof MoveReply.Type;
export const moveEndpoint = { request: MoveRequest, response: MoveReply, error: MoveFailed } as const;

// ---------------------------------------------------------------------------
// Node to node (Subjects.mailboxMove(node, step)).

/** Source: the mailbox's records; with `freezeFor`, after refusing writes for good (until finish or abort). */
const SnapshotRequest = Schema.Struct({ user: Schema.String, freezeFor: Schema.optional(Schema.String) });
export const snapshotEndpoint = { request: SnapshotRequest, response: MailboxSnapshot, error: MoveFailed } as const;

/** Source: bodies by hash, concatenated in the attachment, `sizes` in the same order. */
const BodiesRequest = Schema.Struct({ user: Schema.String, hashes: Schema.Array(Schema.String) });
const BodiesReply = Schema.Struct({ sizes: Schema.Array(Schema.Number) });
export const bodiesEndpoint = { request: BodiesRequest, response: BodiesReply, error: MoveFailed } as const;

/** Source: the target committed: drop the copy (`finish`); or it gave up: serve the mailbox again (`abort`). */
const SettleRequest = Schema.Struct({ user: Schema.String, to: Schema.String });
const SettleReply = Schema.Struct({});
export const settleEndpoint = { request: SettleRequest, response: SettleReply, error: MoveFailed } as const;

/**
 * Target: where is the move of `user` from `from`? A frozen source asks this after a
 * restart: `committed` → drop the copy, `none` → serve again, `copying` → wait.
 */
const MoveStatusRequest = Schema.Struct({ user: Schema.String, from: Schema.String });
const MoveStatusReply = Schema.Struct({ state: Schema.Literals(["copying", "committed", "none"]) });
export const moveStatusEndpoint = { request: MoveStatusRequest, response: MoveStatusReply, error: MoveFailed } as const;

export type MoveStep = "snapshot" | "bodies" | "finish" | "abort" | "status";
