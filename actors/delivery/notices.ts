// Turns the notices an outcome calls for into DSN messages ready to queue: one message
// per notice kind, to the original envelope sender, from the null sender. Suppressed for
// null-sender and auto-submitted mail (invariant 4).
import type { MessageRecord, QueueEntry, Route } from "../queue/entry.ts";
import { newMessageId } from "../queue/entry.ts";
import type { GeneratedMessage, Spool } from "../queue/spool.ts";
import { composeDsn, dsnParamsOf, mustNotNotify } from "./dsn.ts";
import type { Notice } from "./outcome.ts";

export interface NoticeOptions {
  readonly hostname: string;
  /** Where mail for an address goes from this node (a local mailbox or a remote domain). */
  readonly routeOf: (address: string) => Route;
  /** Messages above this size come back as headers only, whatever RET says. */
  readonly maxReturnBytes: number;
  /** The original message's tenant: the DSN is that tenant's, and so are its events. */
  readonly tenantOf?: ((message: MessageRecord) => string) | undefined;
}

/** Header sections longer than this are cut; enough for any real message. */
const MAX_HEADER_BYTES = 256 * 1024;

export type NoticeResult = { readonly messages: ReadonlyArray<GeneratedMessage>; readonly suppressed: boolean };

export const makeNotices = (options: NoticeOptions, spool: Pick<Spool, "head" | "body">) =>
  (entry: QueueEntry, message: MessageRecord, notices: ReadonlyArray<Notice>, now: number): NoticeResult => {
    if (notices.length === 0) return { messages: [], suppressed: false };
    const head = spool.head(entry.messageId, MAX_HEADER_BYTES) ?? new Uint8Array();
    if (mustNotNotify(entry.sender, Buffer.from(head).toString("latin1"))) return { messages: [], suppressed: true };
    const dsn = dsnParamsOf(message.attributes);
    const messages = notices.map((notice): GeneratedMessage => {
      // Delay notices carry headers only: the sender still has the message on its way.
      const returnFull = notice.action === "failed" && dsn.ret !== "HDRS" && message.size <= options.maxReturnBytes;
      const original = (returnFull ? spool.body(entry.messageId) : head) ?? head;
      const id = newMessageId(now);
      return {
        id,
        sender: "",
        receivedAt: now,
        body: composeDsn({
          reportingMta: options.hostname,
          to: entry.sender,
          envid: dsn.envid,
          arrivalDate: message.receivedAt,
          recipients: notice.recipients,
          original,
          returnFull,
          now,
          id,
        }),
        routes: [{ route: options.routeOf(entry.sender), recipients: [entry.sender] }],
        attributes: { dsnFor: entry.messageId, action: notice.action, ...(options.tenantOf ? { tenant: options.tenantOf(message) } : {}) },
      };
    });
    return { messages, suppressed: false };
  };

export type Notices = ReturnType<typeof makeNotices>;
