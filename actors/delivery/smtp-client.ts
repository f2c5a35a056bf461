// SMTP out with nodemailer's SMTPConnection: one connection to one MX address, used
// for many messages (RSET between them), and the transactions of one message on it.
//
// Opening a connection fails over to the next address on connection trouble, a 4xx/5xx
// greeting or EHLO, or (when TLS is required) no STARTTLS; once a host has taken MAIL
// FROM, its replies decide each recipient's outcome and no other host is tried, so a
// message is never sent twice because a connection broke in the middle of DATA.
//
// Replies are parsed here, where they arrive, into Reply values; trouble without a reply
// becomes a tagged failure. Nothing later reads reply text.
import type { Socket } from "node:net";
import SMTPConnection from "nodemailer/lib/smtp-connection";
import type { ConnectionTrouble, RecipientResult, Reply } from "../../protocol/delivery.ts";
import { parseReply } from "../../protocol/smtp-reply.ts";
import { everyone, type RecipientAttempt } from "./attempt.ts";
import type { DsnParams } from "./dsn.ts";
import { downgradeTo7bit, hasEightBit, isAscii } from "./downgrade.ts";
import { foldLongLines } from "./long-lines.ts";

export interface OutboundOptions {
  readonly heloName: string;
  /** 25 in production; tests point it at a loopback sink. */
  readonly port: number;
  /** Fold lines over 998 octets before sending (`smtp.longLines: "encode"`: such mail was accepted). */
  readonly foldLongLines?: boolean | undefined;
  /** The local address connections bind to (an IP pool's source address); the system's choice when absent. */
  readonly localAddress?: string | undefined;
  /** TCP connect. */
  readonly connectTimeoutMs: number;
  /** RFC 5321 §4.5.3.2.1: the 220 greeting (5 minutes). */
  readonly greetingTimeoutMs: number;
  /** Silence allowed after any command; RFC 5321 §4.5.3.2 asks for up to 10 minutes after the final dot. */
  readonly socketTimeoutMs: number;
  /** Messages sent over one connection before it is closed and a new one opened. */
  readonly messagesPerConnection: number;
  /** Recipients per transaction; more go in further transactions on the same connection. */
  readonly maxRecipientsPerTransaction: number;
}

export interface OutboundJob {
  readonly sender: string;
  readonly recipients: ReadonlyArray<string>;
  /** Loaded once a host is ready for it; undefined when it is gone (nothing is sent then). */
  readonly body: () => Uint8Array | undefined;
  /** Asked once a host is ready, before MAIL FROM: false and the message is not sent (an operator held it meanwhile, or it left the queue). */
  readonly mayStart?: () => boolean;
  readonly dsn: DsnParams;
}

/** An open, greeted connection to one MX address. */
export interface Connection {
  readonly host: string;
  readonly ip: string;
  readonly secure: boolean;
  readonly extensions: ReadonlySet<string>;
  /** Messages sent over it so far. */
  sent: number;
  /** Set once the server or the network closed it. */
  readonly closed: () => boolean;
  readonly close: () => void;
}

export type TlsPolicy = "require" | "opportunistic";

/** Why a connection could not be opened (or broke): no reply decided, so the recipients wait. */
export type OpenFailure = ConnectionTrouble;

interface SmtpError extends Error {
  code?: string;
  originalCode?: string;
  responseCode?: number;
  response?: string;
  command?: string;
  recipient?: string;
  rejectedErrors?: SmtpError[];
  timeoutType?: string;
}

