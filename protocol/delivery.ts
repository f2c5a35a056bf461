// What delivery reports about each recipient, as values: the SMTP reply the next hop gave,
// or what went wrong when no reply decided. One set of Schemas for the spool (attempt
// history), queue administration (`tern queue show`) and events (protocol/events.ts), so every enumeration
// here is written once and the TypeScript types are derived from it.
//
// Text is made from these values only at the edges (DSN body, logs, `tern queue`,
// events), by `renderResult`; nothing reads text back.
import { Schema } from "effect";
import { PermanentDnsReason, dnsFailureStatus } from "./route.ts";
import { SuppressionReason } from "./suppression.ts";

// ---------------------------------------------------------------------------
// Enumerations

/** How one recipient came out of one attempt. "expired" is a deferral past the queue lifetime. */
export const RecipientStatus = Schema.Literals(["delivered", "deferred", "failed", "expired"]);
export type RecipientStatus = typeof RecipientStatus.Type;

/**
 * The one mapping from an attempt's status to the name events and message status give
 * it: a permanent failure is "bounced" there (the spool and `tern queue` say "failed");
 * the others keep their names.
 */
export const reportedStatus = {
  delivered: "delivered",
  deferred: "deferred",
  failed: "bounced",
  expired: "expired",
} as const satisfies Record<RecipientStatus, string>;

/** Attempt statuses by their reported names: the types of recipient events (protocol/events.ts). */
export const ReportedStatus = Schema.Literals([reportedStatus.delivered, reportedStatus.deferred, reportedStatus.failed, reportedStatus.expired]);
export type ReportedStatus = typeof ReportedStatus.Type;

/** Failure classes for bounces and deferrals (see actors/delivery/classify.ts). */
export const BounceCategory = Schema.Literals(["bad-mailbox", "bad-domain", "policy", "quota", "rate-limited", "tls", "dns", "too-large", "other"]);
export type BounceCategory = typeof BounceCategory.Type;

/**
 * Why a destination's whole queue is held a while after an attempt (actors/delivery/outcome.ts):
 * it rate-limits us, or none of its hosts could be reached.
 */
export const QueueHoldReason = Schema.Literals(["rate-limited", "unreachable"]);
export type QueueHoldReason = typeof QueueHoldReason.Type;

/** Why an entry is (again) waiting: KumoMTA-style requeue reasons, kept for operators. */
export const WaitReason = Schema.Literals([
  "received",
  /** Submitted over the API with a send-at time: due then, not before. */
  "scheduled",
  /** This node could not make the attempt (its delivery actor was stopped, crashed or too far behind). */
  "dispatch-failed",
  /** The next hop answered 4xx. */
  "temporary-reply",
  /** No MX host could be reached: refused, timed out, closed, 4xx/5xx greeting. */
  "connection-failed",
  "dns-temporary",
  /** TLS is required for the domain and the host did not offer it (or the handshake failed). */
  "tls-unavailable",
  "rate-limited",
  /** The site is paused for the source address after a throttling reply (automatic back-off): not attempted. */
  "backed-off",
  /** Local delivery: the mailbox's owner node did not take it (down, busy, over quota). */
  "mailbox-unavailable",
  /** The operator asked for an attempt now (`tern queue retry`). */
  "retry-now",
  /** The operator resumed the entry's suspended queue. */
  "resumed",
  /** The operator put the entry on hold (`tern queue hold`): not attempted until released. */
  "held",
  /** The operator released the entry from hold (`tern queue release`): due at once. */
  "released",
  /** Not attempted: the source address is warming up and has used its cap for the destination's provider (the pool waits). */
  "warmup-cap",
  /** Not attempted: a reputation threshold paused the sender domain or the source address, or slowed the sender domain and this message waits its turn. */
  "reputation-hold",
]);
export type WaitReason = typeof WaitReason.Type;

// ---------------------------------------------------------------------------
// What one recipient got

