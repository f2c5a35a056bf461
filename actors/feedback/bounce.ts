// What a bounce that came back to a VERP address says, as values: per recipient, the
// action, the RFC 3463 status and the reply the remote host gave. Pure.
//
// A standard report (RFC 3464: multipart/report with a message/delivery-status part) is
// read field by field. Anything else is read by its wording, only when it looks like a
// bounce (from MAILER-DAEMON or postmaster, or a subject such as "Undelivered Mail
// Returned to Sender") and quotes a code: the first SMTP reply (550 …) or status code
// (5.1.1) in its text, and the addresses it names. An automatic reply (RFC 3834
// Auto-Submitted: auto-replied, "Out of office") is told apart and never counts: it goes
// to the return path too.
import type { Reply } from "../../protocol/delivery.ts";
import { parseReply } from "../../protocol/smtp-reply.ts";
import { addressOf, addressesIn, field, fields, nameOf, parseFieldGroups, type FieldGroup } from "./fields.ts";
import type { ReportMessage } from "./report.ts";

export interface BouncedRecipient {
  /** Addresses the report gives for the recipient, lower case: Original-Recipient, then Final-Recipient (or those its text names). */
  readonly addresses: ReadonlyArray<string>;
  /** RFC 3464 action: "failed", "delayed", "delivered", "relayed", "expanded". */
  readonly action: string;
  /** The RFC 3463 status ("5.1.1"). */
  readonly status: string;
  /** The remote host's reply as quoted (Diagnostic-Code: smtp; …), else one standing for the status. */
  readonly reply: Reply;
  readonly remoteMta?: string | undefined;
}

export type BounceReading =
  | {
      readonly _tag: "Bounce";
      readonly format: "dsn" | "text";
      readonly reportingMta?: string | undefined;
      readonly recipients: ReadonlyArray<BouncedRecipient>;
    }
  | { readonly _tag: "AutoReply" }
  | { readonly _tag: "NotABounce" };

const STATUS = /\b([245])\.(\d{1,3})\.(\d{1,3})\b/;

/** The status in a Status: field ("5.1.1 (user unknown)" → "5.1.1"). */
const statusIn = (value: string | undefined): string | undefined => (value === undefined ? undefined : STATUS.exec(value)?.[0]);

/** The code RFC 5321 uses for a status's class, for a report that gives only the status. */
const codeOfClass = (status: string): number => (status.startsWith("2") ? 250 : status.startsWith("4") ? 450 : 550);

/**
 * The reply a Diagnostic-Code quotes (`smtp; 550 5.1.1 …`), with the report's status as its
 * enhanced code when the reply gave none of the same class; else one made from the status.
 */
const replyOf = (diagnostic: string | undefined, status: string): Reply => {
  const semicolon = diagnostic?.indexOf(";") ?? -1;
  const type = semicolon >= 0 ? diagnostic!.slice(0, semicolon).trim().toLowerCase() : "";
  const text = (semicolon >= 0 ? diagnostic!.slice(semicolon + 1) : (diagnostic ?? "")).trim();
  const quoted = type === "smtp" || type === "" ? parseReply(text) : undefined;
  if (quoted && quoted.code >= 400) {
    return quoted.enhanced === undefined && String(quoted.code)[0] === status[0] ? { ...quoted, enhanced: status } : quoted;
  }
  return { _tag: "Reply", code: codeOfClass(status), enhanced: status, text };
};

/** A status for an action without one (a broken report): failed is permanent, delayed temporary. */
const statusOfAction = (action: string): string => (action === "failed" ? "5.0.0" : action === "delayed" ? "4.0.0" : "2.0.0");

const recipientOf = (group: FieldGroup): BouncedRecipient => {
  const action = (field(group, "action") ?? "").toLowerCase().split(/\s/)[0] ?? "";
  const diagnostic = field(group, "diagnostic-code");
  const status = statusIn(field(group, "status")) ?? statusIn(diagnostic) ?? statusOfAction(action);
  const addresses = [addressOf(field(group, "original-recipient")), addressOf(field(group, "final-recipient"))].filter((a): a is string => a !== undefined);
  // Some reporters leave Action out: the status's class says what happened.
  const effective = action !== "" ? action : status.startsWith("5") ? "failed" : status.startsWith("4") ? "delayed" : "delivered";
  return { addresses: [...new Set(addresses)], action: effective, status, reply: replyOf(diagnostic, status), remoteMta: nameOf(field(group, "remote-mta")) };
};

