// The session actor: one per SMTP connection, on `smtp-server`, for MX traffic and
// authenticated submission. Listeners: plain SMTP with STARTTLS, and implicit TLS
// (the 465 role). A message is answered 250 only after the spool committed its
// body, record and queue entries with fsync; the 250 text carries the queue id.
// Mail from an authenticated user or a trusted network is DKIM-signed on its way into
// the spool (actors/dkim/signer.ts), once: retries send the stored, signed bytes.
// Mail from everyone else (the MX role) is authenticated on its way in (SPF, DKIM, ARC,
// DMARC: actors/authentication/), and stored with an Authentication-Results field on top;
// the recipient domain's policy may refuse a DMARC failure at DATA or file it as junk.
// Authentication-Results fields that claim this node's authserv-id are removed from MX mail
// and from what users submit (RFC 8601 §5), not from what trusted networks relay.
// Reports that come back (bounces to VERP addresses, feedback reports to feedback-loop
// addresses) are recognised at RCPT, one per transaction, and handed to the feedback
// intake instead of the spool (actors/feedback/intake.ts, ./report.ts).
import { SMTPServer, type SMTPServerAddress, type SMTPServerAuthentication, type SMTPServerDataStream, type SMTPServerSession } from "smtp-server";
import { Cause, Clock, Deferred, Effect, Exit, Schema } from "effect";
import "./enhanced-codes.ts";
import "./reply-batching.ts";
import { finishSigning, type DkimSigner, type DkimSigning } from "../dkim/signer.ts";
import type { InboundAuthenticator, Verification } from "../authentication/authenticator.ts";
import { authenticationResultsField, withoutClaimedResults } from "../authentication/headers.ts";
import { dmarcAction, QUARANTINE_FOLDER, refusalReply, type DmarcAction, type InboundPolicy } from "../authentication/policy.ts";
import type { Verdict } from "../authentication/verdict.ts";
import { domainOf, withAsciiDomain } from "../common/domains.ts";
import { inNetworks } from "../common/networks.ts";
import type { UserStore } from "../users/store.ts";
import type { QueueEntry } from "../queue/entry.ts";
import { newMessageId, routesFor } from "../queue/entry.ts";
import type { BodyWriter, Spool } from "../queue/spool.ts";
import { acceptedEvents, type EventSource } from "../queue/events.ts";
import { makeConnectionCap, type ConnectionCap, type ConnectionEvent } from "../runtime/connection-cap.ts";
import { waitDelay, type LoginThrottle } from "../users/login-throttle.ts";
import type { ClientGuard } from "./guard.ts";
import { missingSubmissionHeaders, printable, receivedHeader, submissionMessageId } from "./headers.ts";
import { ingest, type BareLineEndings, type IngestProblem } from "./ingest.ts";
import { MAX_LINE_OCTETS, type LongLines } from "../delivery/long-lines.ts";
import { decideRecipient, decideSender, type ClientFacts, type Decision, type RecipientPolicy } from "./policy.ts";
import { headerValue, type PoolInputs } from "../delivery/pools.ts";
import type { SuppressionCheck } from "../suppression/check.ts";
import { suppressedReply } from "../../protocol/suppression.ts";
import type { FeedbackIntake, FeedbackTarget } from "../feedback/intake.ts";
import type { OutboundMarks } from "../feedback/marks.ts";
import { MAX_REPORT_BYTES, memoryBody, reportReply } from "./report.ts";
import type { Log, LogFields } from "../../protocol/log.ts";

export interface SessionConfig extends RecipientPolicy {
  readonly hostname: string;
  readonly maxMessageBytes: number;
  readonly maxRecipients: number;
  /** Refused commands tolerated per connection before 421 and close. */
  readonly maxErrors: number;
  readonly bareLineEndings: BareLineEndings;
  /** "reject": a line over 998 octets refuses the message at DATA; "encode": accepted, re-encoded before it is relayed. */
  readonly longLines: LongLines;
  readonly accept8bitWithoutBodyParameter: boolean;
  /** AUTH only after STARTTLS (or on the implicit-TLS listener). */
  readonly authRequiresTls: boolean;
  readonly idleTimeoutMs: number;
}

export interface SessionHooks {
  readonly accepted: (messageId: string, entries: ReadonlyArray<QueueEntry>, bytes: number) => void;
  readonly rejected: (reason: string) => void;
  readonly log: Log;
  /** Once per message authenticated (refused or not), with what its DMARC result made the node do. */
  readonly authenticated?: ((verdict: Verdict, action: DmarcAction) => void) | undefined;
  /** Authentication-Results fields claiming this node's authserv-id, removed from one message. */
  readonly claimedResultsRemoved?: ((count: number) => void) | undefined;
  /** Sessions opened, ended and refused at the overall cap, per listener (for metrics). */
  readonly connections?: ((listener: SmtpListenerName, event: ConnectionEvent) => void) | undefined;
}

/** `smtp`: plain with STARTTLS; `smtps`: implicit TLS (the 465 role). */
export type SmtpListenerName = "smtp" | "smtps";

