// Delivery status notifications (RFC 3464), and who gets one (RFC 3461).
//
// A DSN is a multipart/report: a human-readable part, a message/delivery-status part
// (one block per message, one per recipient), and the original message (RET=FULL) or its
// header section (RET=HDRS, and always for delay notices). It goes from the null sender,
// so it is never answered by another DSN.
import { isAscii } from "node:buffer";
import { randomBytes } from "node:crypto";
import { rfc5322Date } from "../common/dates.ts";

/** RFC 3461 NOTIFY values. */
export type NotifyKind = "SUCCESS" | "FAILURE" | "DELAY";

/** The per-message and per-recipient DSN parameters the session kept (`attributes.dsn`, `attributes.recipientDsn`). */
export interface DsnParams {
  readonly ret: "FULL" | "HDRS" | undefined;
  /** ENVID, xtext-decoded. */
  readonly envid: string | undefined;
  readonly recipient: (rcpt: string) => { readonly notify: ReadonlyArray<string> | undefined; readonly orcpt: string | undefined };
  /** Whether any recipient has NOTIFY or ORCPT (most mail has none, and goes in one transaction without asking each). */
  readonly anyRecipientParams?: boolean;
}

/**
 * Whether a recipient's NOTIFY asks for this notice. Without NOTIFY, failures and delays
 * are reported and successes are not (RFC 3461 §4.1 leaves that to the MTA).
 */
export const wants = (notify: ReadonlyArray<string> | undefined, kind: NotifyKind): boolean =>
  notify === undefined || notify.length === 0 ? kind !== "SUCCESS" : notify.includes(kind) && !notify.includes("NEVER");

/**
 * The DSN parameters of a message, as stored: ENVID and ORCPT decoded from xtext (RFC 3461
 * §4), as smtp-server hands them over; they are encoded again only on the wire.
 */
export const dsnParamsOf = (attributes: Readonly<Record<string, unknown>> | undefined): DsnParams => {
  const dsn = (attributes?.dsn ?? {}) as { ret?: unknown; envid?: unknown };
  const perRecipient = (attributes?.recipientDsn ?? {}) as Record<string, { notify?: unknown; orcpt?: unknown } | undefined>;
  const lowered = new Map(Object.entries(perRecipient).map(([rcpt, params]) => [rcpt.toLowerCase(), params]));
  return {
    anyRecipientParams: lowered.size > 0,
    ret: dsn.ret === "FULL" || dsn.ret === "HDRS" ? dsn.ret : undefined,
    envid: typeof dsn.envid === "string" ? dsn.envid : undefined,
    recipient: (rcpt) => {
      const params = perRecipient[rcpt] ?? lowered.get(rcpt.toLowerCase());
      return {
        notify: Array.isArray(params?.notify) ? params.notify.map((n) => String(n).toUpperCase()) : undefined,
        orcpt: typeof params?.orcpt === "string" ? params.orcpt : undefined,
      };
    },
  };
};

/**
 * Mail that must never be answered with a DSN: from the null sender (it is a DSN itself,
 * or asked for no replies) or marked `Auto-Submitted` with anything but `no` (RFC 3834).
 */
export const mustNotNotify = (sender: string, headerSection: string): boolean =>
  sender === "" || autoSubmitted(headerSection);

const autoSubmitted = (headerSection: string): boolean => {
  const match = /^auto-submitted:[ \t]*((?:[^\r\n]|\r?\n[ \t])*)/im.exec(headerSection);
  if (!match) return false;
  const value = match[1]!.replace(/\([^)]*\)/g, "").trim().toLowerCase();
  return value !== "" && value !== "no";
};

export type DsnAction = "failed" | "delayed" | "delivered" | "relayed";

export interface DsnRecipient {
  readonly finalRecipient: string;
  /** ORCPT as given ("rfc822;user+2Bx@example.org"): reported xtext-decoded. */
  readonly orcpt?: string | undefined;
  readonly action: DsnAction;
  /** Enhanced status code, "5.1.1". */
  readonly status: string;
  /** The MX host that answered, when one did. */
  readonly remoteMta?: string | undefined;
  /** The reply; `smtp` when the remote MTA gave it, otherwise what this node saw. */
  readonly diagnostic?: { readonly type: "smtp" | "x-tern"; readonly text: string } | undefined;
  readonly lastAttemptAt?: number | undefined;
  readonly willRetryUntil?: number | undefined;
}

export interface DsnReport {
  /** This node's host name (Reporting-MTA, From:, Message-ID). */
  readonly reportingMta: string;
  /** Envelope sender of the original message: the DSN's recipient. */
  readonly to: string;
  readonly envid?: string | undefined;
  readonly arrivalDate: number;
  readonly recipients: ReadonlyArray<DsnRecipient>;
  /** The original message, or at least its header section. */
  readonly original: Uint8Array;
  /** Return the full message (RET=FULL and small enough) or only its header section. */
  readonly returnFull: boolean;
  readonly now: number;
  /** Unique token for the DSN's Message-ID (its queue id). */
  readonly id: string;
}

const SUBJECTS: Record<DsnAction, string> = {
  failed: "Undelivered Mail Returned to Sender",
  delayed: "Delayed Mail (still being retried)",
  delivered: "Successful Mail Delivery Report",
  relayed: "Successful Mail Delivery Report",
};

/** The byte offset just past the blank line that ends the header section (the whole text when there is none). */
export const headerSectionEnd = (message: Uint8Array): number => {
  const bytes = Buffer.from(message.buffer, message.byteOffset, message.byteLength);
  if (bytes.subarray(0, 2).toString("latin1") === "\r\n") return 2;
  const end = bytes.indexOf("\r\n\r\n");
  return end === -1 ? bytes.length : end + 4;
};

