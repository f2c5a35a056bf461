// The embedded development NATS server's configuration: JetStream under the data dir and
// the same permissions as a production cluster (cluster/nats-permissions.ts), with a
// node, an operator and an application user whose passwords are generated once and kept,
// readable only by the owner, next to it. `tern queue` on the same machine logs in with
// the operator's, `tern submit` with the application's.
import { randomBytes } from "node:crypto";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { Subjects } from "../protocol/subjects.ts";
import type { NatsSecurity } from "./nats-auth.ts";
import { renderServerConfig, type NatsRole } from "./nats-permissions.ts";

type EmbeddedRole = Extract<NatsRole, "node" | "operator" | "application">;

const userOf = (role: EmbeddedRole) => `tern-${role}`;
const natsDir = (dataDir: string) => join(dataDir, "nats");
const secretFile = (dataDir: string, role: EmbeddedRole) => join(natsDir(dataDir), `${role}.password`);

/** How a client logs in to the embedded server of the node whose data dir is `dataDir`. */
export const embeddedCredentials = (dataDir: string, role: EmbeddedRole): NatsSecurity => ({
  auth: { kind: "user", user: userOf(role), password: { file: secretFile(dataDir, role) } },
  tls: undefined,
});

const ensureSecret = async (dataDir: string, role: EmbeddedRole): Promise<string> => {
  const file = secretFile(dataDir, role);
  const existing = await readFile(file, "utf8").catch(() => undefined);
  if (existing) return existing.trim();
  const secret = randomBytes(24).toString("base64url");
  await writeFile(file, `${secret}\n`, { mode: 0o600 });
  return secret;
};

/** Writes the server's config file (and the credentials on first use); returns its path. */
export const prepareEmbeddedServer = async (options: {
  readonly dataDir: string;
  readonly host: string;
  readonly port: number;
  readonly subjects: Subjects;
}): Promise<{ readonly configFile: string }> => {
  const dir = natsDir(options.dataDir);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const users = await Promise.all(
    (["node", "operator", "application"] as const).map(async (role) => ({ role, user: userOf(role), password: await ensureSecret(options.dataDir, role) })),
  );
  const configFile = join(dir, "server.conf");
  const text = renderServerConfig({
    subjects: options.subjects,
    users,
    listen: `${options.host}:${options.port}`,
    storeDir: dir,
    header: ["Written by tern at every start of the embedded server; edits are lost."],
  });
  await writeFile(configFile, text, { mode: 0o600 });
  return { configFile };
};
