// Reports that come back to Tern, turned into events: a bounce that arrives at a VERP
// address (b-<token>@<bounce domain>) becomes a "bounced" event for the recipient it is
// about, a feedback report (ARF) at a configured address or a VERP address a "complained"
// event. The SMTP session asks here at RCPT (is this a report address? a forged token is
// refused there, before DATA) and hands over the body at the end of DATA.
//
// Matching: the token names the message (and, per recipient, the recipient); the message
// is looked up in the cluster (the node that accepted it answers, from its spool or its
// record of finished recipients) for its tenant, labels and recipients, and the report's
// recipient is matched against those. Only then is anything recorded.
//
// Reputation: once its events are on disk, a complaint counts in the complaint rate and a
// bounce in the bounce rate (by its category) of the reputation figures, under the keys the
// delivery it is about counted under (reputation-keys.ts), by the node that sent the
// message (actors/delivery/reputation-count.ts). The delivery stays counted as delivered:
// the receiving host did take it.
//
// Durability: the events are appended to this node's outbox in a transaction of their own
// and the report is answered 250 only once that transaction is on disk (as for any
// accepted mail); when the lookup cannot be made (NATS away) or the write fails, the answer
// is 451 and the reporter tries again. A report that matches nothing (the message was
// forgotten, a recipient it never had), an automatic reply, a delay notice or a
// not-spam report is accepted and dropped, counted and logged: refusing it would only
// make a bounce of a bounce.
import { Clock, Effect, Schema } from "effect";
import type { BounceCategory, RecipientResult } from "../../protocol/delivery.ts";
import { renderResult } from "../../protocol/delivery.ts";
import type { EventDraft, OutboxDraft } from "../../protocol/events.ts";
import type { NotFound, RecipientView, StatusReply, Unavailable } from "../../protocol/status.ts";
import { domainOf, localPartOf } from "../common/domains.ts";
import type { LaterOutcome } from "../delivery/reputation-count.ts";
import type { OutcomeKeys } from "../delivery/reputation.ts";
import { arrivalOf } from "../queue/entry.ts";
import { readBounce, type BouncedRecipient, type BounceReading } from "./bounce.ts";
import { COMPLAINT_TYPES, readComplaint, type ComplaintReading } from "./complaint.ts";
import { readReport } from "./report.ts";
import { reputationKeysOf, type KeySources } from "./reputation-keys.ts";
import { recipientHash, tokenOfVerpAddress, type FeedbackToken, type FeedbackTokens, type TokenReading } from "./token.ts";
import type { Log } from "../../protocol/log.ts";

/** Where a report was sent: a VERP address (its token checked), or a configured feedback-loop address. */
export type FeedbackTarget =
  | { readonly kind: "verp"; readonly address: string; readonly token: FeedbackToken }
  | { readonly kind: "fbl"; readonly address: string };

/** What an RCPT address is to feedback; undefined: ordinary mail. */
export type FeedbackAddress =
  | { readonly _tag: "Report"; readonly target: FeedbackTarget }
  /** At the bounce domain but no valid token: refused at RCPT. */
  | { readonly _tag: "Forged"; readonly reason: "forged" | "malformed" }
  /** postmaster@<bounce domain>: goes to the postmaster (RFC 5321 §4.5.1). */
  | { readonly _tag: "Postmaster" };

export type FeedbackKind = "bounce" | "complaint";
export type FeedbackResult = "matched" | "unmatched" | "forged" | "ignored" | "failed";

export type IntakeOutcome =
  | { readonly _tag: "Recorded"; readonly kind: FeedbackKind; readonly messageId: string; readonly recipients: ReadonlyArray<string> }
  | { readonly _tag: "Dropped"; readonly kind: FeedbackKind; readonly result: "unmatched" | "forged" | "ignored"; readonly reason: string }
  /** Nothing recorded and the reporter should try again (451): the lookup or the write failed. */
  | { readonly _tag: "Failed"; readonly kind: FeedbackKind; readonly detail: string };

