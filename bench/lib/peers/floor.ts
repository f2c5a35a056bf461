// The floor as a peer: bench/floor-relay.ts, smtp-server taking each message into memory
// and nodemailer relaying it to the sink, with nothing else. Not an MTA (no queue on disk,
// a crash loses what it holds); its row is the least CPU per message any relay built on
// these two libraries spends on this machine, so Tern's row can be read against it. It
// opens as many connections to the sink as Tern's bench nodes do (BENCH_SITE_CONNECTIONS,
// default 4) and reuses them.
import { spawn } from "node:child_process";
import { createRequire } from "node:module";
import { join } from "node:path";
import { projectRoot } from "../../../nodes/launcher.ts";
import { findFreePort } from "../../../test/support/dnsmasq.ts";
import { stopChild, waitForGreeting, type Peer, type PeerOptions } from "./peer.ts";

const versionOf = (name: string) => (createRequire(import.meta.url)(`${name}/package.json`) as { version: string }).version;

export const startFloor = async (options: PeerOptions): Promise<Peer> => {
  const port = await findFreePort();
  const connections = Number(process.env.BENCH_SITE_CONNECTIONS ?? 4);
  const child = spawn(process.execPath, ["--import", "tsx", join(projectRoot, "bench/floor-relay.ts"), JSON.stringify({ port, sinkPort: options.sinkPort, connections })], {
    cwd: projectRoot,
    stdio: ["ignore", "pipe", "pipe"],
  });
  let log = "";
  const keep = (chunk: Buffer) => (log = (log + chunk.toString()).slice(-20_000));
  child.stdout!.on("data", keep);
  child.stderr!.on("data", keep);
  try {
    await waitForGreeting(port, 30_000, () => child.exitCode === null);
  } catch (error) {
    await stopChild(child, 2_000);
    throw new Error(`${error instanceof Error ? error.message : error}\n${log.split("\n").slice(-10).join("\n")}`);
  }
  return {
    name: "floor",
    version: `smtp-server ${versionOf("smtp-server")} + nodemailer ${versionOf("nodemailer")}, in memory`,
    setup: `bench/floor-relay.ts: 250 once the message is in memory, ${connections} reused connections to [127.0.0.1]:${options.sinkPort}; no disk, DNS, events, logs or metrics (not an MTA: the libraries' own cost)`,
    port,
    pid: child.pid!,
    logTail: async () => log.split("\n").slice(-20).join("\n"),
    stop: () => stopChild(child, 5_000),
  };
};
