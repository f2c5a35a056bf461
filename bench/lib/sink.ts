// Starts and talks to the sink child process (bench/sink-process.ts).
import { fork, type ChildProcess } from "node:child_process";
import { join } from "node:path";
import { projectRoot } from "../../nodes/launcher.ts";

export interface SinkOptions {
  readonly port: number;
  /** Record arrivals (bench Message-IDs). Off: the bare smtp-server baseline. */
  readonly record: boolean;
  /** Do not listen until told to (`open`): a next hop that is down. */
  readonly startClosed?: boolean;
  readonly delayMs?: number;
  readonly tempfailEvery?: number;
  readonly permfailEvery?: number;
}

export type SinkCommand = { type: "open" } | { type: "flush" };
export type SinkReport =
  | { type: "listening"; port: number }
  | { type: "arrivals"; items: Array<[string, number]> }
  | { type: "flushed" };

export interface SinkProcess {
  readonly pid: number;
  readonly port: number;
  /** Bench Message-ID → arrival times (more than one: a duplicate delivery). */
  readonly arrivals: Map<string, number[]>;
  readonly arrivalCount: () => number;
  readonly open: () => void;
  /** Waits until every arrival the sink has seen so far is reported. */
  readonly flush: () => Promise<void>;
  readonly stop: () => Promise<void>;
}

export const startSinkProcess = (options: SinkOptions): Promise<SinkProcess> =>
  new Promise((resolve, reject) => {
    const child: ChildProcess = fork(join(projectRoot, "bench/sink-process.ts"), [JSON.stringify(options)], {
      execArgv: ["--import", "tsx"],
      stdio: ["ignore", "inherit", "inherit", "ipc"],
    });
    const arrivals = new Map<string, number[]>();
    let count = 0;
    let flushed: (() => void) | undefined;
    child.on("message", (report: SinkReport) => {
      if (report.type === "arrivals") {
        for (const [id, at] of report.items) {
          const times = arrivals.get(id);
          if (times) times.push(at);
          else arrivals.set(id, [at]);
          count++;
        }
      } else if (report.type === "flushed") {
        flushed?.();
      } else if (report.type === "listening") {
        resolve({
          pid: child.pid!,
          port: report.port,
          arrivals,
          arrivalCount: () => count,
          open: () => child.send({ type: "open" } satisfies SinkCommand),
          flush: () =>
            new Promise<void>((done) => {
              flushed = done;
              child.send({ type: "flush" } satisfies SinkCommand);
            }),
          stop: () =>
            new Promise<void>((done) => {
              if (child.exitCode !== null) return done();
              child.once("exit", () => done());
              child.kill("SIGTERM");
            }),
        });
      }
    });
    child.once("error", reject);
    child.once("exit", (code) => reject(new Error(`sink exited early (${code})`)));
  });
