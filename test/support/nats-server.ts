// A plain nats-server with JetStream, of the test's own, on a free port with its own store
// dir, that the test can stop, restart on the same port, and restart with its store wiped
// (JetStream loses every stream and KV bucket, as after a disk replacement).
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { createConnection } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { findFreePort } from "./dnsmasq.ts";

export interface TestNatsServer {
  readonly url: string;
  readonly storeDir: string;
  readonly stop: () => Promise<void>;
  /** Starts it again on the same port; with `wipe`, its JetStream store is deleted first. */
  readonly restart: (options?: { readonly wipe?: boolean }) => Promise<void>;
  /** Stops it and removes its files. */
  readonly dispose: () => Promise<void>;
}

const answers = (port: number) =>
  new Promise<boolean>((resolve) => {
    const socket = createConnection({ host: "127.0.0.1", port }, () => {
      socket.destroy();
      resolve(true);
    });
    socket.once("error", () => resolve(false));
  });

export const startNatsServer = async (): Promise<TestNatsServer> => {
  const dir = await mkdtemp(join(tmpdir(), "tern-nats-"));
  const storeDir = join(dir, "js");
  const port = await findFreePort();
  let child: ChildProcess | undefined;

  const start = async () => {
    child = spawn("/usr/sbin/nats-server", ["-a", "127.0.0.1", "-p", String(port), "-js", "-sd", storeDir], { stdio: "ignore" });
    for (let i = 0; i < 100 && !(await answers(port)); i++) await new Promise((resolve) => setTimeout(resolve, 100));
    if (!(await answers(port))) throw new Error(`nats-server on port ${port} did not start`);
  };
  const stop = async () => {
    const running = child;
    child = undefined;
    if (running === undefined || running.exitCode !== null) return;
    const exited = new Promise((resolve) => running.once("exit", resolve));
    running.kill("SIGTERM");
    await exited;
  };

  await start();
  return {
    url: `nats://127.0.0.1:${port}`,
    storeDir,
    stop,
    restart: async (options = {}) => {
      await stop();
      if (options.wipe) await rm(storeDir, { recursive: true, force: true });
      await start();
    },
    dispose: async () => {
      await stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
};