export const composeDsn = (report: DsnReport): Buffer => {
  const original = Buffer.from(report.original.buffer, report.original.byteOffset, report.original.byteLength);
  const returned = report.returnFull ? original : original.subarray(0, headerSectionEnd(original));
  const boundary = boundaryNotIn(returned);
  const action = report.recipients[0]?.action ?? "failed";
  const head = [
    `Date: ${rfc5322Date(report.now)}`,
    `From: Mail Delivery System <MAILER-DAEMON@${report.reportingMta}>`,
    `To: <${report.to}>`,
    `Subject: ${SUBJECTS[action]}`,
    `Message-ID: <${report.id}.dsn@${report.reportingMta}>`,
    `Auto-Submitted: auto-replied`,
    `MIME-Version: 1.0`,
    `Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary="${boundary}"`,
  ];
  const eightBit = !isAscii(returned);
  const parts = [
    `${head.join("\r\n")}\r\n\r\nThis is a MIME-encapsulated message.\r\n\r\n`,
    `--${boundary}\r\nContent-Description: Notification\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n${humanText(report, action)}\r\n`,
    `--${boundary}\r\nContent-Description: Delivery report\r\nContent-Type: message/delivery-status\r\n\r\n${deliveryStatus(report)}\r\n`,
    report.returnFull
      ? `--${boundary}\r\nContent-Description: Undelivered Message\r\nContent-Type: message/rfc822\r\n${eightBit ? "Content-Transfer-Encoding: 8bit\r\n" : ""}\r\n`
      : `--${boundary}\r\nContent-Description: Undelivered Message Headers\r\nContent-Type: text/rfc822-headers\r\n${eightBit ? "Content-Transfer-Encoding: 8bit\r\n" : ""}\r\n`,
  ];
  const tail = `${returned.subarray(returned.length - 2).toString("latin1") === "\r\n" ? "" : "\r\n"}\r\n--${boundary}--\r\n`;
  return Buffer.concat([Buffer.from(parts.join(""), "latin1"), returned, Buffer.from(tail, "latin1")]);
};

const humanText = (report: DsnReport, action: DsnAction): string => {
  const intro: Record<DsnAction, string> = {
    failed: "Your message could not be delivered to one or more recipients.\r\nIt is attached below.",
    delayed: `Your message could not be delivered yet to one or more recipients.\r\nIt is still being retried; you do not need to send it again.`,
    delivered: "Your message was delivered to the recipients below.",
    relayed: "Your message was relayed to the recipients below; no further notices will come from here.",
  };
  const lines = report.recipients.map((r) => {
    const why = r.diagnostic ? `: ${ascii(r.diagnostic.text)}` : "";
    const until = r.willRetryUntil !== undefined ? ` (retried until ${rfc5322Date(r.willRetryUntil)})` : "";
    return `<${ascii(r.finalRecipient)}>${r.remoteMta ? ` (host ${r.remoteMta})` : ""}${why}${until}`;
  });
  return `This is the mail system at host ${report.reportingMta}.\r\n\r\n${intro[action]}\r\n\r\n${lines.join("\r\n")}\r\n`;
};

const deliveryStatus = (report: DsnReport): string => {
  const perMessage = [
    `Reporting-MTA: dns; ${report.reportingMta}`,
    ...(report.envid !== undefined ? [`Original-Envelope-Id: ${ascii(report.envid)}`] : []),
    `Arrival-Date: ${rfc5322Date(report.arrivalDate)}`,
  ];
  const perRecipient = report.recipients.map((r) =>
    [
      `Final-Recipient: rfc822; ${ascii(r.finalRecipient)}`,
      ...(r.orcpt ? [`Original-Recipient: ${originalRecipient(r.orcpt)}`] : []),
      `Action: ${r.action}`,
      `Status: ${r.status}`,
      ...(r.remoteMta ? [`Remote-MTA: dns; ${r.remoteMta}`] : []),
      ...(r.diagnostic ? [`Diagnostic-Code: ${r.diagnostic.type}; ${ascii(r.diagnostic.text)}`] : []),
      ...(r.lastAttemptAt !== undefined ? [`Last-Attempt-Date: ${rfc5322Date(r.lastAttemptAt)}`] : []),
      ...(r.willRetryUntil !== undefined ? [`Will-Retry-Until: ${rfc5322Date(r.willRetryUntil)}`] : []),
    ].join("\r\n"),
  );
  return [perMessage.join("\r\n"), ...perRecipient].join("\r\n\r\n") + "\r\n";
};

/** "rfc822;a+b@x" → "rfc822; a+b@x" (RFC 3464 §2.3.1 carries it decoded, as it is stored). */
const originalRecipient = (orcpt: string): string => {
  const semicolon = orcpt.indexOf(";");
  return semicolon === -1 ? `rfc822; ${ascii(orcpt)}` : `${orcpt.slice(0, semicolon)}; ${ascii(orcpt.slice(semicolon + 1))}`;
};

/** Header fields of the report are ASCII, one line each: anything else is replaced. */
const ascii = (text: string): string => text.replace(/[\r\n]+/g, " ").replace(/[^\x20-\x7e]/g, "?");

const boundaryNotIn = (content: Buffer): string => {
  for (;;) {
    const boundary = `=_tern_${randomBytes(12).toString("hex")}`;
    if (content.indexOf(boundary) === -1) return boundary;
  }
};
