// A nats-server of its own, on a free port, configured as the README's "Securing a
// cluster" says: JetStream, and one user per role with the permissions Tern documents
// (cluster/nats-permissions.ts). Anonymous clients are refused.
import { randomBytes } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { renderServerConfig, type NatsRole } from "../../cluster/nats-permissions.ts";
import { makeSubjects } from "../../protocol/subjects.ts";
import { spawnNatsServer } from "./spawn-nats-server.ts";

export interface SecureNats {
  readonly url: string;
  readonly port: number;
  /** The NATS user of `role` (an application user of `tenant`, when named) and the file holding its password (as a node config names it). */
  readonly credentials: (role: NatsRole, tenant?: string) => { readonly user: string; readonly password: string; readonly passwordFile: string };
  /** A client connected as `role` (an application user of `tenant`, when named). */
  readonly connectAs: (role: NatsRole, tenant?: string) => Promise<NatsConnection>;
  readonly stop: () => Promise<void>;
}

/** `tenants`: an application user bound to each of them is added beside the one of every tenant. */
export const startSecureNats = async (cluster: string, options: { readonly tenants?: ReadonlyArray<string> } = {}): Promise<SecureNats> => {
  const dir = await mkdtemp(join(tmpdir(), "tern-secure-nats-"));
  const roles: Array<{ role: NatsRole; tenant?: string }> = [
    { role: "node" },
    { role: "operator" },
    { role: "application" },
    ...(options.tenants ?? []).map((tenant) => ({ role: "application" as const, tenant })),
  ];
  const users = await Promise.all(
    roles.map(async ({ role, tenant }) => {
      const name = tenant !== undefined ? `${role}-${tenant}` : role;
      const password = randomBytes(12).toString("hex");
      const passwordFile = join(dir, `${name}.password`);
      await writeFile(passwordFile, `${password}\n`, { mode: 0o600 });
      return { role, tenant, user: `${name}-user`, password, passwordFile };
    }),
  );
  const server = await spawnNatsServer({
    config: (port) => renderServerConfig({ subjects: makeSubjects(cluster), users, listen: `127.0.0.1:${port}`, storeDir: join(dir, "js") }),
  }).catch(async (error: unknown) => {
    await rm(dir, { recursive: true, force: true });
    throw error;
  });
  const credentials = (role: NatsRole, tenant?: string) => users.find((u) => u.role === role && u.tenant === tenant)!;
  return {
    url: server.url,
    port: server.port,
    credentials,
    connectAs: (role, tenant) =>
      connect({ servers: [server.url], user: credentials(role, tenant).user, pass: credentials(role, tenant).password, name: `test-${role}` }),
    stop: async () => {
      await server.dispose();
      await rm(dir, { recursive: true, force: true });
    },
  };
};
