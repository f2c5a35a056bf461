// A report message (a bounce or a feedback report) read once with mailparser into the few
// parts the readers use (./bounce.ts, ./complaint.ts): the top-level header fields, the
// report type, the human-readable text, the machine-readable part, and the header section
// of the returned message. Everything else of the MIME tree is dropped here.
//
// `ignoreEmbedded`: a returned message/rfc822 part stays one attachment with its raw bytes
// (mailparser would otherwise render an inline one as text and keep only From, To, Subject
// and Date of its header, losing Return-Path and X-Tern-Id). Parts come decoded (base64,
// quoted-printable), so a report that encodes its delivery-status part reads the same.
import { simpleParser } from "mailparser";
import { parseFieldGroups, parseHeaderSection, type FieldGroup } from "./fields.ts";

export interface ReportMessage {
  /** The top-level header fields. */
  readonly headers: FieldGroup;
  /** `report-type` of a multipart/report ("delivery-status", "feedback-report"), lower case. */
  readonly reportType: string | undefined;
  /** The text/plain parts, decoded and joined. */
  readonly text: string;
  /** The message/delivery-status part (RFC 3464), if any. */
  readonly deliveryStatus: string | undefined;
  /** The message/feedback-report part (RFC 5965), if any. */
  readonly feedbackReport: string | undefined;
  /** The header section of the returned message (message/rfc822, text/rfc822-headers, message/rfc822-headers), if any. */
  readonly returnedHeaders: FieldGroup | undefined;
}

const RETURNED = new Set(["message/rfc822", "text/rfc822-headers", "message/rfc822-headers", "message/global", "message/global-headers"]);
const DELIVERY_STATUS = new Set(["message/delivery-status", "message/global-delivery-status"]);

/** Reads a report; rejects only when mailparser cannot read the bytes at all. */
export const readReport = async (bytes: Uint8Array): Promise<ReportMessage> => {
  const parsed = await simpleParser(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength), {
    ignoreEmbedded: true,
    keepDeliveryStatus: true,
    skipHtmlToText: true,
    skipTextToHtml: true,
    skipImageLinks: true,
    skipTextLinks: true,
  });
  const contentType = parsed.headers.get("content-type") as { value?: string; params?: Record<string, string> } | undefined;
  const partOf = (types: ReadonlySet<string>) => parsed.attachments.find((a) => types.has(a.contentType.toLowerCase()))?.content.toString("utf8");
  const returned = partOf(RETURNED);
  return {
    headers: parseFieldGroups(parsed.headerLines.map((h) => h.line).join("\r\n"))[0] ?? new Map(),
    reportType: contentType?.value?.toLowerCase() === "multipart/report" ? contentType.params?.["report-type"]?.toLowerCase() : undefined,
    text: parsed.text ?? "",
    deliveryStatus: partOf(DELIVERY_STATUS),
    feedbackReport: partOf(new Set(["message/feedback-report"])),
    returnedHeaders: returned === undefined ? undefined : parseHeaderSection(returned),
  };
};