export interface SessionDeps {
  readonly config: SessionConfig;
  /** Runs a session's Effect with the node's services (its Clock among them); smtp-server's callbacks are the edge. */
  readonly run: <A, E>(effect: Effect.Effect<A, E>) => Promise<A>;
  readonly spool: Spool;
  /** Who records the "accepted" events committed with each message. */
  readonly events: EventSource;
  readonly users: UserStore;
  readonly guard: ClientGuard;
  /** Failed-login limits and the per-account delay, shared in part with POP3. */
  readonly throttle: LoginThrottle;
  readonly tls: { readonly key: Buffer; readonly cert: Buffer };
  /** Signs what authenticated users and trusted networks send (undefined: no DKIM keys configured). */
  readonly dkim?: DkimSigner | undefined;
  /** Authenticates what everyone else sends (undefined: nothing is checked, no field is added or removed). */
  readonly inbound?: InboundAuthenticator | undefined;
  /** False while the spool cannot commit: new connections get 421. */
  readonly spoolHealthy: () => boolean;
  readonly spoolFailed: () => void;
  /**
   * True while the node drains (`tern node drain`): new connections, MAIL and the end of
   * DATA get 421 4.3.2, so clients take their mail to another node.
   */
  readonly draining?: (() => boolean) | undefined;
  /** The IP pool a message leaves from (actors/delivery/pools.ts); none when absent. */
  readonly choosePool?: ((inputs: PoolInputs) => string | undefined) | undefined;
  /** The suppression list, checked at RCPT TO for clients we relay for (authenticated or trusted); none: no check. */
  readonly suppression?: SuppressionCheck | undefined;
  /** Takes bounces and feedback reports (none: every address is ordinary mail). */
  readonly feedback?: FeedbackIntake | undefined;
  /** What outbound mail gets for feedback to find it later (none: nothing). */
  readonly marks?: OutboundMarks | undefined;
  readonly hooks: SessionHooks;
}


export interface SmtpListeners {
  readonly ports: { readonly smtp: number; readonly smtps: number };
  /**
   * Stops accepting; open sessions may finish their transaction (10 s at most). A DATA still
   * being received then is cut short, and close resolves once its partial body is discarded.
   */
  readonly close: () => Promise<void>;
}

/** Per-connection state kept beside smtp-server's session. */
interface Connection {
  /** Holds a place under the listener's overall cap. */
  admitted: boolean;
  /** Counted by the per-IP guard. */
  counted: boolean;
  errors: number;
  /** Envelope recipient → where it is delivered (differs for catch-all). */
  deliverTo: Map<string, string>;
  /** The inbound DMARC policy of this transaction's recipients (one per transaction); undefined when not authenticated. */
  inboundPolicy: InboundPolicy | undefined;
  /** Set when this transaction carries a report (its one recipient is a feedback address). */
  report: FeedbackTarget | undefined;
  /** Completed when the socket closes: an AUTH waiting out its delay ends then. */
  readonly left: Deferred.Deferred<void>;
  /** Set when the socket closed. */
  closed: boolean;
  /** When the client connected (performance.now(): a duration for the log, not a timer). */
  readonly openedAt: number;
  /** Messages accepted and refusals answered, for the connection's last line. */
  accepted: number;
  rejections: number;
  /** The DATA transaction under way, until its reply is decided. */
  receiving: Promise<void> | undefined;
}

const newConnection = (): Connection => ({
  admitted: false,
  counted: false,
  errors: 0,
  deliverTo: new Map(),
  inboundPolicy: undefined,
  report: undefined,
  left: Deferred.makeUnsafe(),
  closed: false,
  openedAt: performance.now(),
  accepted: 0,
  rejections: 0,
  receiving: undefined,
});

const replyError = (code: number, text: string) => Object.assign(new Error(text), { responseCode: code });

/** What a draining node answers (RFC 3463 4.3.2: system not accepting network messages); 421 closes the connection. */
const drainingReply = (hostname: string) => ({ code: 421, text: `4.3.2 ${hostname} is draining, try another server` });

const problemReplies: Record<IngestProblem, { code: number; text: string }> = {
  "bare-line-ending": { code: 550, text: "5.6.11 Bare CR or LF in message data is not allowed" },
  nul: { code: 554, text: "5.6.0 NUL characters are not allowed in message data" },
  "8bit-without-8bitmime": { code: 554, text: "5.6.1 8-bit message data requires BODY=8BITMIME" },
  "too-large": { code: 552, text: "5.3.4 Message exceeds the maximum size" },
  "line-too-long": { code: 550, text: "5.6.0 Message has a line longer than 998 octets (RFC 5321 section 4.5.3.1.6); encode it (quoted-printable or base64)" },
  "header-too-large": { code: 552, text: "5.3.4 Message header section exceeds the maximum size" },
};

