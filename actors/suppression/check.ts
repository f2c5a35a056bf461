// What submission asks of the suppression list: a synchronous lookup (the node's view,
// actors/suppression/list.ts), and the record of a refusal (an event, a metric, a log
// line). Checked at an API submit and at RCPT TO of an authenticated or trusted-network
// SMTP client: a sender we relay for. Mail arriving as an MX from elsewhere is inbound,
// addressed to our own users, and never checked; nor is any recipient in a local domain
// (the list is about mail leaving the cluster). The check before each delivery attempt is
// actors/delivery/suppressed.ts.
import type { EventDraft } from "../../protocol/events.ts";
import type { SuppressionMatch } from "../../protocol/suppression.ts";
import { domainOf } from "../common/domains.ts";
import type { EventSource } from "../queue/events.ts";

/** One recipient refused at submission because it is on the list. */
export interface Refusal {
  readonly where: "api" | "smtp";
  readonly sender: string;
  readonly recipient: string;
  readonly match: SuppressionMatch;
  /** The API's tenant; over SMTP, the sender domain's. */
  readonly tenant?: string | undefined;
  readonly tags?: ReadonlyArray<string> | undefined;
  readonly metadata?: Readonly<Record<string, string>> | undefined;
  /** The SMTP connection, for the log line. */
  readonly conn?: string | undefined;
}

export interface SuppressionCheck {
  /** The entry that refuses mail from `sender` to `recipient`, if any. Synchronous: no NATS round trip. */
  readonly lookup: (sender: string, recipient: string) => SuppressionMatch | undefined;
  /** Records a refusal: a "suppressed" event, `tern_suppressed_total{where}`, a log line. */
  readonly refused: (refusal: Refusal) => void;
}

/** The "suppressed" event of a refusal at submission. Pure. */
export const refusalEvent = (source: EventSource, refusal: Refusal, now: number): EventDraft => ({
  type: "suppressed",
  time: now,
  node: source.node,
  tenant: refusal.tenant ?? source.tenantOf(refusal.sender),
  domain: domainOf(refusal.recipient),
  ...(refusal.tags !== undefined && refusal.tags.length > 0 ? { tags: refusal.tags } : {}),
  ...(refusal.metadata !== undefined && Object.keys(refusal.metadata).length > 0 ? { metadata: refusal.metadata } : {}),
  rcpt: refusal.recipient,
  sender: refusal.sender,
  where: refusal.where,
  scope: refusal.match.scope,
  reason: refusal.match.reason,
});
