// What the harness needs of another MTA run beside Tern: where to send, which process tree
// to measure, and how to stop it. Each MTA peer relays to the bench sink with a durable queue;
// the floor peer (floor.ts) holds its queue in memory, being the libraries alone.
import type { ChildProcess } from "node:child_process";
import { connect } from "node:net";

export interface Peer {
  /** "postfix", "haraka": the table row and the result's label. */
  readonly name: string;
  readonly version: string;
  /** How it was set up, for the notes: what it queues on, how it reaches the sink. */
  readonly setup: string;
  readonly port: number;
  /** The root of its process tree (all of it counts as the peer's CPU). */
  readonly pid: number;
  /** The end of its log, for a run that went wrong. */
  readonly logTail: () => Promise<string>;
  readonly stop: () => Promise<void>;
}

export interface PeerOptions {
  /** The sink on 127.0.0.1 every message is relayed to. */
  readonly sinkPort: number;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Waits until something on 127.0.0.1:port greets with 220 (a listening socket alone is not enough for a cluster). */
export const waitForGreeting = async (port: number, timeoutMs: number, alive: () => boolean = () => true) => {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const greeted = await new Promise<boolean>((resolve) => {
      const socket = connect({ host: "127.0.0.1", port });
      socket.setTimeout(2000, () => (socket.destroy(), resolve(false)));
      socket.once("error", () => resolve(false));
      socket.once("data", (chunk: Buffer) => {
        socket.end("QUIT\r\n");
        resolve(chunk.toString("latin1").startsWith("220"));
      });
    });
    if (greeted) return;
    if (!alive()) throw new Error(`nothing answers on 127.0.0.1:${port}: the process ended`);
    if (Date.now() > deadline) throw new Error(`nothing greets on 127.0.0.1:${port} after ${timeoutMs} ms`);
    await sleep(100);
  }
};

/** SIGTERM, then SIGKILL when it is still running after `timeoutMs`. */
export const stopChild = (child: ChildProcess, timeoutMs: number) =>
  new Promise<void>((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve();
    const killer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
    child.once("exit", () => {
      clearTimeout(killer);
      resolve();
    });
    child.kill("SIGTERM");
  });
