// What a feedback report (ARF, RFC 5965: multipart/report; report-type=feedback-report)
// says, as values: its type, who wrote it, and what it tells of the original message
// (envelope sender and recipients, and the returned header section, where Tern's
// X-Tern-Id and Return-Path are found). Pure.
import { addressOf, addressesIn, field, fields, nameOf, parseFieldGroups } from "./fields.ts";
import type { ReportMessage } from "./report.ts";

export interface ComplaintReading {
  /** Feedback-Type, lower case: "abuse", "fraud", "virus", "other", "not-spam", "auth-failure". */
  readonly feedbackType: string;
  readonly userAgent?: string | undefined;
  /** The address the report came from (its From field). */
  readonly reportedBy?: string | undefined;
  readonly reportingMta?: string | undefined;
  /** Original-Mail-From: the envelope sender the reporter saw (a VERP address, when VERP is on). */
  readonly originalMailFrom?: string | undefined;
  /** Original-Rcpt-To: the recipients it was for, when the reporter says (RFC 6692). */
  readonly originalRcptTo: ReadonlyArray<string>;
  /** Arrival-Date, ms since the epoch. */
  readonly arrivalDate?: number | undefined;
  readonly sourceIp?: string | undefined;
  /** From the returned message's header section. */
  readonly returned: {
    readonly returnPath?: string | undefined;
    /** Every X-Tern-Id value, the topmost (the one Tern added) first. */
    readonly ternIds: ReadonlyArray<string>;
    /** The addresses of its To and Cc fields (many reporters redact them). */
    readonly recipients: ReadonlyArray<string>;
  };
}

/**
 * Types that mean "this recipient did not want this mail": RFC 5965's abuse, fraud, virus
 * and other. not-spam (RFC 6650) takes a complaint back, and auth-failure (RFC 6591) is
 * about authentication results, not the recipient: neither is a complaint.
 */
export const COMPLAINT_TYPES: ReadonlySet<string> = new Set(["abuse", "fraud", "virus", "other"]);

/** The feedback report, or undefined when the message is none (no message/feedback-report part). */
export const readComplaint = (report: ReportMessage): ComplaintReading | undefined => {
  if (report.feedbackReport === undefined) return undefined;
  const group = parseFieldGroups(report.feedbackReport)[0];
  const feedbackType = field(group, "feedback-type")?.toLowerCase();
  if (feedbackType === undefined) return undefined;
  const arrival = field(group, "arrival-date") ?? field(group, "received-date");
  const arrivalDate = arrival === undefined ? NaN : Date.parse(arrival);
  const returned = report.returnedHeaders;
  return {
    feedbackType,
    userAgent: field(group, "user-agent"),
    reportedBy: addressesIn(field(report.headers, "from"))[0],
    reportingMta: nameOf(field(group, "reporting-mta")),
    originalMailFrom: addressOf(field(group, "original-mail-from")),
    originalRcptTo: fields(group, "original-rcpt-to").map(addressOf).filter((a): a is string => a !== undefined),
    ...(Number.isFinite(arrivalDate) ? { arrivalDate } : {}),
    sourceIp: field(group, "source-ip"),
    returned: {
      returnPath: addressOf(field(returned, "return-path")),
      ternIds: fields(returned, "x-tern-id"),
      recipients: [...fields(returned, "to"), ...fields(returned, "cc")].flatMap(addressesIn),
    },
  };
};
