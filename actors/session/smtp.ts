// The session actor: one per SMTP connection, on `smtp-server`.
// Accepts mail for local users from anyone and relays for trusted networks only
// (no open relay); answers 250 only after the spool committed the message and its
// queue entries (with fsync). The 250 text carries the queue id.
import { Effect } from "effect";
import { SMTPServer, type SMTPServerAddress, type SMTPServerDataStream, type SMTPServerSession } from "smtp-server";
import { domainOf, inNetworks } from "../../nodes/config.ts";
import type { QueueEntry, Route } from "../queue/entry.ts";
import { newMessageId } from "../queue/entry.ts";
import type { Spool } from "../queue/spool.ts";

export interface SessionPolicy {
  readonly hostname: string;
  readonly localDomains: ReadonlyArray<string>;
  readonly isLocalUser: (address: string) => boolean;
  readonly trustedNetworks: ReadonlyArray<string>;
  readonly maxMessageBytes: number;
  readonly maxRecipients: number;
}

export interface SessionHooks {
  readonly accepted: (messageId: string, entries: ReadonlyArray<QueueEntry>, bytes: number) => void;
  readonly rejected: (reason: string) => void;
  readonly log: (event: string, fields: Record<string, unknown>) => void;
}

export interface SmtpListener {
  readonly port: number;
  /** Stops accepting connections and waits for open sessions to end (or closes them after a grace time). */
  readonly close: () => Promise<void>;
}

/** An SMTP reply as smtp-server expects it: an Error carrying the reply code. */
const reply = (code: number, text: string) => Object.assign(new Error(text), { responseCode: code });

export const startSmtpListener = (
  options: { host: string; port: number; policy: SessionPolicy; spool: Spool; hooks: SessionHooks },
): Promise<SmtpListener> => {
  const { policy, spool, hooks } = options;

  const onRcptTo = (address: SMTPServerAddress, session: SMTPServerSession, callback: (error?: Error | null) => void) => {
    const rcpt = address.address;
    const domain = domainOf(rcpt);
    if (session.envelope.rcptTo.length >= policy.maxRecipients) {
      hooks.rejected("too-many-recipients");
      return callback(reply(452, "4.5.3 Too many recipients"));
    }
    if (policy.localDomains.includes(domain)) {
      if (policy.isLocalUser(rcpt)) return callback();
      hooks.rejected("unknown-user");
      return callback(reply(550, "5.1.1 No such user here"));
    }
    if (inNetworks(session.remoteAddress, policy.trustedNetworks)) return callback();
    hooks.rejected("relay-denied");
    return callback(reply(554, "5.7.1 Relay access denied"));
  };

  const onData = (stream: SMTPServerDataStream, session: SMTPServerSession, callback: (error?: Error | null, message?: string) => void) => {
    const chunks: Buffer[] = [];
    stream.on("data", (chunk: Buffer) => chunks.push(chunk));
    stream.on("error", (error) => callback(reply(451, `4.3.0 Error reading message: ${error.message}`)));
    stream.on("end", () => {
      if (stream.sizeExceeded) {
        hooks.rejected("message-too-large");
        return callback(reply(552, "5.3.4 Message exceeds the maximum size"));
      }
      const receivedAt = Date.now();
      const id = newMessageId(receivedAt);
      const body = Buffer.concat([receivedHeader(policy.hostname, session, id, receivedAt), ...chunks]);
      const sender = session.envelope.mailFrom === false ? "" : session.envelope.mailFrom.address;
      const recipients = session.envelope.rcptTo.map((r) => r.address);
      const commit = spool.accept({ id, sender, receivedAt, body, routes: routesFor(recipients, policy) });
      Effect.runPromise(Effect.result(commit)).then(
        (result) => {
          if (result._tag === "Failure") {
            hooks.log("spool.commit.failed", { conn: session.id, msg: id, error: result.failure.detail });
            return callback(reply(451, "4.3.0 Temporary storage failure, try again later"));
          }
          hooks.accepted(id, result.success, body.length);
          hooks.log("message.accepted", { conn: session.id, msg: id, from: sender, rcpts: recipients.length, bytes: body.length });
          callback(null, `2.0.0 Ok: queued as ${id}`);
        },
        (defect) => {
          hooks.log("spool.commit.crashed", { conn: session.id, msg: id, error: String(defect) });
          callback(reply(451, "4.3.0 Temporary failure, try again later"));
        },
      );
    });
  };

  const server = new SMTPServer({
    name: policy.hostname,
    banner: "Tern ESMTP",
    size: policy.maxMessageBytes,
    authOptional: true,
    disabledCommands: ["AUTH", "STARTTLS"],
    logger: false,
    disableReverseLookup: true, // PTR lookups belong to the resolver (and must not block a session)
    onRcptTo,
    onData,
  });
  server.on("error", (error) => hooks.log("smtp.error", { error: error.message }));

  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(options.port, options.host, () => {
      const address = server.server.address();
      resolve({
        port: typeof address === "object" && address ? address.port : options.port,
        close: () => new Promise<void>((done) => server.close(() => done())),
      });
    });
  });
};

/** One queue entry per local user (each mailbox is its own next hop) and one per remote domain. */
export const routesFor = (
  recipients: ReadonlyArray<string>,
  policy: Pick<SessionPolicy, "isLocalUser">,
): Array<{ route: Route; recipients: string[] }> => {
  const byKey = new Map<string, { route: Route; recipients: string[] }>();
  for (const recipient of recipients) {
    const local = policy.isLocalUser(recipient);
    const route: Route = local ? { kind: "local", user: recipient.toLowerCase() } : { kind: "remote", domain: domainOf(recipient) };
    const key = route.kind === "local" ? `local:${route.user}` : `remote:${route.domain}`;
    const group = byKey.get(key) ?? { route, recipients: [] };
    if (!group.recipients.includes(recipient)) group.recipients.push(recipient);
    byKey.set(key, group);
  }
  return [...byKey.values()];
};

/** RFC 5321 §4.4: every relay prepends a trace header. */
const receivedHeader = (hostname: string, session: SMTPServerSession, id: string, at: number) => {
  const helo = session.hostNameAppearsAs || "unknown";
  const client = session.clientHostname && !session.clientHostname.startsWith("[") ? `${session.clientHostname} ` : "";
  const date = new Date(at).toUTCString().replace("GMT", "+0000");
  return Buffer.from(
    `Received: from ${helo} (${client}[${session.remoteAddress}])\r\n\tby ${hostname} (Tern) with ESMTP id ${id};\r\n\t${date}\r\n`,
  );
};