export const openConnection = (
  target: { readonly host: string; readonly ip: string },
  options: OutboundOptions,
  tls: TlsPolicy,
  /** Called once when the connection is gone, however it went (permits are returned here). */
  onClosed: () => void,
  plaintextOnly = false,
  /** Aborted when the caller gave up (its worker crashed or stopped): hang up at whatever stage the connection reached. */
  signal?: AbortSignal,
): Promise<Connection | OpenFailure> =>
  new Promise((resolve) => {
    const conn = new SMTPConnection({
      host: target.ip,
      port: options.port,
      name: options.heloName,
      ...(options.localAddress !== undefined ? { localAddress: options.localAddress } : {}),
      secure: false,
      requireTLS: tls === "require",
      opportunisticTLS: tls === "opportunistic",
      ignoreTLS: plaintextOnly,
      connectionTimeout: options.connectTimeoutMs + options.greetingTimeoutMs,
      greetingTimeout: options.greetingTimeoutMs,
      socketTimeout: options.socketTimeoutMs,
      socketCloseTimeout: 1_000,
      // Certificates of MX hosts are not verified (opportunistic TLS, RFC 7435); MTA-STS/DANE would.
      tls: { rejectUnauthorized: false, servername: target.host },
      logger: false,
    });
    let closed = false;
    let settled = false;
    signal?.addEventListener("abort", () => conn.close(), { once: true });
    conn.on("error", (error: SmtpError) => {
      closed = true;
      if (!settled) {
        settled = true;
        resolve(openFailure(error));
      }
    });
    conn.once("end", () => {
      closed = true;
      // The permit comes back when the socket is really gone, not when nodemailer lets go of it,
      // so the limit holds as the remote host counts connections.
      const socket = conn._socket;
      if (socket && !socket.destroyed) socket.once("close", onClosed);
      else onClosed();
      if (!settled) {
        settled = true;
        resolve({ _tag: "ConnectionFailed", detail: "connection closed before the greeting" });
      }
    });
    conn.connect(() => {
      if (settled) return;
      settled = true;
      if (conn._socket) batchWrites(conn._socket);
      resolve({
        host: target.host,
        ip: target.ip,
        secure: conn.secure,
        extensions: new Set(extensionsOf(conn)),
        sent: 0,
        closed: () => closed,
        close: () => {
          if (!closed) conn.quit(); // say goodbye when the host is still listening
          closed = true;
          conn.close();
        },
        [CONN]: conn,
      } as Connection);
    });
  });

/**
 * Writes made in one go leave in one write: nodemailer sends a message as the dot-stuffed
 * body, then the final dot from a stream callback a tick later, each a write (a system call,
 * a TCP segment) of its own. The first write corks the socket and a microtask uncorks it,
 * after the ticks of that run, so they leave together and nothing waits for the event loop.
 * `end` (QUIT, close) flushes whatever is corked.
 */
const batchWrites = (socket: Socket) => {
  let corked = false;
  const uncork = () => {
    corked = false;
    socket.uncork();
  };
  const write = socket.write;
  socket.write = function (this: Socket, ...args: Parameters<Socket["write"]>) {
    if (!corked) {
      corked = true;
      socket.cork();
      queueMicrotask(uncork);
    }
    return write.apply(this, args);
  } as Socket["write"];
};

const CONN = Symbol("smtp-connection");
const rawOf = (connection: Connection): SMTPConnection => (connection as unknown as { [CONN]: SMTPConnection })[CONN];

/**
 * The extensions nodemailer parsed from EHLO. It keeps them in a field it marks internal;
 * reading it is the only way to learn them before sending (8BITMIME, SMTPUTF8, DSN).
 */
const extensionsOf = (conn: SMTPConnection): string[] => {
  const found = (conn as unknown as { _supportedExtensions?: unknown })._supportedExtensions;
  return Array.isArray(found) ? found.map(String) : [];
};

const openFailure = (error: SmtpError): OpenFailure => {
  const reply = error.response !== undefined ? parseReply(error.response) : undefined;
  // With a reply, the reply says why; the detail says where ("refused at the greeting").
  const detail = reply ? `refused at ${error.command === undefined || error.command === "CONN" ? "the greeting" : error.command}` : errorDetail(error);
  if (error.code === "ETLS" || error.code === "EREQUIRETLS") return withReply({ _tag: "TlsFailed", detail }, reply);
  if (error.code === "ETIMEDOUT") return { _tag: "Timeout", detail };
  // A greeting that is no 220 (nodemailer's EPROTOCOL with the response) is the host refusing us.
  if (error.code === "EPROTOCOL" && !reply) return { _tag: "ProtocolError", detail };
  return withReply({ _tag: "ConnectionFailed", detail }, reply);
};

