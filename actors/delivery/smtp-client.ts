// One delivery attempt of one queue entry to one site, with nodemailer's SMTP client.
// MX hosts (and their addresses) are tried in order while the trouble is reaching
// them; once a host answers, its replies decide each recipient's outcome.
import nodemailer, { type Transporter } from "nodemailer";
import type { MailRoute } from "../../protocol/route.ts";
import type { RecipientResult } from "../queue/entry.ts";

export interface OutboundOptions {
  readonly heloName: string;
  /** 25 in production; tests point it at a loopback sink. */
  readonly port: number;
  readonly connectTimeoutMs: number;
  readonly maxConnectionsPerHost: number;
}

export interface Attempt {
  readonly results: ReadonlyArray<RecipientResult>;
  /** The host and address that answered, or the last one tried. */
  readonly server: string;
}

interface SmtpError extends Error {
  code?: string;
  responseCode?: number;
  response?: string;
  recipient?: string;
  rejectedErrors?: SmtpError[];
}

/** A pool of nodemailer transports, one per remote address, reused across messages. */
export interface TransportPool {
  readonly send: (
    route: MailRoute,
    envelope: { sender: string; recipients: ReadonlyArray<string> },
    body: Uint8Array,
  ) => Promise<Attempt>;
  readonly close: () => void;
}

export const makeTransportPool = (options: OutboundOptions): TransportPool => {
  const transports = new Map<string, Transporter>();

  const transportFor = (address: string, hostName: string) => {
    const existing = transports.get(address);
    if (existing) return existing;
    const created = nodemailer.createTransport({
      host: address,
      port: options.port,
      name: options.heloName,
      secure: false,
      pool: true,
      maxConnections: options.maxConnectionsPerHost,
      maxMessages: 100,
      connectionTimeout: options.connectTimeoutMs,
      greetingTimeout: options.connectTimeoutMs,
      socketTimeout: 10 * 60_000, // RFC 5321 §4.5.3.2: 10 minutes for the final reply to DATA
      tls: { rejectUnauthorized: false, servername: hostName }, // opportunistic STARTTLS
      logger: false,
    });
    transports.set(address, created);
    return created;
  };

  const forget = (address: string) => {
    transports.get(address)?.close();
    transports.delete(address);
  };

  const send: TransportPool["send"] = async (route, envelope, body) => {
    let lastTrouble = "no MX host has an address";
    let lastServer = route.domain;
    for (const host of route.hosts) {
      for (const address of host.addresses) {
        lastServer = `${host.name}[${address}]`;
        try {
          const info = await transportFor(address, host.name).sendMail({
            envelope: { from: envelope.sender, to: [...envelope.recipients] },
            raw: Buffer.from(body.buffer, body.byteOffset, body.byteLength),
          });
          return { results: fromSuccess(envelope.recipients, info), server: lastServer };
        } catch (error) {
          const failure = error as SmtpError;
          if (failure.responseCode !== undefined) return { results: fromReplyError(envelope.recipients, failure), server: lastServer };
          // No reply to judge: connection refused, timeout, TLS, broken socket. Next address.
          forget(address);
          lastTrouble = `${failure.code ?? "ERROR"}: ${failure.message}`;
        }
      }
    }
    return { results: envelope.recipients.map((recipient) => ({ recipient, status: "deferred", reply: lastTrouble })), server: lastServer };
  };

  return { send, close: () => [...transports.keys()].forEach(forget) };
};

const statusOf = (code: number | undefined): "deferred" | "failed" =>
  code !== undefined && code >= 500 && code < 600 ? "failed" : "deferred";

const fromSuccess = (
  recipients: ReadonlyArray<string>,
  info: { rejectedErrors?: SmtpError[] | undefined; response?: string | undefined },
): RecipientResult[] => {
  const rejected = new Map((info.rejectedErrors ?? []).map((e) => [e.recipient ?? "", e]));
  return recipients.map((recipient) => {
    const error = rejected.get(recipient);
    return error
      ? { recipient, status: statusOf(error.responseCode), reply: error.response ?? error.message }
      : { recipient, status: "delivered", reply: info.response ?? "250" };
  });
};

/** The server answered with an error: per-recipient replies when it rejected RCPTs, else one reply for all. */
const fromReplyError = (recipients: ReadonlyArray<string>, error: SmtpError): RecipientResult[] => {
  const perRecipient = new Map((error.rejectedErrors ?? []).map((e) => [e.recipient ?? "", e]));
  return recipients.map((recipient) => {
    const specific = perRecipient.get(recipient) ?? error;
    return { recipient, status: statusOf(specific.responseCode), reply: specific.response ?? specific.message };
  });
};