export const startSmtpListeners = async (options: {
  host: string;
  ports: { smtp: number; smtps: number };
  /**
   * Open sessions allowed on each listener, all clients together (unset: no overall cap).
   * Each listener has its own, so a flood on the MX port cannot lock out implicit-TLS submission.
   */
  maxConnections?: { smtp: number; smtps: number };
  deps: SessionDeps;
}): Promise<SmtpListeners> => {
  const { deps } = options;
  const connections = new WeakMap<SMTPServerSession, Connection>();
  const connectionOf = (session: SMTPServerSession) => {
    let connection = connections.get(session);
    if (!connection) connections.set(session, (connection = newConnection()));
    return connection;
  };
  const capOf = (listener: SmtpListenerName) =>
    makeConnectionCap({
      max: options.maxConnections?.[listener] ?? Infinity,
      observe: (event) => deps.hooks.connections?.(listener, event),
      onFull: (open) => deps.hooks.log("smtp.connections.full", { listener, open }),
    });
  const receiving: Receiving = new Map();
  const handlers = (listener: SmtpListenerName) => makeHandlers(deps, listener, connectionOf, capOf(listener), receiving);
  const common = {
    name: deps.config.hostname,
    banner: "Tern ESMTP",
    size: deps.config.maxMessageBytes,
    maxRecipients: deps.config.maxRecipients,
    hideENHANCEDSTATUSCODES: false,
    hideDSN: false,
    authMethods: ["PLAIN", "LOGIN"],
    authOptional: true,
    allowInsecureAuth: !deps.config.authRequiresTls,
    disabledCommands: [] as string[],
    socketTimeout: deps.config.idleTimeoutMs,
    closeTimeout: 10_000,
    disableReverseLookup: true, // PTR lookups belong to the resolver and must not block a session
    logger: false,
    key: deps.tls.key,
    cert: deps.tls.cert,
  };
  const plain = new SMTPServer({ ...common, ...handlers("smtp"), secure: false });
  const implicit = new SMTPServer({ ...common, ...handlers("smtps"), secure: true });
  for (const server of [plain, implicit]) server.on("error", (error: Error & { code?: string; remoteAddress?: string }) => deps.hooks.log("smtp.error", errorFields(error)));
  const listen = (server: SMTPServer, port: number) =>
    new Promise<number>((resolve, reject) => {
      server.once("error", reject);
      server.listen(port, options.host, () => {
        const address = server.server.address();
        resolve(typeof address === "object" && address ? address.port : port);
      });
    });
  const ports = { smtp: await listen(plain, options.ports.smtp), smtps: await listen(implicit, options.ports.smtps) };
  return {
    ports,
    close: async () => {
      await Promise.all([plain, implicit].map((server) => new Promise<void>((done) => server.close(() => done()))));
      // smtp-server answers 421 at the end of the grace period but only half-closes the
      // socket, so a body still arriving would end after the spool closed: end it here.
      for (const stream of receiving.keys()) {
        if (!stream.destroyed && !stream.readableEnded) stream.destroy(stream.listenerCount("error") > 0 ? new Error("the node is stopping") : undefined);
      }
      await Promise.all(receiving.values());
    },
  };
};

/**
 * A connection's error as a log line. A client that resets, times out or fails its TLS
 * handshake (scanners do, all day) is ordinary traffic: info. Anything else is an error.
 */
const errorFields = (error: Error & { code?: string; remoteAddress?: string }): LogFields => {
  const ordinary = error.code !== undefined && (CLIENT_NETWORK_ERRORS.has(error.code) || error.code.startsWith("ERR_SSL_"));
  return { level: ordinary ? "info" : "error", client: error.remoteAddress, error: error.message, ...(error.code !== undefined ? { errorCode: error.code } : {}) };
};

const CLIENT_NETWORK_ERRORS = new Set(["ECONNRESET", "EPIPE", "ETIMEDOUT", "ECONNABORTED", "EHOSTUNREACH", "ENETUNREACH"]);

type Callback = (error?: Error | null) => void;

/** DATA transactions under way, each until its reply is decided (committed, refused or aborted). */
type Receiving = Map<SMTPServerDataStream, Promise<void>>;

/** Where in the conversation a client was refused. */
type Stage = "connect" | "mail" | "rcpt" | "data";

const ENHANCED_CODE = /^([245]\.\d{1,3}\.\d{1,3}) /;

/** A reply's fields on a log line: the code, the enhanced code (as `dsn`) and the whole reply. */
const replyFields = (reply: { readonly code: number; readonly text: string }) => {
  const enhanced = ENHANCED_CODE.exec(reply.text)?.[1];
  return { code: reply.code, ...(enhanced !== undefined ? { dsn: enhanced } : {}), reply: `${reply.code} ${reply.text}` };
};

/**
 * smtp-server turns every "xn--" domain into Unicode. Without SMTPUTF8 the client sent an
 * ASCII address, so its domain goes back to the A-label it was: it needs no SMTPUTF8, and
 * DNS wants that form anyway. The address object is the one smtp-server keeps in the envelope.
 */
const asSent = (address: SMTPServerAddress, session: SMTPServerSession) => {
  if (session.envelope.smtpUtf8 !== true) address.address = withAsciiDomain(address.address);
};

