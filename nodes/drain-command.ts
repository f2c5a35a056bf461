// `tern node drain ID`: asks node ID over NATS to drain (nodes/services/drain.ts), then
// follows its progress, printing each change, until its queue is empty and it stopped.
import { parseArgs } from "node:util";
import { Effect, Exit, Schema } from "effect";
import { createInbox } from "@nats-io/transport-node";
import { callEndpoint } from "../actors/runtime/remote.ts";
import { DrainProgress, type DrainRequest } from "../protocol/drain.ts";
import { decodeFrame } from "../protocol/wire.ts";
import { isSafeToken, makeSubjects } from "../protocol/subjects.ts";
import { loadConfig } from "./config.ts";
import { connectAsOperator } from "./operator-connection.ts";
import type { Output } from "./queue-command.ts";
import { drainEndpoint } from "./services/drain.ts";

const drainUsage = `usage: tern node drain [--config FILE] [--json] [--timeout MS] [--every MS] NODE_ID
Drains node NODE_ID: it stops taking mail (SMTP 421 4.3.2, API Unavailable, /readyz not
ready, its member record says draining), lets the deliveries in flight finish, hands every
queued message to live, ready peers (each committed on the peer before it is removed
here), and stops (exit 0) once its queue is empty. With no peer to take mail it waits.
Prints what moved until the node stopped. Exit status: 0 drained and stopped, 1 the node
stopped answering before its queue was empty, 2 bad usage, 69 the node did not answer,
75 --timeout passed (the drain goes on).`;

export const runDrain = (args: string[]): Promise<number> => drainCommand(args, { out: (t) => console.log(t), err: (t) => console.error(t) });

const ASK_TIMEOUT_MS = 5_000;
/** After "finished", how long the node may take to stop answering. */
const STOP_WAIT_MS = 60_000;

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

const drainCommand = async (args: string[], io: Output): Promise<number> => {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: {
      config: { type: "string", short: "c" },
      json: { type: "boolean" },
      timeout: { type: "string" },
      every: { type: "string" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) {
    io.out(drainUsage);
    return 0;
  }
  const [nodeId, ...extra] = positionals;
  const timeoutMs = values.timeout === undefined ? Infinity : Number(values.timeout);
  const everyMs = values.every === undefined ? 1_000 : Number(values.every);
  const misuse =
    nodeId === undefined || extra.length > 0
      ? "name one node to drain"
      : !isSafeToken(nodeId)
        ? `${JSON.stringify(nodeId)} is not a node id`
        : !(timeoutMs > 0) || !(everyMs > 0)
          ? "--timeout and --every take milliseconds"
          : undefined;
  if (misuse !== undefined) {
    io.err(`tern: ${misuse}\n${drainUsage}`);
    return 2;
  }
  const config = await loadConfig(values.config, process.env);
  const subject = makeSubjects(config.cluster).nodeDrain(nodeId!);
  const nc = await connectAsOperator(config, "tern-drain");
  const ask = (request: DrainRequest) => Effect.runPromise(Effect.result(callEndpoint(nc, subject, drainEndpoint, request, { timeoutMs: ASK_TIMEOUT_MS })));
  const show = (progress: DrainProgress) => io.out(values.json ? JSON.stringify(progress) : render(progress));
  // The node publishes its progress here at each change, the last ("finished") before it stops.
  let pushed: DrainProgress | undefined;
  let last: DrainProgress | undefined;
  const report = (progress: DrainProgress) => {
    if (last === undefined || changed(last, progress)) show(progress);
    last = progress;
  };
  const inbox = createInbox(makeSubjects(config.cluster).operatorInbox);
  nc.subscribe(inbox, {
    callback: (error, msg) => {
      if (error) return;
      const frame = decodeFrame(msg.data);
      const progress = typeof frame === "string" ? undefined : decodeProgress(frame.json);
      if (progress === undefined) return;
      if (pushed?.state !== "finished") pushed = progress;
      report(progress);
    },
  });
  const finished = () => pushed?.state === "finished" || last?.state === "finished";
  try {
    const started = await ask({ _tag: "Start", follow: inbox });
    if (started._tag === "Failure") {
      io.err(`tern: node ${nodeId} of cluster ${config.cluster} did not answer: ${"detail" in started.failure ? started.failure.detail : started.failure.reason}`);
      return 69; // EX_UNAVAILABLE
    }
    report(started.success.value);
    const deadline = Date.now() + timeoutMs;
    let finishedAt: number | undefined;
    for (;;) {
      if (finished()) finishedAt ??= Date.now();
      if (finishedAt === undefined && Date.now() > deadline) {
        io.err(`tern: --timeout passed; node ${nodeId} goes on draining (${last?.queued ?? "?"} entries left)`);
        return 75; // EX_TEMPFAIL
      }
      if (finishedAt !== undefined && Date.now() - finishedAt > STOP_WAIT_MS) {
        io.err(`tern: node ${nodeId} is drained but still answers after ${STOP_WAIT_MS / 1000} s`);
        return 1;
      }
      await sleep(finishedAt !== undefined ? 200 : everyMs);
      const answer = await ask({ _tag: "Progress" });
      if (answer._tag === "Success") {
        report(answer.success.value);
        continue;
      }
      // No answer: the node stopped. A "finished" it published just before may still be on its way.
      await sleep(500);
      if (finished()) {
        if (!values.json) io.out(`node ${nodeId}: drained and stopped`);
        return 0;
      }
      io.err(`tern: node ${nodeId} stopped answering with ${last?.queued ?? "?"} entries queued (they stay on its disk: start it and drain it again)`);
      return 1;
    }
  } finally {
    await nc.close();
  }
};

const decodeProgress = (json: unknown): DrainProgress | undefined => {
  const decoded = Schema.decodeUnknownExit(DrainProgress)(json);
  return Exit.isSuccess(decoded) ? decoded.value : undefined;
};

const changed = (a: DrainProgress, b: DrainProgress) =>
  a.state !== b.state || a.queued !== b.queued || a.messagesHandedOff !== b.messagesHandedOff || a.failures !== b.failures || a.peers.join() !== b.peers.join();

const render = (p: DrainProgress): string => {
  const moved = Object.entries(p.byPeer)
    .map(([peer, n]) => `${peer}:${n}`)
    .join(" ");
  const handed = `${p.messagesHandedOff} messages handed off (${p.entriesHandedOff} entries, ${p.duplicates} duplicates)${moved ? ` to ${moved}` : ""}`;
  const why =
    p.state === "waiting"
      ? "; waiting: no live, ready peer that is not draining"
      : p.failures > 0 && p.problem !== undefined
        ? `; ${p.failures} failed hand-offs, last: ${p.problem}`
        : "";
  return `node ${p.node}: ${p.state}, ${p.queued} entries queued; ${handed}${why}`;
};
