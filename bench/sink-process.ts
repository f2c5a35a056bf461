// The benchmark's SMTP sink, run as a child process: drains each message, answers 250
// (or a scripted delay / 4xx / 5xx), and reports arrivals (bench Message-ID, time) to
// the parent over IPC in batches. With `record: false` it is the bare smtp-server
// baseline: drain and answer 250, nothing else.
import { SMTPServer } from "smtp-server";
import { bareServerOptions } from "./lib/bare-smtp.ts";
import type { SinkCommand, SinkOptions, SinkReport } from "./lib/sink.ts";
import { benchIdIn } from "./lib/load.ts";

const options = JSON.parse(process.argv[2] ?? "{}") as SinkOptions;
let pending: Array<[string, number]> = [];
let transactions = 0;

const report = (message: SinkReport) => process.send?.(message);

const scriptedReply = (): Error | undefined => {
  transactions++;
  if (options.tempfailEvery && transactions % options.tempfailEvery === 0) {
    return Object.assign(new Error("4.3.0 bench sink says try later"), { responseCode: 451 });
  }
  if (options.permfailEvery && transactions % options.permfailEvery === 0) {
    return Object.assign(new Error("5.7.1 bench sink refuses"), { responseCode: 550 });
  }
  return undefined;
};

const server = new SMTPServer({
  ...bareServerOptions,
  onData(stream, _session, callback) {
    let head = "";
    stream.on("data", (chunk: Buffer) => {
      if (options.record && head.length < 4096) head += chunk.toString("latin1", 0, Math.min(chunk.length, 4096));
    });
    stream.on("end", () => {
      const finish = () => {
        const refusal = scriptedReply();
        if (refusal) return callback(refusal);
        if (options.record) {
          const id = benchIdIn(head);
          if (id) pending.push([id, Date.now()]);
        }
        callback();
      };
      if (options.delayMs) setTimeout(finish, options.delayMs);
      else finish();
    });
  },
});

// A client that dies mid-transaction (the kill scenario's kill -9) resets its socket;
// smtp-server reports that as an 'error' event, which must not take the sink down.
server.on("error", () => undefined);

const listen = () =>
  server.listen(options.port, "127.0.0.1", () => {
    const address = server.server.address();
    report({ type: "listening", port: typeof address === "object" && address ? address.port : options.port });
  });

setInterval(() => {
  if (pending.length === 0) return;
  report({ type: "arrivals", items: pending });
  pending = [];
}, 50).unref();

process.on("message", (command: SinkCommand) => {
  if (command.type === "open") listen();
  if (command.type === "flush") {
    report({ type: "arrivals", items: pending });
    pending = [];
    report({ type: "flushed" });
  }
});
process.on("disconnect", () => process.exit(0));

if (!options.startClosed) listen();
else report({ type: "listening", port: options.port });
