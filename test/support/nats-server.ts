// A plain nats-server with JetStream, of the test's own, on a free port with its own store
// dir, that the test can stop, restart on the same port, and restart with its store wiped
// (JetStream loses every stream and KV bucket, as after a disk replacement).
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { spawnNatsServer } from "./spawn-nats-server.ts";

export interface TestNatsServer {
  readonly url: string;
  readonly storeDir: string;
  readonly stop: () => Promise<void>;
  /** Starts it again on the same port; with `wipe`, its JetStream store is deleted first. */
  readonly restart: (options?: { readonly wipe?: boolean }) => Promise<void>;
  /** Stops it and removes its files. */
  readonly dispose: () => Promise<void>;
}

export const startNatsServer = async (): Promise<TestNatsServer> => {
  const dir = await mkdtemp(join(tmpdir(), "tern-nats-"));
  const storeDir = join(dir, "js");
  const server = await spawnNatsServer({ args: ["-js", "-sd", storeDir] }).catch(async (error: unknown) => {
    await rm(dir, { recursive: true, force: true });
    throw error;
  });
  return {
    url: server.url,
    storeDir,
    stop: server.stop,
    restart: async (options = {}) => {
      await server.stop();
      if (options.wipe) await rm(storeDir, { recursive: true, force: true });
      await server.restart();
    },
    dispose: async () => {
      await server.dispose();
      await rm(dir, { recursive: true, force: true });
    },
  };
};