/** The events could not be written to the outbox. */
export class RecordFailed extends Schema.TaggedError<RecordFailed>()("RecordFailed", { detail: Schema.String }) {}

export interface IntakeConfig {
  /** The domain of VERP addresses (lower case); unset: no bounce address is taken. */
  readonly bounceDomain: string | undefined;
  /** Feedback-loop addresses (lower case). */
  readonly fblAddresses: ReadonlyArray<string>;
}

export interface IntakeDeps {
  readonly config: IntakeConfig;
  readonly node: string;
  readonly tokens: FeedbackTokens;
  /** The message's status from whichever node holds it. */
  readonly lookup: (messageId: string) => Effect.Effect<StatusReply, NotFound | Unavailable>;
  /**
   * How long nodes remember a message after its last change (`status.keepFinishedMs`): a
   * younger message that no node answers for is on a node that is down, not forgotten.
   */
  readonly keepFinishedMs: number;
  readonly classify: (result: RecipientResult) => BounceCategory;
  /** Appends events to the outbox; resolves once they are on disk. */
  readonly record: (drafts: ReadonlyArray<OutboxDraft>) => Effect.Effect<void, RecordFailed>;
  /** Where a report's reputation keys come from. */
  readonly keySources: KeySources;
  /**
   * Counts a recorded outcome in the reputation figures of `node`, the node that sent the
   * message (this one or another); never waits for it.
   */
  readonly count: (node: string, about: OutcomeKeys, outcome: LaterOutcome) => void;
  /** Counts each report once by what came of it (metrics). */
  readonly observe: (kind: FeedbackKind, result: FeedbackResult) => void;
  readonly log: Log;
}

/** What the SMTP session knows of the report's transaction. */
export interface ReportFacts {
  readonly conn: string;
  readonly client: string;
  /** The envelope sender ("" is the null sender, as DSNs use). */
  readonly sender: string;
}

export interface FeedbackIntake {
  readonly addressOf: (address: string) => FeedbackAddress | undefined;
  /** Counts and logs a VERP address refused at RCPT for its token. */
  readonly refused: (address: string, reason: "forged" | "malformed", facts: Omit<ReportFacts, "sender">) => void;
  /** Reads a report and records its events; never fails (trouble is a Failed outcome). */
  readonly process: (target: FeedbackTarget, message: Uint8Array, facts: ReportFacts) => Effect.Effect<IntakeOutcome>;
}

export const makeFeedbackIntake = (deps: IntakeDeps): FeedbackIntake => {
  const { config, tokens } = deps;
  const fbl = new Set(config.fblAddresses);

  const addressOf = (address: string): FeedbackAddress | undefined => {
    const lower = address.toLowerCase();
    if (fbl.has(lower)) return { _tag: "Report", target: { kind: "fbl", address: lower } };
    if (config.bounceDomain === undefined || domainOf(lower) !== config.bounceDomain) return undefined;
    if (localPartOf(lower) === "postmaster") return { _tag: "Postmaster" };
    const text = tokenOfVerpAddress(lower, config.bounceDomain);
    const reading: TokenReading = text === undefined ? { _tag: "Malformed" } : tokens.read(text);
    if (reading._tag === "Valid") return { _tag: "Report", target: { kind: "verp", address: lower, token: reading.token } };
    return { _tag: "Forged", reason: reading._tag === "Forged" ? "forged" : "malformed" };
  };

  const finish = (outcome: IntakeOutcome, facts: ReportFacts, target: FeedbackTarget): IntakeOutcome => {
    deps.observe(outcome.kind, outcome._tag === "Recorded" ? "matched" : outcome._tag === "Failed" ? "failed" : outcome.result);
    const common = { conn: facts.conn, client: facts.client, recipient: target.address, kind: outcome.kind };
    if (outcome._tag === "Dropped") deps.log("feedback.dropped", { ...common, result: outcome.result, reason: outcome.reason });
    if (outcome._tag === "Failed") deps.log("feedback.failed", { ...common, level: "warn", error: outcome.detail });
    return outcome;
  };

  const process: FeedbackIntake["process"] = (target, message, facts) =>
    Effect.gen(function* () {
      const report = yield* Effect.tryPromise(() => readReport(message)).pipe(Effect.option);
      if (report._tag === "None") return dropped(target.kind === "fbl" ? "complaint" : "bounce", "ignored", "the message could not be parsed");
      const complaint = readComplaint(report.value);
      if (complaint !== undefined) return yield* complained(deps, target, complaint);
      if (target.kind === "fbl") return dropped("complaint", "ignored", "not a feedback report (no message/feedback-report part)");
      return yield* bounced(deps, target.token, readBounce(report.value));
    }).pipe(Effect.map((outcome) => finish(outcome, facts, target)));

  const refused: FeedbackIntake["refused"] = (address, reason, facts) => {
    deps.observe("bounce", "forged");
    deps.log("feedback.refused", { conn: facts.conn, client: facts.client, recipient: address, reason });
  };

  return { addressOf, refused, process };
};

