// Typed failures that cross module, actor or node boundaries.
// Expected failures are values in an Effect's error channel; bugs are defects.
import { Schema } from "effect";

/** A bounded actor mailbox was full; the caller should answer 421/451 and retry later. */
export class MailboxFull extends Schema.TaggedError<MailboxFull>()("MailboxFull", {
  actor: Schema.String,
}) {}

/** An ask got no reply in time. Temporary by nature. */
export class AskTimeout extends Schema.TaggedError<AskTimeout>()("AskTimeout", {
  actor: Schema.String,
  timeoutMs: Schema.Number,
}) {}

/** The actor's handler died while handling this message; it is being restarted. */
export class ActorCrashed extends Schema.TaggedError<ActorCrashed>()("ActorCrashed", {
  actor: Schema.String,
  reason: Schema.String,
}) {}

/** The actor has stopped (node shutting down or restart budget exhausted). */
export class ActorStopped extends Schema.TaggedError<ActorStopped>()("ActorStopped", {
  actor: Schema.String,
}) {}

/** The actor spent its restart budget and waits to be rebuilt; asks fail fast meanwhile. */
export class ActorEscalated extends Schema.TaggedError<ActorEscalated>()("ActorEscalated", {
  actor: Schema.String,
  reason: Schema.String,
  nextRebuildAt: Schema.Number,
}) {}

/** A message crossing NATS did not match its schema. */
export class MalformedMessage extends Schema.TaggedError<MalformedMessage>()("MalformedMessage", {
  subject: Schema.String,
  detail: Schema.String,
}) {}

/** No one answered on a NATS subject (no responders / timeout / connection closed). */
export class RemoteUnavailable extends Schema.TaggedError<RemoteUnavailable>()("RemoteUnavailable", {
  subject: Schema.String,
  detail: Schema.String,
}) {}

/**
 * The remote side (or this node) is at a cap on work it takes at once, such as the bytes of
 * large transfers it pulls: nothing was done, and the same request later will likely succeed.
 * Temporary by nature, like RemoteUnavailable: callers defer, never bounce.
 */
export class RemoteBusy extends Schema.TaggedError<RemoteBusy>()("RemoteBusy", {
  subject: Schema.String,
  detail: Schema.String,
}) {}

/** The durable store failed; nothing half-written is visible. */
export class StoreError extends Schema.TaggedError<StoreError>()("StoreError", {
  operation: Schema.String,
  detail: Schema.String,
}) {}