/** "ECONNREFUSED: connect ECONNREFUSED 192.0.2.1:25": the system's code first, when there is one. */
const errorDetail = (error: SmtpError): string => `${error.originalCode ?? error.code ?? "ERROR"}: ${error.message}`;

const withReply = <F extends { readonly detail: string }>(failure: F, reply: Reply | undefined): F & { readonly reply?: Reply } =>
  reply ? { ...failure, reply } : failure;

/** Required TLS missing on some host explains more than the last host's refusal. */
export const asTlsFailure = (failure: OpenFailure): OpenFailure =>
  failure._tag === "TlsFailed" ? failure : { _tag: "TlsFailed", detail: `TLS required and not available on some MX host; the last one: ${failure.detail}`, ...("reply" in failure && failure.reply ? { reply: failure.reply } : {}) };

/** What a message's transactions on one connection came to. */
export interface Sent {
  readonly results: ReadonlyArray<RecipientAttempt>;
  /** The connection broke before the first MAIL FROM was answered: a reused connection gone stale, safe to retry elsewhere. */
  readonly stale: boolean;
  /** The connection can carry the next message. */
  readonly reusable: boolean;
}

/** Sends one message to its recipients over an open connection, in as many transactions as its DSN parameters and the recipient limit need. */
export const sendOver = async (connection: Connection, job: OutboundJob, options: OutboundOptions): Promise<Sent> => {
  const conn = rawOf(connection);
  if (job.mayStart?.() === false) return { results: everyone(job.recipients, { _tag: "OperatorHold" }), stale: false, reusable: true };
  const original = job.body();
  // Never an empty message in its place: the attempt fails before MAIL FROM, and is retried.
  if (original === undefined) return { results: everyone(job.recipients, { _tag: "Internal", detail: "the message body is gone from the spool" }), stale: false, reusable: true };
  const utf8 = !isAscii(job.sender) || job.recipients.some((r) => !isAscii(r));
  if (utf8 && !connection.extensions.has("SMTPUTF8")) {
    return { results: everyone(job.recipients, { _tag: "ConversionFailed", missing: "SMTPUTF8", detail: "UTF-8 addresses" }), stale: false, reusable: true };
  }
  let body = Buffer.from(original.buffer, original.byteOffset, original.byteLength);
  const eightBit = hasEightBit(body);
  if (eightBit && !connection.extensions.has("8BITMIME") && !utf8) {
    const converted = downgradeTo7bit(body);
    if (!converted.ok) return { results: everyone(job.recipients, { _tag: "ConversionFailed", missing: "8BITMIME", detail: converted.detail }), stale: false, reusable: true };
    body = converted.body;
  }
  if (options.foldLongLines) body = Buffer.from(foldLongLines(body));
  const results: RecipientAttempt[] = [];
  const groups = transactionsOf(job, options.maxRecipientsPerTransaction);
  // A transaction that ended in a 250 needs no RSET before the next MAIL (RFC 5321 §4.1.1.5); one refused part way does.
  let needsReset = false;
  for (const [n, group] of groups.entries()) {
    if (needsReset && !(await reset(conn))) return brokeOff(results, groups.slice(n), { _tag: "ConnectionFailed", detail: "connection lost between transactions" }, false);
    const outcome = await transaction(conn, group, job, body, eightBit);
    if ("broken" in outcome) return brokeOff(results, groups.slice(n), outcome.broken, n === 0 && connection.sent > 0 && outcome.beforeMail);
    results.push(...outcome.results);
    // 421: the host answered, and is closing the connection (RFC 5321 §3.8); the rest wait for next time.
    if (outcome.closing) return { results: [...results, ...everyone(groups.slice(n + 1).flatMap((g) => g.recipients), outcome.results[0]!.result)], stale: false, reusable: false };
    needsReset = outcome.refused === true;
  }
  connection.sent++;
  const reusable = !connection.closed() && connection.sent < options.messagesPerConnection;
  return { results, stale: false, reusable: reusable && (!needsReset || (await reset(conn))) };
};

