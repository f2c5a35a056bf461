// `tern node [--config FILE]`: runs one node until SIGTERM/SIGINT (or until drained), then
// stops it gracefully.
//
// Ctrl-C in a terminal sends SIGINT to the whole foreground process group: under
// `npm start` the node hears it from the terminal and again from npm, which passes it on.
// The first signal starts the graceful stop; later ones are ignored while it runs (the
// stop is bounded: each part has its own grace period), so a relayed duplicate can never
// cut it short. SIGKILL stops at once.
import { parseArgs } from "node:util";
import { Cause, Effect, Exit, Fiber } from "effect";
import { loadConfig } from "./config.ts";
import { runNode, type NodePorts } from "./node.ts";
import { StartFailure } from "./services/core.ts";

const usage = `usage: tern node [--config FILE]
Runs one Tern node; without --config, a one-node cluster on loopback defaults.
SIGTERM or SIGINT (Ctrl-C) stops it gracefully; signals during the stop are ignored.`;

/** Signals after the first, within this long, are the same Ctrl-C relayed (by npm, a shell): ignored without a word. */
const RELAYED_WITHIN_MS = 1_000;

export const runNodeCommand = async (args: string[]): Promise<number> => {
  const { values } = parseArgs({ args, options: { config: { type: "string", short: "c" }, help: { type: "boolean", short: "h" } } });
  if (values.help) {
    console.log(usage);
    return 0;
  }
  const config = await loadConfig(values.config, process.env);
  const announce = (ports: NodePorts) =>
    console.error(
      `tern: node ${config.nodeId} of cluster ${config.cluster} is up: smtp ${config.listen.host}:${ports.smtp}, ` +
        `smtps ${config.listen.host}:${ports.smtps}, ` +
        `pop3 ${config.listen.host}:${ports.pop3}, imap ${config.listen.host}:${ports.imap}, imaps ${config.listen.host}:${ports.imaps}, http http://${urlHost(config.http.host)}:${ports.http}/metrics`,
    );
  // The edge of the Effect program: the node runs until a signal interrupts it, and the
  // interruption closes its scope, which is the graceful stop.
  const node = Effect.runFork(runNode(config, announce));
  let stoppingSince: number | undefined;
  const onSignal = (signal: NodeJS.Signals) => {
    if (stoppingSince === undefined) {
      stoppingSince = Date.now();
      console.error(`tern: ${signal}: stopping gracefully`);
      Effect.runFork(Fiber.interrupt(node));
    } else if (Date.now() - stoppingSince > RELAYED_WITHIN_MS) {
      console.error(`tern: ${signal} ignored: the node is stopping gracefully (SIGKILL stops it at once)`);
    }
  };
  process.on("SIGTERM", onSignal);
  process.on("SIGINT", onSignal);
  const exit = await Effect.runPromise(Fiber.await(node));
  // Stopped by a signal or drained: exit now, whatever handles (idle sockets, timers) are
  // left. The handlers stay until then, so a late duplicate signal cannot kill the process
  // between the stop and the exit.
  if (Exit.isSuccess(exit) || Cause.hasInterruptsOnly(exit.cause)) process.exit(0);
  const failure = Cause.findErrorOption(exit.cause);
  if (failure._tag === "Some" && failure.value instanceof StartFailure) {
    console.error(`tern: could not start ${failure.value.part}: ${failure.value.detail}`);
    process.exit(1);
  }
  if (failure._tag === "Some") throw failure.value;
  throw new Error(Cause.pretty(exit.cause));
};

/** A host as it appears in a URL: an IPv6 address in brackets. */
const urlHost = (host: string) => (host.includes(":") ? `[${host}]` : host);