const dropped = (kind: FeedbackKind, result: "unmatched" | "forged" | "ignored", reason: string): IntakeOutcome => ({ _tag: "Dropped", kind, result, reason });

/** The message's recipients that left for other hosts: only they can bounce later or be complained of. */
const remoteRecipients = (status: StatusReply): ReadonlyArray<RecipientView> => {
  const seen = new Set<string>();
  return status.recipients.filter((r) => !r.queue.startsWith("local:") && !seen.has(r.recipient.toLowerCase()) && seen.add(r.recipient.toLowerCase()));
};

/**
 * The message's status, or the outcome that ends the report: forgotten (dropped), or
 * unreachable (try later): no node answered, or none holds a message too young to have
 * been forgotten, so the node that holds it is down (a valid token names a message that
 * was committed, and queue ids start with their arrival time).
 */
const lookUp = (deps: IntakeDeps, kind: FeedbackKind, messageId: string): Effect.Effect<StatusReply | IntakeOutcome> =>
  deps.lookup(messageId).pipe(
    Effect.catchTags({
      NotFound: (error) =>
        Effect.map(Clock.currentTimeMillis, (now): IntakeOutcome =>
          now - arrivalOf(messageId) < deps.keepFinishedMs
            ? { _tag: "Failed", kind, detail: `none of the ${error.nodesAsked} nodes that answered holds message ${messageId}; the node that does is down` }
            : dropped(kind, "unmatched", `message ${messageId} is older than status.keepFinishedMs and forgotten`),
        ),
      Unavailable: (error) => Effect.succeed<IntakeOutcome>({ _tag: "Failed", kind, detail: `cannot look up message ${messageId}: ${error.detail}` }),
    }),
  );

const isOutcome = (value: StatusReply | IntakeOutcome): value is IntakeOutcome => "_tag" in value;

/** What every event of the message carries. */
const labelsOf = (status: StatusReply) => ({
  tenant: status.message.tenant,
  ...(status.message.tags ? { tags: status.message.tags } : {}),
  ...(status.message.metadata ? { metadata: status.message.metadata } : {}),
});

const write = (deps: IntakeDeps, kind: FeedbackKind, messageId: string, drafts: ReadonlyArray<EventDraft>): Effect.Effect<IntakeOutcome> =>
  deps.record(drafts).pipe(
    Effect.as<IntakeOutcome>({ _tag: "Recorded", kind, messageId, recipients: drafts.map((d) => ("rcpt" in d ? d.rcpt : "")) }),
    Effect.catchTag("RecordFailed", (error) => Effect.succeed<IntakeOutcome>({ _tag: "Failed", kind, detail: `cannot record the events: ${error.detail}` })),
  );

// ---------------------------------------------------------------------------
// Bounces

export interface BounceMatch {
  readonly view: RecipientView;
  readonly report: BouncedRecipient;
}

/**
 * Which of the message's recipients the failed report entries are about. A per-recipient
 * token names its recipient whatever the report calls it (a forwarded address bounces under
 * the forward's name); else each entry's Original-Recipient or Final-Recipient is looked for
 * among the recipients, and a report of one failure about a message with one recipient is
 * that recipient's.
 */
