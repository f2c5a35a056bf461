// A loopback SMTP sink for delivery tests, on smtp-server: records each transaction's
// envelope and exact bytes, and answers with scripted replies when asked to.
import { SMTPServer, type SMTPServerSession } from "smtp-server";

export interface ReceivedMail {
  readonly from: string;
  readonly to: ReadonlyArray<string>;
  readonly body: Buffer;
}

export interface SinkScript {
  /** Reply code for a RCPT TO, or undefined to accept. */
  readonly rcpt?: (address: string) => { code: number; text: string } | undefined;
  /** Reply code after DATA, or undefined to accept. */
  readonly data?: (mail: ReceivedMail) => { code: number; text: string } | undefined;
}

export interface Sink {
  readonly port: number;
  readonly received: ReceivedMail[];
  readonly close: () => Promise<void>;
}

const replyError = (code: number, text: string) => Object.assign(new Error(text), { responseCode: code });

/** `host` may be any loopback address ("127.0.0.2", "::1"): tests tell MX targets apart by address. */
export const startSink = (port = 0, script: SinkScript = {}, host = "127.0.0.1"): Promise<Sink> => {
  const received: ReceivedMail[] = [];
  const server = new SMTPServer({
    authOptional: true,
    disabledCommands: ["AUTH", "STARTTLS"],
    disableReverseLookup: true,
    closeTimeout: 500, // do not wait for clients' pooled connections when a test ends
    logger: false,
    onRcptTo: (address, _session, callback) => {
      const scripted = script.rcpt?.(address.address);
      callback(scripted ? replyError(scripted.code, scripted.text) : undefined);
    },
    onData: (stream, session: SMTPServerSession, callback) => {
      const chunks: Buffer[] = [];
      stream.on("data", (chunk: Buffer) => chunks.push(chunk));
      stream.on("end", () => {
        const mail: ReceivedMail = {
          from: session.envelope.mailFrom === false ? "" : session.envelope.mailFrom.address,
          to: session.envelope.rcptTo.map((r) => r.address),
          body: Buffer.concat(chunks),
        };
        const scripted = script.data?.(mail);
        if (scripted) return callback(replyError(scripted.code, scripted.text));
        received.push(mail);
        callback();
      });
    },
  });
  // A Tern node killed mid-transaction resets its sockets; smtp-server reports that as an
  // 'error' event, which must not crash the test process.
  server.on("error", () => undefined);
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => {
      const address = server.server.address();
      resolve({
        port: typeof address === "object" && address ? address.port : port,
        received,
        close: () => new Promise<void>((done) => server.close(() => done())),
      });
    });
  });
};
