// Asks to a mailbox actor on its owner node, as they cross NATS.
// Bodies travel as the frame's attachment (protocol/wire.ts), not inside the JSON.
import { Schema } from "effect";
import { StoreError } from "./errors.ts";
import { MaildropEntry, MailboxUnavailable, NoSuchMessage } from "../actors/retriever/maildrop.ts";

export const DeliverRequest = Schema.Struct({ user: Schema.String, entryId: Schema.String });
export const DeliverReply = Schema.Struct({ uid: Schema.String });

export const ListRequest = Schema.Struct({ user: Schema.String });
export const ListReply = Schema.Struct({ messages: Schema.Array(MaildropEntry) });

export const RetrieveRequest = Schema.Struct({ user: Schema.String, uid: Schema.String });
export const RetrieveReply = Schema.Struct({ size: Schema.Number });

export const RemoveRequest = Schema.Struct({ user: Schema.String, uids: Schema.Array(Schema.String) });
export const RemoveReply = Schema.Struct({ removed: Schema.Number });

/** The user has no mailbox on the node asked (ownership moved or misrouted). */
export class NotOwner extends Schema.TaggedError<NotOwner>()("NotOwner", {
  user: Schema.String,
  node: Schema.String,
}) {}

export const MailboxError = Schema.Union([StoreError, MailboxUnavailable, NoSuchMessage, NotOwner]);
export type MailboxError = typeof MailboxError.Type;

export const mailboxEndpoints = {
  deliver: { request: DeliverRequest, response: DeliverReply, error: MailboxError },
  list: { request: ListRequest, response: ListReply, error: MailboxError },
  retrieve: { request: RetrieveRequest, response: RetrieveReply, error: MailboxError },
  remove: { request: RemoveRequest, response: RemoveReply, error: MailboxError },
} as const;