const readStandard = (deliveryStatus: string): BounceReading => {
  const groups = parseFieldGroups(deliveryStatus);
  const isRecipient = (group: FieldGroup) => group.has("final-recipient") || group.has("original-recipient") || group.has("action");
  const perMessage = groups.find((group) => !isRecipient(group));
  return {
    _tag: "Bounce",
    format: "dsn",
    reportingMta: nameOf(field(perMessage, "reporting-mta")),
    recipients: groups.filter(isRecipient).map(recipientOf),
  };
};

const AUTO_SUBJECT = /^\s*(auto(matic)?[ -]?(reply|response|antwort)|out of (the )?office|abwesenheit|absence|vacation)/i;

/** RFC 3834, and the older markers auto-responders still send. */
const isAutoReply = (headers: FieldGroup): boolean => {
  const autoSubmitted = (field(headers, "auto-submitted") ?? "").toLowerCase();
  return (
    autoSubmitted.startsWith("auto-replied") ||
    headers.has("x-autoreply") ||
    headers.has("x-autorespond") ||
    (field(headers, "precedence") ?? "").toLowerCase() === "auto_reply" ||
    AUTO_SUBJECT.test(field(headers, "subject") ?? "")
  );
};

const BOUNCE_SENDER = /^(mailer-daemon|mail-daemon|postmaster|mailer|mail delivery subsystem)\b/i;
const BOUNCE_SUBJECT = /undeliver|undelivered|delivery (status notification|failure|failed|has failed|problem)|failure notice|returned mail|mail delivery (failed|system)|could not be delivered|non[- ]?delivery|delivery report|rejected|bounce/i;
const DELAY_SUBJECT = /\bdelay|will (be )?retr(y|ied)|still (being )?retr|not (yet )?been delivered|warning/i;

const looksLikeBounce = (headers: FieldGroup): boolean => {
  const from = field(headers, "from") ?? "";
  const fromAddress = addressesIn(from)[0] ?? from;
  return BOUNCE_SENDER.test(fromAddress) || BOUNCE_SENDER.test(from.replace(/^"/, "")) || BOUNCE_SUBJECT.test(field(headers, "subject") ?? "");
};

/** The first SMTP reply quoted in the text: after "said:", or on a line of its own; else a status code alone. */
const replyInText = (text: string): { readonly reply: Reply; readonly status: string } | undefined => {
  const quoted = /said:\s*([45]\d\d[ -][^\r\n]*)/i.exec(text)?.[1] ?? /^\s*([45]\d\d[ -][^\r\n]*)$/m.exec(text)?.[1] ?? /'([45]\d\d [45]\.\d{1,3}\.\d{1,3}[^']*)'/.exec(text)?.[1];
  const reply = quoted === undefined ? undefined : parseReply(quoted.trim());
  const status = reply?.enhanced ?? statusIn(text);
  if (reply && status) return { reply: reply.enhanced === undefined && reply.code >= 400 && String(reply.code)[0] === status[0] ? { ...reply, enhanced: status } : reply, status };
  if (reply) return { reply, status: `${String(reply.code)[0]}.0.0` };
  if (status) return { reply: { _tag: "Reply", code: codeOfClass(status), enhanced: status, text: firstLineWith(text, status) }, status };
  return undefined;
};

const firstLineWith = (text: string, needle: string): string => text.split(/\r?\n/).find((line) => line.includes(needle))?.trim() ?? "";

/**
 * A bounce by its sender or subject, quoting a code (without one there is nothing to
 * classify, and a person's reply may look like this too). Bounces are often marked
 * Auto-Submitted: auto-replied as well (Exim's are), so that is only asked after.
 */
const readByWording = (report: ReportMessage): BounceReading => {
  const found = looksLikeBounce(report.headers) ? replyInText(report.text) : undefined;
  if (found === undefined) return isAutoReply(report.headers) ? { _tag: "AutoReply" } : { _tag: "NotABounce" };
  const delayed = DELAY_SUBJECT.test(field(report.headers, "subject") ?? "") || found.status.startsWith("4");
  // Exim names the failed addresses in X-Failed-Recipients; others only in their text.
  const named = fields(report.headers, "x-failed-recipients").flatMap(addressesIn);
  return {
    _tag: "Bounce",
    format: "text",
    recipients: [{ addresses: [...new Set([...named, ...addressesIn(report.text)])], action: delayed ? "delayed" : "failed", status: found.status, reply: found.reply }],
  };
};

/** What the report says; a message/delivery-status part wins over any wording. */
export const readBounce = (report: ReportMessage): BounceReading => {
  if (report.deliveryStatus !== undefined) {
    const standard = readStandard(report.deliveryStatus);
    if (standard._tag === "Bounce" && standard.recipients.length > 0) return standard;
  }
  return readByWording(report);
};