/** An SMTP reply (RFC 5321) as the next hop sent it, parsed once where it arrived. */
export const Reply = Schema.TaggedStruct("Reply", {
  /** 200–599. */
  code: Schema.Int,
  /** The RFC 3463 enhanced status code ("5.1.1"), when the reply carried one whose class matches `code`. */
  enhanced: Schema.optional(Schema.String),
  /** The text after the codes, continuation lines joined with a space. */
  text: Schema.String,
});
export type Reply = typeof Reply.Type;

/** Local delivery: the owner node's mailbox committed the message. */
const Stored = Schema.TaggedStruct("Stored", { uid: Schema.String });

/** The domain could not be resolved for now (SERVFAIL, timeouts, resolver unreachable). Defers. */
const DnsTemporary = Schema.TaggedStruct("DnsTemporary", {
  domain: Schema.String,
  detail: Schema.String,
  rcode: Schema.optional(Schema.String),
  server: Schema.optional(Schema.String),
});

/** The domain takes no mail (NXDOMAIN, null MX, no usable address). Fails. */
const DnsPermanent = Schema.TaggedStruct("DnsPermanent", {
  domain: Schema.String,
  reason: PermanentDnsReason,
  detail: Schema.String,
  rcode: Schema.optional(Schema.String),
  server: Schema.optional(Schema.String),
});

/**
 * No MX host could be used: refused, reset, closed, or (with `reply`) the host refused
 * the connection in its greeting or its answer to EHLO. Defers.
 */
const ConnectionFailed = Schema.TaggedStruct("ConnectionFailed", {
  detail: Schema.String,
  reply: Schema.optional(Reply),
});

/** A host stopped answering (RFC 5321 §4.5.3.2 timeouts). Defers. */
const Timeout = Schema.TaggedStruct("Timeout", { detail: Schema.String });

/** TLS was required and not offered, or the handshake failed. Defers. */
const TlsFailed = Schema.TaggedStruct("TlsFailed", {
  detail: Schema.String,
  reply: Schema.optional(Reply),
});

/** The host broke the protocol (an answer that is no SMTP reply, or none where one was due). Defers. */
const ProtocolError = Schema.TaggedStruct("ProtocolError", {
  detail: Schema.String,
  reply: Schema.optional(Reply),
});

/** 8-bit or UTF-8 mail for a host without 8BITMIME or SMTPUTF8 that could not be converted. Fails. */
const ConversionFailed = Schema.TaggedStruct("ConversionFailed", {
  /** The extension the host lacked. */
  missing: Schema.Literals(["8BITMIME", "SMTPUTF8"]),
  detail: Schema.String,
});

/** The message is above the SIZE the host announced, so it was not sent. Fails. */
const TooLarge = Schema.TaggedStruct("TooLarge", { detail: Schema.String });

/** Local delivery: the mailbox's owner node could not be reached or did not take it. Defers. */
const MailboxUnavailable = Schema.TaggedStruct("MailboxUnavailable", {
  user: Schema.String,
  /** The mailbox error's tag (MailboxUnavailable, NotOwner, StoreError, …). */
  error: Schema.String,
  detail: Schema.String,
});

/** Local delivery: storing the message would take the user over their quota. Defers: the user may make room before the queue lifetime ends. */
const OverQuota = Schema.TaggedStruct("OverQuota", {
  user: Schema.String,
  usedBytes: Schema.Number,
  quotaBytes: Schema.Number,
  messageBytes: Schema.Number,
});

/** Local delivery: the owner node knows no such user (removed after the mail was accepted). Defers: the config may come back. */
const UnknownUser = Schema.TaggedStruct("UnknownUser", { user: Schema.String });

/** The job waited in its site's queue past the limit and was not attempted (the site is too slow for its backlog). Defers. */
const QueueWaitExceeded = Schema.TaggedStruct("QueueWaitExceeded", { limitMs: Schema.Number });

/**
 * Not attempted: the message's pool waits when a cold source address has used its warm-up
 * cap for the destination's provider, and this one has (actors/delivery/warmup.ts). Defers
 * until the window opens again (`until`); not counted as a delivery attempt.
 */
