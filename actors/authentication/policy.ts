// What a node does with a message that fails DMARC, by recipient domain: the local policy
// is the most it enforces, the sender domain's published policy the most it was asked
// for, and the weaker of the two applies. So with "reject" a failing message of a p=reject
// domain is refused at DATA and one of a p=quarantine domain is filed as junk; with
// "quarantine" both are filed as junk; with "none" (the default) only the
// Authentication-Results field tells. Pure: time, DNS and mail are elsewhere.
import type { DmarcVerdict, SenderPolicy } from "./verdict.ts";

/** The local policy of a recipient domain: how far a sender's DMARC policy is honoured. */
export type InboundPolicy = "none" | "quarantine" | "reject";

/** Recipient domain (lower case) or "*" (every other local domain) → local policy. */
export type InboundPolicies = Readonly<Record<string, InboundPolicy>>;

export type DmarcAction = "deliver" | "quarantine" | "refuse";

/** The policy for mail to `domain`: its own entry, else "*", else "none". */
export const policyFor = (policies: InboundPolicies, domain: string): InboundPolicy => policies[domain.toLowerCase()] ?? policies["*"] ?? "none";

const STRENGTH: Record<SenderPolicy, number> = { none: 0, quarantine: 1, reject: 2 };
const weaker = (a: SenderPolicy, b: SenderPolicy): SenderPolicy => (STRENGTH[a] <= STRENGTH[b] ? a : b);
const actionOf: Record<SenderPolicy, DmarcAction> = { none: "deliver", quarantine: "quarantine", reject: "refuse" };

/**
 * What to do with a message: a DMARC fail takes the weaker of the local and the sender's
 * policy. A message DMARC cannot evaluate because it names several authors (two From
 * fields, or addresses of two domains: a known way around DMARC) is treated as failing a
 * p=quarantine policy: it is junk at most, never refused, since no domain asked for that.
 * Anything else (pass, none, temperror, a permerror of the sender's record) is delivered.
 */
export const dmarcAction = (dmarc: DmarcVerdict, local: InboundPolicy): DmarcAction => {
  if (dmarc.result === "fail") return actionOf[weaker(local, dmarc.policy ?? "none")];
  if (dmarc.severalAuthors) return actionOf[weaker(local, "quarantine")];
  return "deliver";
};

/** The reply refusing a message (RFC 7372 has no DMARC code of its own: 5.7.1, delivery not authorized). */
export const refusalReply = (dmarc: DmarcVerdict): { readonly code: number; readonly text: string } => ({
  code: 550,
  text: `5.7.1 Message refused: it fails the DMARC policy of ${dmarc.domain ?? "its author domain"}, which asks receivers to reject it`,
});

/** The folder quarantined mail goes to (IMAP SPECIAL-USE \Junk). */
export const QUARANTINE_FOLDER = "Junk";