const makeHandlers = (deps: SessionDeps, listener: SmtpListenerName, connectionOf: (session: SMTPServerSession) => Connection, cap: ConnectionCap, receiving: Receiving) => {
  const { config, hooks, guard } = deps;

  const facts = (session: SMTPServerSession): ClientFacts => ({
    remoteAddress: session.remoteAddress,
    user: typeof session.user === "string" ? session.user : undefined,
    smtpUtf8: session.envelope.smtpUtf8 === true,
  });

  /**
   * Every refusal of the session goes through here: counted by reason, logged with its
   * stage, reply and what the client had said so far, then answered.
   */
  const reject = (session: SMTPServerSession, stage: Stage, reason: string, reply: { readonly code: number; readonly text: string }, callback: Callback, fields: LogFields = {}) => {
    hooks.rejected(reason);
    connectionOf(session).rejections++;
    const sender = session.envelope.mailFrom === false ? undefined : session.envelope.mailFrom.address;
    hooks.log("smtp.rejected", {
      conn: session.id,
      client: session.remoteAddress,
      stage,
      reason,
      ...replyFields(reply),
      ...(typeof session.user === "string" ? { user: session.user } : {}),
      ...(sender !== undefined && stage !== "mail" ? { sender } : {}),
      ...fields,
    });
    callback(replyError(reply.code, reply.text));
  };

  /** Refuses with the decision's reply; too many refusals end the connection (421). */
  const refuse = (session: SMTPServerSession, stage: Stage, decision: Extract<Decision, { ok: false }>, callback: Callback, fields: LogFields = {}) => {
    const connection = connectionOf(session);
    connection.errors++;
    if (connection.errors > config.maxErrors) {
      hooks.rejected(decision.reason);
      return reject(session, stage, "too-many-errors", { code: 421, text: "4.7.0 Too many errors, closing connection" }, callback, { ...fields, last: decision.reason });
    }
    reject(session, stage, decision.reason, decision.reply, callback, fields);
  };

  /**
   * The reply for a recipient on the suppression list, when the client is one we relay for
   * (authenticated, or on a trusted network): submission, not inbound mail. The list is
   * about mail leaving the cluster: a local domain's recipient is never refused. Not
   * counted against maxErrors: a list's refusal is no misbehaviour of the client.
   */
  const suppressedRecipient = (session: SMTPServerSession, recipient: string) => {
    const check = deps.suppression;
    if (check === undefined || (typeof session.user !== "string" && !inNetworks(session.remoteAddress, config.trustedNetworks))) return undefined;
    if (config.localDomains.includes(domainOf(recipient))) return undefined;
    const sender = session.envelope.mailFrom === false ? "" : session.envelope.mailFrom.address;
    const match = check.lookup(sender, recipient);
    if (match === undefined) return undefined;
    check.refused({ where: "smtp", sender, recipient, match, conn: session.id });
    return suppressedReply(match);
  };

  return {
    onConnect(session: SMTPServerSession, callback: Callback) {
      connectionOf(session);
      hooks.log("connection.opened", { protocol: "smtp", listener, conn: session.id, client: session.remoteAddress, tls: session.secure });
      if (deps.draining?.()) return reject(session, "connect", "draining", drainingReply(config.hostname), callback);
      if (!deps.spoolHealthy()) return reject(session, "connect", "spool-unhealthy", { code: 421, text: "4.3.2 Service temporarily unavailable, try again later" }, callback);
      // Checked before the per-IP guard: a client refused here must not use up its IP's places.
      if (!cap.admit()) return reject(session, "connect", "connection-cap", { code: 421, text: `4.7.0 ${config.hostname} too many connections, try again later` }, callback);
      connectionOf(session).admitted = true;
      if (!guard.connect(session.remoteAddress)) {
        return reject(session, "connect", "too-many-connections", { code: 421, text: "4.7.0 Too many connections from your address, try again later" }, callback);
      }
      connectionOf(session).counted = true;
      // AUTH is not even offered before TLS unless configured (RFC 4954 §4: no plaintext passwords).
      if (config.authRequiresTls && !session.secure) session.disabledCommands = ["AUTH"];
      callback();
    },

    onSecure(_socket: unknown, session: SMTPServerSession, callback: Callback) {
      session.disabledCommands = [];
      callback();
    },

    onClose(session: SMTPServerSession) {
      const connection = connectionOf(session);
      connection.closed = true;
      Deferred.doneUnsafe(connection.left, Effect.void);
      if (connection.counted) guard.disconnect(session.remoteAddress);
      if (connection.admitted) cap.release();
      // A client may hang up while its last message commits: the line waits for that outcome.
      const closed = () =>
        hooks.log("connection.closed", {
          protocol: "smtp",
          listener,
          conn: session.id,
          client: session.remoteAddress,
          durationMs: Math.round(performance.now() - connection.openedAt),
          tls: session.secure,
          accepted: connection.accepted,
          rejections: connection.rejections,
          ...(typeof session.user === "string" ? { user: session.user } : {}),
        });
      void Promise.resolve(connection.receiving).then(closed, closed);
    },

    onAuth(auth: SMTPServerAuthentication, session: SMTPServerSession, callback: (error: Error | null | undefined, response?: { user: string }) => void) {
      // Not inside a transaction (RFC 4954 §4): the sender was checked at MAIL against who was
      // logged in then, and a login now would let its RCPTs relay under a sender never checked.
      if (session.envelope.mailFrom) return callback(replyError(503, "5.5.1 AUTH not permitted during a mail transaction"));
      deps.run(authenticate(deps, auth.username ?? "", auth.password ?? "", session, connectionOf(session).left)).then(
        (outcome) => (outcome.ok ? callback(null, { user: outcome.user }) : callback(replyError(outcome.code, outcome.text))),
        (defect) => {
          hooks.log("session.auth.crashed", { level: "error", conn: session.id, client: session.remoteAddress, error: String(defect) });
          callback(replyError(454, "4.7.0 Temporary authentication failure"));
        },
      );
    },

    onMailFrom(address: SMTPServerAddress, session: SMTPServerSession, callback: Callback) {
      asSent(address, session);
      connectionOf(session).deliverTo = new Map();
      connectionOf(session).inboundPolicy = undefined;
      connectionOf(session).report = undefined;
      const fields = { sender: address.address };
      if (deps.draining?.()) return reject(session, "mail", "draining", drainingReply(config.hostname), callback, fields);
      if (!guard.message(session.remoteAddress)) {
        return refuse(session, "mail", { ok: false, reply: { code: 450, text: "4.7.1 Message rate limit exceeded, slow down" }, reason: "rate-limited" }, callback, fields);
      }
      const decision = decideSender(address.address, facts(session), deps.users.mayUseSender);
      if (!decision.ok) return refuse(session, "mail", decision, callback, fields);
      callback();
    },

    onRcptTo(address: SMTPServerAddress, session: SMTPServerSession, callback: Callback) {
      asSent(address, session);
      const connection = connectionOf(session);
      const fields = { recipient: address.address };
      const feedback = deps.feedback?.addressOf(address.address);
      if (feedback?._tag === "Forged") {
        deps.feedback!.refused(address.address, feedback.reason, { conn: session.id, client: session.remoteAddress });
        return refuse(session, "rcpt", { ok: false, reply: { code: 550, text: "5.1.1 No such user here" }, reason: "feedback-token" }, callback, fields);
      }
      // A report is read, not stored: it travels alone (RFC 5321 §4.5.3.1.10: the client sends the rest in another transaction).
      const alone = () => reject(session, "rcpt", "report-alone", { code: 452, text: "4.5.3 Too many recipients: a report goes alone, send the others in another transaction" }, callback, fields);
      if (feedback?._tag === "Report") {
        if (connection.deliverTo.size > 0 || connection.report) return alone();
        connection.report = feedback.target;
        return callback();
      }
      if (connection.report) return alone();
      // postmaster@<bounce domain> goes where bare postmaster does.
      const { decision, deliverTo } = decideRecipient(feedback?._tag === "Postmaster" ? "postmaster" : address.address, facts(session), config);
      if (!decision.ok) return refuse(session, "rcpt", decision, callback, fields);
      const suppressed = suppressedRecipient(session, address.address);
      if (suppressed) return reject(session, "rcpt", "suppressed", suppressed, callback, fields);
      // One DATA reply answers every recipient, so one transaction has one inbound policy: a
      // recipient whose domain has another waits for the next transaction (RFC 5321 §4.5.3.1.10).
      const policy = authenticates(deps, session) ? deps.inbound!.policyFor(domainOf(address.address.includes("@") ? address.address : deliverTo)) : undefined;
      if (policy !== undefined && connection.inboundPolicy !== undefined && policy !== connection.inboundPolicy) {
        return reject(session, "rcpt", "inbound-policy-split", { code: 452, text: "4.5.3 Recipients of another inbound policy: send this one in a separate transaction" }, callback, fields);
      }
      connection.inboundPolicy ??= policy;
      connection.deliverTo.set(address.address, deliverTo);
      callback();
    },

    onData(stream: SMTPServerDataStream, session: SMTPServerSession, callback: (error?: Error | null, message?: string) => void) {
      const connection = connectionOf(session);
      const transaction = connection.report && deps.feedback ? receiveReport(deps, deps.feedback, session, connection.report, stream) : receive(deps, session, connection, stream);
      const txn = `${session.id}.${session.transaction}`;
      const crashed = (cause: Cause.Cause<unknown>) => {
        failed(session, connection, stream, txn, cause);
        callback(replyError(451, "4.3.0 Temporary failure, try again later"));
      };
      const done = deps.run(Effect.exit(transaction)).then((exit) => {
        if (Exit.isFailure(exit)) return crashed(exit.cause);
        const outcome = exit.value;
        if (outcome._tag === "Queued") {
          connection.accepted++;
          return callback(null, outcome.text);
        }
        if (outcome._tag === "Refused") return reject(session, "data", outcome.reason, outcome, callback, { txn, ...outcome.fields });
        // The client left in the middle of DATA (logged where it was seen): nobody reads this reply.
        hooks.rejected("data-aborted");
        callback(replyError(421, "4.4.2 Connection dropped during DATA"));
      }, (error: unknown) => crashed(Cause.die(error)));
      receiving.set(stream, done);
      connection.receiving = done;
      void done.finally(() => receiving.delete(stream));
    },
  };

  /**
   * A transaction that ended in neither a reply nor a client's departure. When the client
   * is gone by then (it hung up, the node stops), that departure is what ended it: an
   * ordinary event, logged as an aborted DATA. Anything else is a bug in the session and is
   * logged as an error, with the whole cause.
   */
  const failed = (session: SMTPServerSession, connection: Connection, stream: SMTPServerDataStream, txn: string, cause: Cause.Cause<unknown>) => {
    const interrupted = Cause.hasInterruptsOnly(cause);
    if (interrupted || connection.closed || (stream.destroyed && !stream.readableEnded)) {
      hooks.rejected("data-aborted");
      const error = interrupted ? "interrupted" : Cause.squash(cause);
      return hooks.log("session.data.aborted", { conn: session.id, txn, client: session.remoteAddress, error: error instanceof Error ? error.message : String(error) });
    }
    hooks.log("session.data.crashed", { level: "error", conn: session.id, txn, client: session.remoteAddress, error: Cause.pretty(cause) });
  };
};