const WarmupCap = Schema.TaggedStruct("WarmupCap", {
  /** The source address that reached its cap. */
  source: Schema.String,
  provider: Schema.String,
  window: Schema.Literals(["day", "hour"]),
  cap: Schema.Number,
  /** When the window opens again (ms since the epoch). */
  until: Schema.Number,
});

/**
 * Not attempted: the site is paused for this source address after it answered with a
 * throttling reply (`rule` of the throttle rules, `reply` what it said) until `until`. Defers.
 */
const BackedOff = Schema.TaggedStruct("BackedOff", {
  rule: Schema.String,
  until: Schema.Number,
  reply: Reply,
});

/** What a reputation threshold acts on: a source address (an IP pool's, or "default") or a sender domain. */
export const HeldDimension = Schema.Literals(["source", "sender_domain"]);
export type HeldDimension = typeof HeldDimension.Type;

/**
 * Not attempted: a reputation threshold (actors/delivery/reputation-rules.ts) paused the
 * message's sender domain or its source address until `until`, or slowed its sender domain
 * and `until` is the message's turn. Defers; not counted as a delivery attempt.
 */
const ReputationHold = Schema.TaggedStruct("ReputationHold", {
  dimension: HeldDimension,
  /** The sender domain, or the source address ("default": the system's own). */
  key: Schema.String,
  /** The threshold's name. */
  rule: Schema.String,
  action: Schema.Literals(["pause", "slow"]),
  until: Schema.Number,
});
export type ReputationHold = typeof ReputationHold.Type;

/**
 * Not sent: an operator held the entry (`tern queue hold`) after the scheduler had claimed
 * it, and the hold was seen before its transaction began (while it waited for a connection
 * or the site's budget). Defers, held; not counted as a delivery attempt.
 */
const OperatorHold = Schema.TaggedStruct("OperatorHold", {});

/** This node could not make the attempt (its delivery actor stopped or crashed). Defers. */
const Internal = Schema.TaggedStruct("Internal", { detail: Schema.String });

/** An operator failed the recipient (`tern queue bounce`). */
const Returned = Schema.TaggedStruct("Returned", { reason: Schema.optional(Schema.String) });

/**
 * Not sent: the recipient is on the suppression list (protocol/suppression.ts), found by the
 * check made before each attempt. Fails, without a DSN (the sender learns of it from the
 * "suppressed" event, as at submission).
 */
const Suppressed = Schema.TaggedStruct("Suppressed", {
  /** "global" or the sender domain of the entry that matched. */
  scope: Schema.String,
  reason: SuppressionReason,
});

/**
 * A host that had taken the message reported later that it failed for good: a delivery
 * status notification (RFC 3464, or a non-standard bounce read by its text) arrived at the
 * message's VERP address (actors/feedback/). Only in "bounced" events, never in a queue entry.
 */
const AsyncBounce = Schema.TaggedStruct("AsyncBounce", {
  /** The RFC 3463 status the report gave (Status:, or found in its text). */
  status: Schema.String,
  /** The reply the remote host gave, as the report quotes it (Diagnostic-Code), else one made from the status. */
  reply: Reply,
  /** "dsn": a multipart/report with a message/delivery-status part; "text": a bounce read by its wording. */
  format: Schema.Literals(["dsn", "text"]),
  /** The host that wrote the report (Reporting-MTA), and the one that refused the message (Remote-MTA). */
  reportingMta: Schema.optional(Schema.String),
  remoteMta: Schema.optional(Schema.String),
});

/** What an attempt got for one recipient: the next hop's reply, local storage, or a tagged failure. */
export const RecipientResult = Schema.Union([
  Reply,
  Stored,
  DnsTemporary,
  DnsPermanent,
  ConnectionFailed,
  Timeout,
  TlsFailed,
  ProtocolError,
  ConversionFailed,
  TooLarge,
  MailboxUnavailable,
  OverQuota,
  UnknownUser,
  QueueWaitExceeded,
  WarmupCap,
  BackedOff,
  ReputationHold,
  OperatorHold,
  Internal,
  Returned,
  Suppressed,
  AsyncBounce,
]);
export type RecipientResult = typeof RecipientResult.Type;
/** What can go wrong with a connection before a reply decides. */
export type ConnectionTrouble = typeof ConnectionFailed.Type | typeof Timeout.Type | typeof TlsFailed.Type | typeof ProtocolError.Type;