export const matchBounce = (token: FeedbackToken, failed: ReadonlyArray<BouncedRecipient>, recipients: ReadonlyArray<RecipientView>): ReadonlyArray<BounceMatch> => {
  const named = (report: BouncedRecipient, view: RecipientView) => report.addresses.includes(view.recipient.toLowerCase());
  if (token.recipientHash !== undefined) {
    const view = recipients.find((r) => recipientHash(r.recipient) === token.recipientHash);
    if (view === undefined) return [];
    return [{ view, report: failed.find((report) => named(report, view)) ?? failed[0]! }];
  }
  const matches = recipients.flatMap((view) => {
    const report = failed.find((r) => named(r, view));
    return report ? [{ view, report }] : [];
  });
  if (matches.length > 0) return matches;
  return recipients.length === 1 && failed.length === 1 ? [{ view: recipients[0]!, report: failed[0]! }] : [];
};

const bounced = (deps: IntakeDeps, token: FeedbackToken, reading: BounceReading): Effect.Effect<IntakeOutcome> =>
  Effect.gen(function* () {
    if (reading._tag === "AutoReply") return dropped("bounce", "ignored", "an automatic reply (Auto-Submitted: auto-replied, out of office)");
    if (reading._tag === "NotABounce") return dropped("bounce", "ignored", "not a bounce (no delivery-status part, no bounce wording and status code)");
    const failed = reading.recipients.filter((r) => r.action === "failed" && r.status.startsWith("5"));
    if (failed.length === 0) {
      return dropped("bounce", "ignored", `no permanent failure in the report (actions: ${[...new Set(reading.recipients.map((r) => r.action))].join(", ")})`);
    }
    const status = yield* lookUp(deps, "bounce", token.messageId);
    if (isOutcome(status)) return status;
    const matches = matchBounce(token, failed, remoteRecipients(status));
    if (matches.length === 0) return dropped("bounce", "unmatched", `no recipient of message ${token.messageId} matches the report (${failed.flatMap((f) => f.addresses).join(", ") || "no address"})`);
    const now = yield* Clock.currentTimeMillis;
    const drafts = matches.map(({ view, report }): EventDraft => {
      const result: RecipientResult = {
        _tag: "AsyncBounce",
        status: report.status,
        reply: report.reply,
        format: reading.format,
        ...(reading.reportingMta !== undefined ? { reportingMta: reading.reportingMta } : {}),
        ...(report.remoteMta !== undefined ? { remoteMta: report.remoteMta } : {}),
      };
      return {
        type: "bounced",
        time: now,
        node: deps.node,
        ...labelsOf(status),
        msg: status.message.id,
        entry: view.entry,
        domain: domainOf(view.recipient),
        rcpt: view.recipient,
        // The suppression list scopes its automatic add by the sender's domain.
        sender: status.message.sender,
        route: "remote",
        result,
        dsn: report.status,
        reply: renderResult(result),
        category: deps.classify(result),
        server: "dsn",
        attempts: view.attempts,
      };
    });
    const outcome = yield* write(deps, "bounce", status.message.id, drafts);
    if (outcome._tag === "Recorded") {
      matches.forEach(({ view }, n) => {
        const draft = drafts[n]!;
        if (draft.type !== "bounced") return;
        deps.count(status.message.node, reputationKeysOf(status.message.sender, view, undefined, deps.keySources), { _tag: "bounced", category: draft.category ?? "other" });
        deps.log("feedback.bounce.recorded", { queueId: draft.msg, entry: draft.entry, recipient: draft.rcpt, dsn: draft.dsn, category: draft.category, reply: draft.reply });
      });
    }
    return outcome;
  });

// ---------------------------------------------------------------------------
// Complaints

