// What outbound mail carries so that reports about it can be matched later: an X-Tern-Id
// header with the message token, added at acceptance (before DKIM signing sees the
// message; the header is not among those signed by default), and with per-recipient VERP
// one queue entry per remote recipient, so each copy leaves with its own return path.
import type { FeedbackTokens, VerpMode } from "./token.ts";

export interface OutboundMarks {
  /** Header lines added to mail that leaves from here, given the message id. */
  readonly headers: (messageId: string) => string;
  /** One queue entry per remote recipient (per-recipient VERP): each goes in a transaction of its own. */
  readonly onePerRemoteRecipient: boolean;
}

/** The header Tern adds to outbound mail: `<message id>-<mac>` (actors/feedback/token.ts). */
export const ID_HEADER = "X-Tern-Id";

export const outboundMarks = (tokens: FeedbackTokens, verp: VerpMode): OutboundMarks => ({
  headers: (messageId) => `${ID_HEADER}: ${tokens.messageToken(messageId)}\r\n`,
  onePerRemoteRecipient: verp === "recipient",
});