// ---------------------------------------------------------------------------
// The attempt record kept with a queue entry, shown by `tern queue show`

const RecipientRecord = Schema.Struct({
  rcpt: Schema.String,
  status: RecipientStatus,
  result: RecipientResult,
  /** For every status but "delivered". */
  category: Schema.optional(BounceCategory),
});

/** One attempt: when, where, what each recipient got, and why the entry waits again. */
export const AttemptRecord = Schema.Struct({
  at: Schema.Number,
  /** The MX host name and address that answered, or the last one tried when none did. */
  mx: Schema.optional(Schema.String),
  ip: Schema.optional(Schema.String),
  /**
   * The IP pool address the connection left from; absent for the system's default address
   * (and when no MX was reached). A report that comes back later about the mail is counted
   * for this source address (actors/feedback/reputation-keys.ts).
   */
  source: Schema.optional(Schema.String),
  /** The next hop when it was not an MX: "dns" (resolution failed), "mailbox/<user>", "admin". */
  via: Schema.optional(Schema.String),
  results: Schema.Array(RecipientRecord),
  /** Set when recipients are left: why the entry waits again. */
  requeued: Schema.optional(WaitReason),
});
export type AttemptRecord = typeof AttemptRecord.Type;

// ---------------------------------------------------------------------------
// Reading the values

/** What a result means for its recipient, before the queue lifetime is taken into account. */
export const statusOfResult = (result: RecipientResult): "delivered" | "deferred" | "failed" => {
  switch (result._tag) {
    case "Reply":
      return result.code >= 200 && result.code < 300 ? "delivered" : result.code >= 500 && result.code < 600 ? "failed" : "deferred";
    case "Stored":
      return "delivered";
    case "DnsPermanent":
    case "ConversionFailed":
    case "TooLarge":
    case "Returned":
    case "Suppressed":
    case "AsyncBounce":
      return "failed";
    default:
      return "deferred";
  }
};

/** "1.1" of "5.1.1". */
export const subjectDetail = (enhanced: string): string => enhanced.slice(enhanced.indexOf(".") + 1);

/** A reply the host gave while the recipient is only deferred reports a 4.x.x status whatever its own class. */
const deferredStatus = (reply: Reply | undefined, fallback: string): string => (reply?.enhanced ? `4.${subjectDetail(reply.enhanced)}` : fallback);

/** The RFC 3463 status a DSN reports for the result (Status:), and events and logs carry as `dsn`. */
export const enhancedStatus = (result: RecipientResult): string => {
  switch (result._tag) {
    case "Reply":
      return result.enhanced ?? `${String(result.code)[0]}.0.0`;
    case "Stored":
      return "2.0.0";
    case "DnsTemporary":
      return "4.4.3"; // directory server failure
    case "DnsPermanent":
      return dnsFailureStatus(result.reason);
    case "ConnectionFailed":
      return deferredStatus(result.reply, "4.4.1"); // no answer from host
    case "Timeout":
      return "4.4.2"; // bad connection
    case "TlsFailed":
      return deferredStatus(result.reply, "4.7.10"); // encryption needed (RFC 5248)
    case "ProtocolError":
      return "4.5.0";
    case "ConversionFailed":
      return result.missing === "SMTPUTF8" ? "5.6.7" : "5.6.3";
    case "TooLarge":
      return "5.3.4";
    case "MailboxUnavailable":
      return "4.2.0";
    case "OverQuota":
      return "4.2.2";
    case "UnknownUser":
      return "4.1.1";
    case "QueueWaitExceeded":
      return "4.4.5"; // mail system congestion
    case "WarmupCap":
      return "4.4.5"; // our own congestion: the address may send no more now
    case "BackedOff":
      return deferredStatus(result.reply, "4.4.5");
    case "ReputationHold":
      return "4.4.5"; // our own congestion, as a warm-up cap
    case "OperatorHold":
      return "4.3.0"; // held by the mail system's operator
    case "Internal":
      return "4.3.0";
    case "Returned":
      return "5.0.0";
    case "Suppressed":
      return "5.7.1"; // delivery not authorized
    case "AsyncBounce":
      return result.status;
  }
};