type AuthOutcome = { readonly ok: true; readonly user: string } | { readonly ok: false; readonly code: number; readonly text: string };

/**
 * One AUTH attempt: refused outright over a per-IP or per-(account, IP) limit; otherwise
 * counted as failed at once and answered after the account's delay (zero unless it has
 * failed often lately, from any IP), whether the password is right or not, so the wait
 * tells a guesser nothing. A client that hangs up during the delay gets no password check.
 */
const authenticate = Effect.fnUntraced(function* (deps: SessionDeps, login: string, password: string, session: SMTPServerSession, left: Deferred.Deferred<void>) {
  const { throttle, hooks } = deps;
  // One shape for the three protocols' login lines (protocol, conn, client, user), so one filter reads them all.
  const who = { protocol: "smtp", conn: session.id, client: session.remoteAddress } as const;
  const attempt = throttle.check(login, session.remoteAddress);
  if (attempt._tag === "Refused") {
    hooks.rejected("auth-rate-limited");
    const reply = { code: 454, text: "4.7.0 Too many failed authentication attempts, try again later" };
    hooks.log("auth.throttled", { ...who, user: attempt.account, limit: attempt.limit, ...replyFields(reply) });
    return { ok: false, ...reply } satisfies AuthOutcome;
  }
  if (attempt.delayMs > 0) hooks.log("auth.delayed", { ...who, user: attempt.account, delayMs: attempt.delayMs });
  if ((yield* waitDelay(attempt, Deferred.await(left))) === "client-left") {
    hooks.rejected("auth-abandoned");
    hooks.log("auth.abandoned", { ...who, user: attempt.account });
    // Nobody reads this reply: the connection is closed.
    return { ok: false, code: 421, text: "4.4.2 Connection closed during authentication" } satisfies AuthOutcome;
  }
  const user = yield* Effect.promise(() => deps.users.verify(login, password));
  if (user !== undefined) {
    throttle.succeeded(attempt);
    hooks.log("auth.succeeded", { ...who, user, tls: session.secure });
    return { ok: true, user } satisfies AuthOutcome;
  }
  hooks.rejected("auth-failed");
  const reply = { code: 535, text: "5.7.8 Authentication credentials invalid" };
  hooks.log("auth.failed", { ...who, user: login, ...replyFields(reply) });
  return { ok: false, ...reply } satisfies AuthOutcome;
});

