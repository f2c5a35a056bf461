// The floor peer's process (bench/lib/peers/floor.ts): the least a relay built on Tern's
// own SMTP libraries can cost. smtp-server takes each message into memory and answers 250
// at once; nodemailer's SMTPConnection sends it to the sink over a few reused connections.
// No disk, no DNS, no events, no logs, no metrics: not an MTA (a crash loses everything
// queued), only what the two libraries cost per message, used plainly.
//   argv[2]: {"port": P, "sinkPort": S, "connections": N}
import { SMTPServer } from "smtp-server";
import { bareServerOptions } from "./lib/bare-smtp.ts";
import SMTPConnection from "nodemailer/lib/smtp-connection";

interface FloorOptions {
  readonly port: number;
  readonly sinkPort: number;
  readonly connections: number;
}

interface Job {
  readonly from: string;
  readonly to: string[];
  readonly body: Buffer;
}

const options = JSON.parse(process.argv[2] ?? "{}") as FloorOptions;
const queue: Job[] = [];
const idle: Array<() => void> = [];

const enqueue = (job: Job) => {
  queue.push(job);
  idle.shift()?.();
};

const next = (): Promise<Job> => {
  const job = queue.shift();
  if (job) return Promise.resolve(job);
  return new Promise((resolve) => idle.push(() => resolve(queue.shift()!)));
};

const connect = () =>
  new Promise<SMTPConnection>((resolve, reject) => {
    const conn = new SMTPConnection({ host: "127.0.0.1", port: options.sinkPort, name: "floor.localhost", ignoreTLS: true, logger: false });
    conn.once("error", reject);
    conn.connect(() => resolve(conn));
  });

const send = (conn: SMTPConnection, job: Job) =>
  new Promise<void>((resolve, reject) => conn.send({ from: job.from, to: job.to }, job.body, (error) => (error ? reject(error) : resolve())));

/** One outbound connection: sends what is queued, one message after another; a failed message goes back to the queue. */
const sender = async () => {
  for (;;) {
    let conn: SMTPConnection | undefined;
    try {
      conn = await connect();
      for (;;) {
        const job = await next();
        await send(conn, job).catch((error: unknown) => {
          enqueue(job);
          throw error;
        });
      }
    } catch {
      conn?.close();
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }
};

const server = new SMTPServer({
  ...bareServerOptions,
  onData(stream, session, callback) {
    const chunks: Buffer[] = [];
    stream.on("data", (chunk: Buffer) => chunks.push(chunk));
    stream.on("end", () => {
      const from = session.envelope.mailFrom === false ? "" : session.envelope.mailFrom.address;
      enqueue({ from, to: session.envelope.rcptTo.map((r) => r.address), body: Buffer.concat(chunks) });
      callback();
    });
  },
});
server.on("error", () => undefined);
server.listen(options.port, "127.0.0.1");
for (let n = 0; n < options.connections; n++) void sender();