const describeHold = (hold: ReputationHold): string => {
  const what = hold.dimension === "source" ? `source address ${hold.key}` : `sender domain ${hold.key}`;
  const until = new Date(hold.until).toISOString();
  return hold.action === "pause"
    ? `not attempted: ${what} is paused until ${until} (reputation threshold ${hold.rule})`
    : `not attempted yet: ${what} is slowed (reputation threshold ${hold.rule}); its turn comes at ${until}`;
};

/** A reply on one line, as the host sent it: "550 5.1.1 no such user". */
export const replyLine = (reply: Reply): string => [String(reply.code), reply.enhanced, reply.text].filter(Boolean).join(" ");

const withReply = (text: string, reply: Reply | undefined) => (reply ? `${text}; the host said: ${replyLine(reply)}` : text);

/**
 * The result as one line of text, for DSN bodies, logs, `tern queue` and events: a reply as
 * the host sent it, anything else as its status and what happened.
 */
export const renderResult = (result: RecipientResult): string => {
  if (result._tag === "Reply") return replyLine(result);
  return `${enhancedStatus(result)} ${describe(result)}`;
};

const describe = (result: Exclude<RecipientResult, Reply>): string => {
  switch (result._tag) {
    case "Stored":
      return `stored as uid ${result.uid}`;
    case "DnsTemporary":
    case "DnsPermanent":
      return `DNS: ${result.detail}`;
    case "ConnectionFailed":
      return withReply(`connection failed: ${result.detail}`, result.reply);
    case "Timeout":
      return `timed out: ${result.detail}`;
    case "TlsFailed":
      return withReply(`TLS: ${result.detail}`, result.reply);
    case "ProtocolError":
      return withReply(`protocol error: ${result.detail}`, result.reply);
    case "ConversionFailed":
      return `cannot convert for a host without ${result.missing}: ${result.detail}`;
    case "TooLarge":
      return `message too large: ${result.detail}`;
    case "MailboxUnavailable":
      return `mailbox of ${result.user} unavailable: ${result.error}: ${result.detail}`;
    case "OverQuota":
      return `mailbox full: ${result.usedBytes} of ${result.quotaBytes} bytes used, message is ${result.messageBytes}`;
    case "UnknownUser":
      return `no mailbox for ${result.user} on its owner node`;
    case "QueueWaitExceeded":
      return `the site's queue is too long, not attempted (waited over ${Math.round(result.limitMs / 1000)} s)`;
    case "WarmupCap":
      return `source address ${result.source} is warming up and sent its cap of ${result.cap} this ${result.window} to ${result.provider}; waits until ${new Date(result.until).toISOString()}`;
    case "BackedOff":
      return withReply(`not attempted: the site is paused for this source address until ${new Date(result.until).toISOString()} (throttle rule ${result.rule})`, result.reply);
    case "ReputationHold":
      return describeHold(result);
    case "OperatorHold":
      return "not sent: held by an operator (tern queue hold) before its transaction began";
    case "Internal":
      return result.detail;
    case "Returned":
      return `returned by the mail system administrator${result.reason ? `: ${result.reason}` : ""}`;
    case "Suppressed":
      return `not sent: the recipient is on the suppression list (${result.reason}, scope ${result.scope})`;
    case "AsyncBounce":
      return `bounced after delivery${result.reportingMta ? ` (reported by ${result.reportingMta})` : ""}: ${replyLine(result.reply)}`;
  }
};