const reset = (conn: SMTPConnection) => new Promise<boolean>((resolve) => conn.reset((error) => resolve(!error)));

const brokeOff = (done: RecipientAttempt[], rest: ReadonlyArray<Group>, failure: OpenFailure, stale: boolean): Sent => ({
  results: [...done, ...everyone(rest.flatMap((g) => g.recipients), failure)],
  stale,
  reusable: false,
});

interface Group {
  readonly recipients: ReadonlyArray<string>;
  readonly notify: string | undefined;
  readonly orcpt: string | undefined;
}

/**
 * Recipients that share NOTIFY and ORCPT go in one transaction (nodemailer sends one set
 * of RCPT parameters per transaction), up to the recipient limit. Without DSN parameters
 * (the usual case) that is one transaction for the whole message.
 */
const transactionsOf = (job: OutboundJob, limit: number): Group[] => {
  if (job.dsn.anyRecipientParams === false && job.recipients.length <= limit) return [{ recipients: job.recipients, notify: undefined, orcpt: undefined }];
  const byParams = new Map<string, { notify: string | undefined; orcpt: string | undefined; recipients: string[] }>();
  for (const recipient of job.recipients) {
    const params = job.dsn.recipient(recipient);
    const notify = params.notify?.join(",");
    const key = `${notify ?? ""}\u0000${params.orcpt ?? ""}`;
    const group = byParams.get(key) ?? { notify, orcpt: params.orcpt, recipients: [] };
    group.recipients.push(recipient);
    byParams.set(key, group);
  }
  return [...byParams.values()].flatMap((group) => {
    const chunks: Group[] = [];
    for (let i = 0; i < group.recipients.length; i += limit) chunks.push({ ...group, recipients: group.recipients.slice(i, i + limit) });
    return chunks;
  });
};

type TransactionOutcome =
  /** `refused`: the host refused the transaction part way (MAIL, every RCPT, DATA): RSET before the next one. */
  | { readonly results: RecipientAttempt[]; readonly closing?: boolean; readonly refused?: boolean }
  | { readonly broken: OpenFailure; readonly beforeMail: boolean };

const transaction = (conn: SMTPConnection, group: Group, job: OutboundJob, body: Buffer, eightBit: boolean): Promise<TransactionOutcome> =>
  new Promise((resolve) => {
    const dsn = {
      ...(job.dsn.ret ? { ret: job.dsn.ret } : {}),
      ...(job.dsn.envid ? { envid: job.dsn.envid } : {}),
      ...(group.notify ? { notify: group.notify } : {}),
      // Stored decoded (smtp-server decodes xtext); nodemailer encodes it again on the wire.
      ...(group.orcpt ? { orcpt: group.orcpt } : {}),
    };
    const envelope = {
      from: job.sender === "" ? false : job.sender,
      to: [...group.recipients],
      size: body.length,
      use8BitMime: eightBit,
      ...(Object.keys(dsn).length > 0 ? { dsn } : {}),
    } as const;
    // Cleared so that afterwards it tells whether the host answered anything at all.
    conn.lastServerResponse = false;
    conn.send(envelope as Parameters<SMTPConnection["send"]>[0], body, (error, info) => {
      if (!error) return resolve({ results: fromSuccess(group.recipients, info ?? { rejectedErrors: undefined, response: undefined }) });
      resolve(fromError(group.recipients, withRcptRefusals(conn, error as SmtpError), conn.lastServerResponse === false));
    });
  });

/**
 * A failure at DATA with the RCPT refusals of its transaction: nodemailer leaves them off
 * that error (it keeps them on its envelope), and a recipient the host refused at RCPT has
 * its own outcome, not the DATA reply (a 452 to RCPT must not bounce with a 554 to DATA).
 */
