// The load drivers: many concurrent senders, closed-loop (as fast as the server answers)
// or open-loop (a fixed rate), bounded by a message count and a time. The loop, the
// pacing, the message bytes and the records are shared here; a driver only says how one
// sender hands a message over (a `Channel`): SMTP below, the NATS API in api-load.ts.
// Every message carries a unique Message-ID so arrivals can be matched to accepts.
import { SmtpConnection } from "./smtp-client.ts";

export interface SizeRange {
  readonly min: number;
  readonly max: number;
}

/** What every driver takes: how much to send, how fast, how big, to whom. */
export interface LoadOptions {
  /** Concurrent senders (SMTP connections, or NATS requests in flight). */
  readonly connections: number;
  readonly messages: number;
  readonly durationMs: number;
  /** Messages per second across all senders; undefined = closed loop. */
  readonly rate: number | undefined;
  readonly size: SizeRange;
  readonly recipients: number;
  readonly recipientDomain: string;
  /** Distinct recipient local parts to cycle through (so local scenarios hit a few mailboxes). */
  readonly recipientUsers: number;
  readonly runId: string;
}

export interface SmtpLoadOptions extends LoadOptions {
  readonly targets: ReadonlyArray<{ readonly host: string; readonly port: number }>;
  readonly reuse: boolean;
}

export interface SendRecord {
  readonly id: string;
  readonly startedAt: number;
  readonly acceptedAt: number | undefined;
  /** Time to the reply that committed the message (only when accepted). */
  readonly acceptLatencyMs: number | undefined;
  /** accepted: a 250 or a submit reply (the run owes it to the sink); refused: a typed no; failed: no answer. */
  readonly outcome: "accepted" | "refused" | "failed";
  /** The reply as the server gave it ("250 2.0.0 queued as …", "Busy: …"), or the transport error. */
  readonly reply: string;
  readonly queueId: string | undefined;
}

export interface LoadResult {
  readonly records: ReadonlyArray<SendRecord>;
  readonly startedAt: number;
  readonly endedAt: number;
  readonly connectionErrors: number;
}

/** The answer to one message that the server did answer. */
export interface SendOutcome {
  readonly accepted: boolean;
  readonly latencyMs: number;
  readonly reply: string;
  readonly queueId: string | undefined;
}

/**
 * One sender's way to the server. `send` rejects when the transport broke (the message got
 * no answer, so it is not owed); the loop then destroys the channel and opens a new one.
 */
export interface Channel {
  readonly send: (from: string, to: ReadonlyArray<string>, message: Buffer) => Promise<SendOutcome>;
  /** Ends the channel politely after a message when connections are not reused, and at the end. */
  readonly close: () => Promise<void>;
  readonly destroy: () => void;
}

export const BENCH_SENDER = "bench@load.tern";

const FILLER_LINE = "The quick brown fox jumps over the lazy dog, again and again, for Tern benchmarks.\r\n";

const messageIdFor = (runId: string, n: number) => `${runId}.${n}@bench.tern`;

/** Extracts the bench Message-ID from a raw message (null when absent). */
export const benchIdIn = (raw: string): string | null => /\r\nMessage-ID: <([^>]+@bench\.tern)>/i.exec(raw)?.[1] ?? null;

/** RFC 5322 bytes ending in CRLF with no line starting with a dot: valid as SMTP DATA as is. */
const buildMessage = (options: LoadOptions, n: number, to: ReadonlyArray<string>, filler: string): Buffer => {
  const size = options.size.min + Math.floor(Math.random() * (options.size.max - options.size.min + 1));
  const headers =
    `From: ${BENCH_SENDER}\r\nTo: ${to.join(", ")}\r\nSubject: bench ${n}\r\n` +
    `Message-ID: <${messageIdFor(options.runId, n)}>\r\nDate: ${new Date().toUTCString()}\r\n\r\n`;
  const bodyLength = Math.max(0, size - headers.length);
  const whole = Math.floor(bodyLength / FILLER_LINE.length) * FILLER_LINE.length;
  return Buffer.from(headers + filler.slice(0, Math.max(whole, FILLER_LINE.length)), "latin1");
};

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Runs `options.connections` senders until the messages or the time run out. `open(w)` gives
 * sender w a channel; `reuse` keeps it for the next message.
 */
export const driveLoad = async (options: LoadOptions, open: (worker: number) => Promise<Channel>, reuse: boolean): Promise<LoadResult> => {
  const filler = FILLER_LINE.repeat(Math.ceil(options.size.max / FILLER_LINE.length) + 1);
  const records: SendRecord[] = [];
  const startedAt = Date.now();
  const deadline = startedAt + options.durationMs;
  let next = 0;
  let connectionErrors = 0;

  const claim = () => (next < options.messages && Date.now() < deadline ? next++ : undefined);

  const worker = async (w: number) => {
    let channel: Channel | undefined;
    for (let n = claim(); n !== undefined; n = claim()) {
      if (options.rate !== undefined) {
        const due = startedAt + (n * 1000) / options.rate;
        if (due > Date.now()) await sleep(due - Date.now());
      }
      const to = Array.from({ length: options.recipients }, (_, i) => `u${(n * options.recipients + i) % options.recipientUsers}@${options.recipientDomain}`);
      const id = messageIdFor(options.runId, n);
      const sentAt = Date.now();
      try {
        channel ??= await open(w);
        const outcome = await channel.send(BENCH_SENDER, to, buildMessage(options, n, to, filler));
        records.push({
          id,
          startedAt: sentAt,
          acceptedAt: outcome.accepted ? Date.now() : undefined,
          acceptLatencyMs: outcome.accepted ? outcome.latencyMs : undefined,
          outcome: outcome.accepted ? "accepted" : "refused",
          reply: outcome.reply,
          queueId: outcome.queueId,
        });
        if (!reuse) {
          await channel.close();
          channel = undefined;
        }
      } catch (error) {
        // The server went away (or never answered): this message got no accept, so it is not owed.
        connectionErrors++;
        const reply = error instanceof Error ? error.message : String(error);
        records.push({ id, startedAt: sentAt, acceptedAt: undefined, acceptLatencyMs: undefined, outcome: "failed", reply, queueId: undefined });
        channel?.destroy();
        channel = undefined;
        await sleep(100);
      }
    }
    await channel?.close();
  };

  await Promise.all(Array.from({ length: options.connections }, (_, w) => worker(w)));
  return { records, startedAt, endedAt: Date.now(), connectionErrors };
};

/** An SMTP connection as a channel: the latency runs from the final "." to the reply. */
const smtpChannel = async (target: { host: string; port: number }): Promise<Channel> => {
  const connection = await SmtpConnection.open(target.host, target.port, "load.tern");
  return {
    send: async (from, to, message) => {
      const { reply, latencyMs } = await connection.send(from, to, message);
      return { accepted: reply.code === 250, latencyMs, reply: `${reply.code} ${reply.text}`, queueId: /queued as ([0-9A-Z]+)/.exec(reply.text)?.[1] };
    },
    close: () => connection.quit(),
    destroy: () => connection.destroy(),
  };
};

/** The SMTP driver: sender w talks to target w mod targets. */
export const runLoad = (options: SmtpLoadOptions): Promise<LoadResult> =>
  driveLoad(options, (w) => smtpChannel(options.targets[w % options.targets.length]!), options.reuse);