/**
 * How a DATA transaction ends: queued (250), refused (a reply, with the reason it is counted
 * and logged under), or the client gone before the end (nobody reads a reply).
 */
type DataOutcome =
  | { readonly _tag: "Queued"; readonly text: string }
  | { readonly _tag: "Refused"; readonly reason: string; readonly code: number; readonly text: string; readonly fields: LogFields }
  | { readonly _tag: "Gone" };
const queued = (text: string): DataOutcome => ({ _tag: "Queued", text });
const refused = (reason: string, reply: { readonly code: number; readonly text: string }, fields: LogFields = {}): DataOutcome => ({ _tag: "Refused", reason, code: reply.code, text: reply.text, fields });
const gone: DataOutcome = { _tag: "Gone" };

/** The client went away before the end of DATA (disconnect, socket error, idle timeout). */
class DataAborted extends Schema.TaggedError<DataAborted>()("DataAborted", {
  detail: Schema.String,
}) {}

/**
 * Streams DATA into the spool and commits it: the whole life of one accepted message.
 * Every way it can end without a commit (refused, client gone mid-DATA, commit failed,
 * a defect) discards the partial body at once; after a commit the discard does nothing.
 * Untraced: it runs once per message, on the hot path.
 */
const receive = Effect.fnUntraced(function* (deps: SessionDeps, session: SMTPServerSession, connection: Connection, stream: SMTPServerDataStream) {
  const receivedAt = yield* Clock.currentTimeMillis;
  const id = newMessageId(receivedAt);
  const sender = session.envelope.mailFrom === false ? "" : session.envelope.mailFrom.address;
  return yield* Effect.acquireUseRelease(
    Effect.sync(() => {
      const body = deps.spool.openBody(id);
      const signing = signs(deps, session) ? deps.dkim?.start(body, { envelopeSender: sender, at: receivedAt }) : undefined;
      const verification = authenticates(deps, session) ? deps.inbound!.start({ ip: session.remoteAddress, helo: printable(session.hostNameAppearsAs), sender }) : undefined;
      return { body, signing, verification };
    }),
    ({ body, signing, verification }) =>
      receiveInto(deps, session, connection, stream, { id, receivedAt, body, signing, verification }).pipe(
        Effect.catchTag("DataAborted", (aborted) =>
          Effect.sync(() => {
            deps.hooks.log("session.data.aborted", { conn: session.id, txn: `${session.id}.${session.transaction}`, client: session.remoteAddress, queueId: id, size: body.size(), error: aborted.detail });
            return gone;
          }),
        ),
      ),
    ({ body, signing, verification }) =>
      Effect.sync(() => {
        verification?.abandon();
        (signing?.body ?? body).discard();
      }),
  );
});