const withRcptRefusals = (conn: SMTPConnection, error: SmtpError): SmtpError => {
  if (error.command !== "DATA" || error.rejectedErrors !== undefined) return error;
  const refused = (conn as unknown as { readonly _envelope?: { readonly rejectedErrors?: SmtpError[] } })._envelope?.rejectedErrors;
  return refused && refused.length > 0 ? Object.assign(error, { rejectedErrors: refused }) : error;
};

/**
 * The host's reply to a command, parsed here once. When the text does not parse, the code
 * nodemailer acted on still decides (a message it reports sent is delivered, never retried
 * into a duplicate); without even that, it is a protocol error.
 */
const replyOf = (response: string | undefined, code: number | undefined, fallback: string): RecipientResult => {
  const text = response ?? fallback;
  const parsed = parseReply(text);
  if (parsed) return parsed;
  if (code !== undefined && code >= 200 && code < 600) return { _tag: "Reply", code, text: text.replace(/^\d+[ -]?/, "").replace(/\s*\r?\n\s*/g, " ").trim() };
  return { _tag: "ProtocolError", detail: `not an SMTP reply: ${JSON.stringify(text.slice(0, 200))}` };
};

/**
 * A host's reply to one RCPT. 552 there means too many recipients, which a client SHOULD
 * take as the temporary 452 (RFC 5321 §4.5.3.1.10, as Postfix does): an older host with a
 * lower recipient limit must not bounce the rest of a large transaction.
 */
const rcptReplyOf = (error: SmtpError): RecipientResult => {
  const reply = replyOf(error.response, error.responseCode, error.message);
  if (reply._tag !== "Reply" || reply.code !== 552) return reply;
  return { ...reply, code: 452, ...(reply.enhanced !== undefined ? { enhanced: `4${reply.enhanced.slice(1)}` } : {}) };
};

const fromSuccess = (
  recipients: ReadonlyArray<string>,
  info: { rejectedErrors?: SmtpError[] | undefined; response?: string | undefined },
): RecipientAttempt[] => {
  const rejected = new Map((info.rejectedErrors ?? []).map((e) => [e.recipient ?? "", e]));
  const accepted = replyOf(info.response, 250, "250");
  return recipients.map((recipient) => {
    const error = rejected.get(recipient);
    return { recipient, result: error ? rcptReplyOf(error) : accepted };
  });
};

const fromError = (recipients: ReadonlyArray<string>, error: SmtpError, unanswered: boolean): TransactionOutcome => {
  // The host answered: per-recipient replies when it refused RCPTs, else one reply for all.
  if (error.responseCode !== undefined && error.response) {
    const reply = replyOf(error.response, error.responseCode, error.message);
    if (error.responseCode === 421) return { results: [...everyone(recipients, reply)], closing: true };
    const perRecipient = new Map((error.rejectedErrors ?? []).map((e) => [e.recipient ?? "", e]));
    return {
      refused: true,
      results: recipients.map((recipient) => {
        const specific = perRecipient.get(recipient);
        return { recipient, result: specific ? rcptReplyOf(specific) : reply };
      }),
    };
  }
  // nodemailer refuses locally a message above the SIZE the host announced.
  if (error.code === "EMESSAGE" && error.command === "MAIL FROM") {
    return { results: [...everyone(recipients, { _tag: "TooLarge", detail: error.message })], refused: true };
  }
  // No reply to judge: the connection broke, timed out or the host spoke nonsense. Never delivered.
  const detail = errorDetail(error);
  const broken: OpenFailure =
    error.code === "ETIMEDOUT"
      ? { _tag: "Timeout", detail }
      : error.code === "EPROTOCOL"
        ? { _tag: "ProtocolError", detail }
        : error.code === "ETLS"
          ? { _tag: "TlsFailed", detail }
          : { _tag: "ConnectionFailed", detail };
  return { broken, beforeMail: unanswered };
};
