// A nats-server of its own, on a free port, configured as the README's "Securing a
// cluster" says: JetStream, and one user per role with the permissions Tern documents
// (cluster/nats-permissions.ts). Anonymous clients are refused.
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { createConnection } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { renderServerConfig, type NatsRole } from "../../cluster/nats-permissions.ts";
import { makeSubjects } from "../../protocol/subjects.ts";
import { findFreePort } from "./dnsmasq.ts";

export interface SecureNats {
  readonly url: string;
  readonly port: number;
  /** The NATS user of `role` and the file holding its password (as a node config names it). */
  readonly credentials: (role: NatsRole) => { readonly user: string; readonly password: string; readonly passwordFile: string };
  /** A client connected as `role`. */
  readonly connectAs: (role: NatsRole) => Promise<NatsConnection>;
  readonly stop: () => Promise<void>;
}

const answers = (port: number) =>
  new Promise<boolean>((resolve) => {
    const socket = createConnection({ host: "127.0.0.1", port }, () => {
      socket.destroy();
      resolve(true);
    });
    socket.once("error", () => resolve(false));
  });

export const startSecureNats = async (cluster: string): Promise<SecureNats> => {
  const dir = await mkdtemp(join(tmpdir(), "tern-secure-nats-"));
  const port = await findFreePort();
  const roles: NatsRole[] = ["node", "operator", "application"];
  const users = await Promise.all(
    roles.map(async (role) => {
      const password = randomBytes(12).toString("hex");
      const passwordFile = join(dir, `${role}.password`);
      await writeFile(passwordFile, `${password}\n`, { mode: 0o600 });
      return { role, user: `${role}-user`, password, passwordFile };
    }),
  );
  const configFile = join(dir, "server.conf");
  await writeFile(configFile, renderServerConfig({ subjects: makeSubjects(cluster), users, listen: `127.0.0.1:${port}`, storeDir: join(dir, "js") }));
  const child = spawn("/usr/sbin/nats-server", ["-c", configFile], { stdio: "ignore" });
  const stop = async () => {
    if (child.exitCode === null) {
      const exited = new Promise((resolve) => child.once("exit", resolve));
      child.kill("SIGTERM");
      await exited;
    }
    await rm(dir, { recursive: true, force: true });
  };
  for (let i = 0; i < 100 && !(await answers(port)); i++) await new Promise((resolve) => setTimeout(resolve, 100));
  if (!(await answers(port))) {
    await stop();
    throw new Error(`nats-server with ${configFile} did not start`);
  }
  const credentials = (role: NatsRole) => users.find((u) => u.role === role)!;
  const url = `nats://127.0.0.1:${port}`;
  return {
    url,
    port,
    credentials,
    connectAs: (role) => connect({ servers: [url], user: credentials(role).user, pass: credentials(role).password, name: `test-${role}` }),
    stop,
  };
};
