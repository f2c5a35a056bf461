// The SMTP load driver: many connections, reused or not, closed-loop (as fast as the
// server answers) or open-loop (a fixed rate), bounded by a message count and a time.
// Every message carries a unique Message-ID so arrivals can be matched to 250s.
import { SmtpConnection } from "./smtp-client.ts";

export interface SizeRange {
  readonly min: number;
  readonly max: number;
}

export interface LoadOptions {
  readonly targets: ReadonlyArray<{ readonly host: string; readonly port: number }>;
  readonly connections: number;
  readonly reuse: boolean;
  readonly messages: number;
  readonly durationMs: number;
  /** Messages per second across all connections; undefined = closed loop. */
  readonly rate: number | undefined;
  readonly size: SizeRange;
  readonly recipients: number;
  readonly recipientDomain: string;
  /** Distinct recipient local parts to cycle through (so local scenarios hit a few mailboxes). */
  readonly recipientUsers: number;
  readonly runId: string;
}

export interface SendRecord {
  readonly id: string;
  readonly startedAt: number;
  readonly acceptedAt: number | undefined;
  readonly acceptLatencyMs: number | undefined;
  readonly code: number;
  readonly queueId: string | undefined;
}

export interface LoadResult {
  readonly records: ReadonlyArray<SendRecord>;
  readonly startedAt: number;
  readonly endedAt: number;
  readonly connectionErrors: number;
}

const FILLER_LINE = "The quick brown fox jumps over the lazy dog, again and again, for Tern benchmarks.\r\n";

const messageIdFor = (runId: string, n: number) => `${runId}.${n}@bench.tern`;

/** Extracts the bench Message-ID from a raw message (null when absent). */
export const benchIdIn = (raw: string): string | null => /\r\nMessage-ID: <([^>]+@bench\.tern)>/i.exec(raw)?.[1] ?? null;

const buildMessage = (options: LoadOptions, n: number, to: ReadonlyArray<string>, filler: string): Buffer => {
  const size = options.size.min + Math.floor(Math.random() * (options.size.max - options.size.min + 1));
  const headers =
    `From: bench@load.tern\r\nTo: ${to.join(", ")}\r\nSubject: bench ${n}\r\n` +
    `Message-ID: <${messageIdFor(options.runId, n)}>\r\nDate: ${new Date().toUTCString()}\r\n\r\n`;
  const bodyLength = Math.max(0, size - headers.length);
  const whole = Math.floor(bodyLength / FILLER_LINE.length) * FILLER_LINE.length;
  return Buffer.from(headers + filler.slice(0, Math.max(whole, FILLER_LINE.length)), "latin1");
};

export const runLoad = async (options: LoadOptions): Promise<LoadResult> => {
  const filler = FILLER_LINE.repeat(Math.ceil(options.size.max / FILLER_LINE.length) + 1);
  const records: SendRecord[] = [];
  const startedAt = Date.now();
  const deadline = startedAt + options.durationMs;
  let next = 0;
  let connectionErrors = 0;

  const claim = () => (next < options.messages && Date.now() < deadline ? next++ : undefined);

  const worker = async (w: number) => {
    const target = options.targets[w % options.targets.length]!;
    let connection: SmtpConnection | undefined;
    for (let n = claim(); n !== undefined; n = claim()) {
      if (options.rate !== undefined) {
        const due = startedAt + (n * 1000) / options.rate;
        if (due > Date.now()) await new Promise((resolve) => setTimeout(resolve, due - Date.now()));
      }
      const to = Array.from({ length: options.recipients }, (_, i) => `u${(n * options.recipients + i) % options.recipientUsers}@${options.recipientDomain}`);
      const id = messageIdFor(options.runId, n);
      const sentAt = Date.now();
      try {
        connection ??= await SmtpConnection.open(target.host, target.port, "load.tern");
        const { reply, latencyMs } = await connection.send("bench@load.tern", to, buildMessage(options, n, to, filler));
        const accepted = reply.code === 250;
        records.push({
          id,
          startedAt: sentAt,
          acceptedAt: accepted ? Date.now() : undefined,
          acceptLatencyMs: accepted ? latencyMs : undefined,
          code: reply.code,
          queueId: /queued as ([0-9A-Z]+)/.exec(reply.text)?.[1],
        });
        if (!options.reuse) {
          await connection.quit();
          connection = undefined;
        }
      } catch {
        // The server went away (or refused): this message got no 250, so it is not owed.
        connectionErrors++;
        records.push({ id, startedAt: sentAt, acceptedAt: undefined, acceptLatencyMs: undefined, code: 0, queueId: undefined });
        connection?.destroy();
        connection = undefined;
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    }
    await connection?.quit();
  };

  await Promise.all(Array.from({ length: options.connections }, (_, w) => worker(w)));
  return { records, startedAt, endedAt: Date.now(), connectionErrors };
};