/**
 * Mail that leaves from here as ours: what an authenticated user submits or a trusted
 * network relays, never what arrives as an MX from elsewhere. It is DKIM-signed (as a
 * submission server or outbound relay signs) and gets feedback's marks.
 */
const isOutbound = (deps: SessionDeps, session: SMTPServerSession) =>
  typeof session.user === "string" || inNetworks(session.remoteAddress, deps.config.trustedNetworks);

const signs = (deps: SessionDeps, session: SMTPServerSession) => deps.dkim !== undefined && isOutbound(deps, session);

/** Some recipient of the transaction is on another host: only such mail can come back as a report. */
const leavesForAnotherHost = (deps: SessionDeps, connection: Connection) => [...connection.deliverTo.values()].some((address) => !deps.users.exists(address));

/**
 * Whose mail is authenticated: exactly the mail that is never signed, what arrives as an MX
 * (no AUTH, not from a trusted network). Its recipients are all in local domains (anything
 * else is relaying, refused at RCPT). Submitted and relayed mail is the node's own: it is
 * signed instead, and carries no Authentication-Results field of this node.
 */
const authenticates = (deps: SessionDeps, session: SMTPServerSession) =>
  deps.inbound !== undefined && typeof session.user !== "string" && !inNetworks(session.remoteAddress, deps.config.trustedNetworks);

/**
 * Whose Authentication-Results fields naming this node are removed: everyone's outside the
 * node's domain of trust (RFC 8601 §5), so MX mail, and what users submit (a user is no
 * authority on authentication). A trusted network's relay is inside it: an internal filter
 * there may have written the field with the same authserv-id.
 */
const removesClaimedResults = (deps: SessionDeps, session: SMTPServerSession) =>
  deps.inbound !== undefined && (typeof session.user === "string" || !inNetworks(session.remoteAddress, deps.config.trustedNetworks));

const receiveInto = Effect.fnUntraced(function* (
  deps: SessionDeps,
  session: SMTPServerSession,
  connection: Connection,
  stream: SMTPServerDataStream,
  message: {
    readonly id: string;
    readonly receivedAt: number;
    readonly body: BodyWriter;
    readonly signing: DkimSigning | undefined;
    readonly verification: Verification | undefined;
  },
) {
  const { config, hooks } = deps;
  const { id, receivedAt, body, signing, verification } = message;
  const user = typeof session.user === "string" ? session.user : undefined;
  // Once each: smtp-server keeps a repeated RCPT once, but compares it as it decoded it (see asSent).
  const recipients = [...new Set(session.envelope.rcptTo.map((r) => r.address))];
  // Kept for the pool rules that read a header.
  let headerSection = "";
  const result = yield* Effect.tryPromise({
    try: () =>
      ingest(stream, signing?.body ?? body, {
        bareLineEndings: config.bareLineEndings,
        maxLineOctets: config.longLines === "reject" ? MAX_LINE_OCTETS : undefined,
        allow8bit: config.accept8bitWithoutBodyParameter || session.envelope.bodyType === "8bitmime",
        observe: verification?.write,
        maxHeaderBytes: verification ? deps.inbound?.maxHeaderBytes : undefined,
        rewriteHeader: removesClaimedResults(deps, session) ? (section) => withoutClaimedResultsOf(deps, session, id, section) : undefined,
        prepend: (section) => {
          headerSection = section;
          return receivedHeader({
            hostname: config.hostname,
            helo: session.hostNameAppearsAs,
            clientHostname: session.clientHostname,
            remoteAddress: session.remoteAddress,
            secure: session.secure,
            authenticated: user !== undefined,
            id,
            recipients,
            at: receivedAt,
          }) +
            (deps.marks !== undefined && isOutbound(deps, session) && leavesForAnotherHost(deps, connection) ? deps.marks.headers(id) : "") +
            (user !== undefined ? missingSubmissionHeaders(section, { id, hostname: config.hostname, at: receivedAt }) : "");
        },
      }),
    catch: (error) => new DataAborted({ detail: error instanceof Error ? error.message : String(error) }),
  });
  if (result.problem) return refused(result.problem, problemReplies[result.problem], { queueId: id });
  const sender = session.envelope.mailFrom === false ? "" : session.envelope.mailFrom.address;
  const inbound = verification ? yield* concludeAuthentication(deps, connection, verification) : undefined;
  if (inbound?.action === "refuse") {
    return refused("dmarc-reject", refusalReply(inbound.verdict.dmarc), { queueId: id, fromDomain: inbound.verdict.dmarc.domain, auth: summaryOf(inbound.verdict) });
  }
  // RFC 8601 §5: on top of the message, above the trace fields; in the stored bytes, so every reader sees it.
  if (inbound) body.prepend(Buffer.from(authenticationResultsField(deps.inbound!.authservId, inbound.verdict.rows), "utf8"));
  const deliverTo = recipients.map((r) => connection.deliverTo.get(r) ?? r);
  // A transaction that began before the drain is not committed after it: the drain ends once nothing is queued.
  if (deps.draining?.()) return refused("draining", drainingReply(config.hostname), { queueId: id });
  const signed = yield* finishSigning(signing);
  if (signed?._tag === "Failed") hooks.log("dkim.failed", { level: "warn", conn: session.id, queueId: id, domain: signed.domain, error: signed.detail });
  const pool = deps.choosePool?.({ sender, user, header: (name) => headerValue(headerSection, name) });
  const attributes = {
    ...attributesOf(session, user),
    ...(pool !== undefined ? { pool } : {}),
    ...(inbound?.action === "quarantine" ? { folder: QUARANTINE_FOLDER } : {}),
  };
  const routes = routesFor(deliverTo, deps.users.exists, { onePerRemoteRecipient: deps.marks?.onePerRemoteRecipient === true });
  const newMessage = { id, sender, receivedAt, body, routes, attributes };
  const committed = yield* Effect.result(deps.spool.accept(newMessage, acceptedEvents(deps.events, newMessage, body.size(), yield* Clock.currentTimeMillis)));
  if (committed._tag === "Failure") {
    deps.spoolFailed();
    hooks.log("spool.commit.failed", { level: "error", conn: session.id, queueId: id, error: committed.failure.detail });
    return refused("spool-failed", { code: 451, text: "4.3.0 Temporary storage failure, try again later" }, { queueId: id });
  }
  hooks.accepted(id, committed.success, body.size());
  hooks.log("message.accepted", {
    conn: session.id,
    txn: `${session.id}.${session.transaction}`,
    client: session.remoteAddress,
    queueId: id,
    messageId: headerValue(headerSection, "message-id") ?? (user !== undefined ? submissionMessageId(id, config.hostname) : undefined),
    sender,
    recipients,
    size: body.size(),
    user,
    tls: session.secure,
    ...(signed?._tag === "Signed" ? { dkim: `${signed.domain} (${signed.selectors.join(", ")})` } : {}),
    ...(inbound ? { auth: summaryOf(inbound.verdict), ...(inbound.action === "quarantine" ? { quarantined: true } : {}) } : {}),
  });
  return queued(`2.0.0 Ok: queued as ${id}`);
});