/** The first valid token the report carries: the address it came to, then the envelope sender it names, the returned Return-Path, X-Tern-Id. */
const tokenOfComplaint = (deps: IntakeDeps, target: FeedbackTarget, complaint: ComplaintReading): TokenReading => {
  if (target.kind === "verp") return { _tag: "Valid", token: target.token };
  const domain = deps.config.bounceDomain;
  const verp = (address: string | undefined) => (address === undefined || domain === undefined ? undefined : tokenOfVerpAddress(address, domain));
  const candidates = [verp(complaint.originalMailFrom), verp(complaint.returned.returnPath), ...complaint.returned.ternIds].filter((t): t is string => t !== undefined);
  const readings = candidates.map((text) => deps.tokens.read(text.trim()));
  return readings.find((r) => r._tag === "Valid") ?? readings.find((r) => r._tag === "Forged") ?? { _tag: "Malformed" };
};

/**
 * Who complained: the recipient a per-recipient token names; else those the report lists
 * (Original-Rcpt-To); else the one recipient the returned To/Cc names; else the message's
 * only recipient. Several recipients and nothing to tell them apart: nobody (a complaint
 * must not suppress the wrong address).
 */
export const matchComplaint = (token: FeedbackToken, complaint: ComplaintReading, recipients: ReadonlyArray<RecipientView>): ReadonlyArray<RecipientView> => {
  if (token.recipientHash !== undefined) return recipients.filter((r) => recipientHash(r.recipient) === token.recipientHash).slice(0, 1);
  const among = (addresses: ReadonlyArray<string>) => recipients.filter((r) => addresses.includes(r.recipient.toLowerCase()));
  const listed = among(complaint.originalRcptTo);
  if (listed.length > 0) return listed;
  const addressed = among(complaint.returned.recipients);
  if (addressed.length === 1) return addressed;
  return recipients.length === 1 ? recipients : [];
};

const complained = (deps: IntakeDeps, target: FeedbackTarget, complaint: ComplaintReading): Effect.Effect<IntakeOutcome> =>
  Effect.gen(function* () {
    if (!COMPLAINT_TYPES.has(complaint.feedbackType)) return dropped("complaint", "ignored", `Feedback-Type ${complaint.feedbackType} is not a complaint`);
    const reading = tokenOfComplaint(deps, target, complaint);
    if (reading._tag === "Forged") return dropped("complaint", "forged", "the report's X-Tern-Id or VERP address does not verify");
    if (reading._tag === "Malformed") return dropped("complaint", "unmatched", "the report names no message of Tern's (no VERP address, no X-Tern-Id)");
    const status = yield* lookUp(deps, "complaint", reading.token.messageId);
    if (isOutcome(status)) return status;
    const who = matchComplaint(reading.token, complaint, remoteRecipients(status));
    if (who.length === 0) return dropped("complaint", "unmatched", `cannot tell which recipient of message ${reading.token.messageId} complained`);
    const now = yield* Clock.currentTimeMillis;
    const drafts = who.map(
      (view): EventDraft => ({
        type: "complained",
        time: now,
        node: deps.node,
        ...labelsOf(status),
        msg: status.message.id,
        entry: view.entry,
        domain: domainOf(view.recipient),
        rcpt: view.recipient,
        sender: status.message.sender,
        feedbackType: complaint.feedbackType,
        ...(complaint.userAgent !== undefined ? { userAgent: complaint.userAgent } : {}),
        ...(complaint.reportedBy !== undefined ? { reportedBy: complaint.reportedBy } : {}),
        ...(complaint.arrivalDate !== undefined ? { arrivalDate: complaint.arrivalDate } : {}),
        ...(complaint.sourceIp !== undefined ? { sourceIp: complaint.sourceIp } : {}),
      }),
    );
    const outcome = yield* write(deps, "complaint", status.message.id, drafts);
    if (outcome._tag === "Recorded") {
      for (const view of who) deps.count(status.message.node, reputationKeysOf(status.message.sender, view, complaint.sourceIp, deps.keySources), { _tag: "complained" });
      for (const view of who) deps.log("feedback.complaint.recorded", { queueId: status.message.id, entry: view.entry, recipient: view.recipient, feedbackType: complaint.feedbackType, reportedBy: complaint.reportedBy });
    }
    return outcome;
  });
