// Tests start nodes with the same launcher as the benchmarks (nodes/launcher.ts), and
// share these helpers for commands, waits and polling.
import { spawn } from "node:child_process";

export * from "../../nodes/launcher.ts";

/** Runs a command to completion; resolves with its exit code and output. */
export const run = (command: string, args: string[], input?: string) =>
  new Promise<{ code: number; stdout: string; stderr: string }>((resolve, reject) => {
    const child = spawn(command, args, { stdio: ["pipe", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (c: Buffer) => (stdout += c.toString()));
    child.stderr.on("data", (c: Buffer) => (stderr += c.toString()));
    child.once("error", reject);
    child.once("exit", (code) => resolve({ code: code ?? -1, stdout, stderr }));
    // A command that exits without reading its input (cp, sh -c …) closes the pipe first:
    // EPIPE then is no failure of the command.
    child.stdin.once("error", () => undefined);
    child.stdin.end(input ?? "");
  });

export const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Polls `probe` until it returns a value other than undefined. */
export const eventually = async <T>(probe: () => Promise<T | undefined> | T | undefined, timeoutMs = 20_000, what = "condition"): Promise<T> => {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const value = await probe();
    if (value !== undefined) return value;
    await sleep(50);
  }
  throw new Error(`timed out waiting for ${what}`);
};