/** The header section without Authentication-Results fields claiming this node's authserv-id (counted and logged). */
const withoutClaimedResultsOf = (deps: SessionDeps, session: SMTPServerSession, id: string, section: string): string => {
  const cleaned = withoutClaimedResults(section, deps.inbound!.authservId);
  if (cleaned.removed > 0) {
    deps.hooks.claimedResultsRemoved?.(cleaned.removed);
    deps.hooks.log("inbound.claimed-results.removed", { conn: session.id, queueId: id, fields: cleaned.removed, authservId: deps.inbound!.authservId });
  }
  return cleaned.section;
};

/** The verdict of a message that arrived whole, and what the transaction's inbound policy makes of it. */
const concludeAuthentication = Effect.fnUntraced(function* (deps: SessionDeps, connection: Connection, verification: Verification) {
  const verdict = yield* verification.finish;
  const action = dmarcAction(verdict.dmarc, connection.inboundPolicy ?? "none");
  deps.hooks.authenticated?.(verdict, action);
  return { verdict, action };
});

/** One line for the logs: "spf=pass dkim=pass,fail arc=none dmarc=pass". */
const summaryOf = (verdict: Verdict): string =>
  `spf=${verdict.spf} dkim=${verdict.dkim.join(",")} arc=${verdict.arc} dmarc=${verdict.dmarc.result}`;

/**
 * A report's DATA: read into memory with the same checks as any message, then handed to
 * the feedback intake, which answers once its events are on disk (or says to try later).
 */
const receiveReport = Effect.fnUntraced(function* (
  deps: SessionDeps,
  feedback: FeedbackIntake,
  session: SMTPServerSession,
  target: FeedbackTarget,
  stream: SMTPServerDataStream,
) {
  const { config, hooks } = deps;
  const body = memoryBody(MAX_REPORT_BYTES);
  const result = yield* Effect.tryPromise({
    try: () => ingest(stream, body, { bareLineEndings: config.bareLineEndings, allow8bit: true, prepend: () => "" }),
    catch: (error) => new DataAborted({ detail: error instanceof Error ? error.message : String(error) }),
  }).pipe(Effect.result);
  if (result._tag === "Failure") {
    hooks.log("session.data.aborted", { conn: session.id, txn: `${session.id}.${session.transaction}`, client: session.remoteAddress, size: body.size(), error: result.failure.detail });
    return gone;
  }
  if (result.success.problem) return refused(result.success.problem, problemReplies[result.success.problem]);
  const sender = session.envelope.mailFrom === false ? "" : session.envelope.mailFrom.address;
  const reply = reportReply(yield* feedback.process(target, body.bytes(), { conn: session.id, client: session.remoteAddress, sender }));
  return reply.ok ? queued(reply.text) : refused("report-refused", reply);
});

/** DSN parameters (RFC 3461) and who submitted it, kept with the message for later DSNs. */
const attributesOf = (session: SMTPServerSession, user: string | undefined) => ({
  ...(user !== undefined ? { user } : {}),
  ...(session.envelope.dsn && (session.envelope.dsn.ret || session.envelope.dsn.envid) ? { dsn: session.envelope.dsn } : {}),
  ...(session.envelope.rcptTo.some((r) => r.dsn)
    ? { recipientDsn: Object.fromEntries(session.envelope.rcptTo.filter((r) => r.dsn).map((r) => [r.address, r.dsn])) }
    : {}),
  client: { address: session.remoteAddress, helo: session.hostNameAppearsAs, secure: session.secure },
});
