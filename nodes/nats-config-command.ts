// `tern nats-config`: prints a nats-server configuration that locks a cluster's NATS down
// (see "Securing a cluster" in the README): JetStream, and one user per role with the
// permissions that role needs, nothing for anonymous clients.
import { randomBytes } from "node:crypto";
import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { renderServerConfig, type NatsRole } from "../cluster/nats-permissions.ts";
import { makeSubjects } from "../protocol/subjects.ts";
import { loadConfig } from "./config.ts";

const roles: ReadonlyArray<NatsRole> = ["node", "operator", "application"];

/** A NATS user of the generated configuration and its password. */
interface GeneratedUser {
  readonly role: NatsRole;
  readonly user: string;
  readonly password: string;
  readonly tenant?: string;
}

const generatedUsers = (options: { readonly example: boolean; readonly tenants?: ReadonlyArray<string> }): ReadonlyArray<GeneratedUser> => {
  const password = (name: string) => (options.example ? `CHANGE-ME-${name}-password` : randomBytes(24).toString("base64url"));
  return [
    ...roles.map((role) => ({ role, user: `tern-${role}`, password: password(role) })),
    ...(options.tenants ?? []).map((tenant) => ({ role: "application" as const, tenant, user: `tern-application-${tenant}`, password: password(`application-${tenant}`) })),
  ];
};

const renderFor = (options: { readonly cluster: string; readonly listen: string; readonly storeDir: string }, users: ReadonlyArray<GeneratedUser>): string =>
  renderServerConfig({
    subjects: makeSubjects(options.cluster),
    users,
    listen: options.listen,
    storeDir: options.storeDir,
    header: [
      `nats-server configuration for the Tern cluster "${options.cluster}", written by \`tern nats-config\`.`,
      `Anonymous clients get nothing. Give each node the tern-node password (nats.user + nats.passwordFile),`,
      `tern queue the tern-operator one, applications the tern-application one (every tenant), or the`,
      `tern-application-<tenant> one (that tenant only; its inbox prefix is tern.<cluster>.tenant.<tenant>.inbox).`,
      `Passwords may be replaced by bcrypt hashes, and users by nkeys ({ nkey: "U…", permissions: … }); see the README.`,
    ],
  });

/**
 * The configuration for `cluster`; `example` puts placeholders where passwords go
 * (docs/nats-server.conf). Each tenant (`api.tenants`) gets an application user of its own.
 */
export const natsServerConfig = (options: {
  readonly cluster: string;
  readonly listen: string;
  readonly storeDir: string;
  readonly example: boolean;
  readonly tenants?: ReadonlyArray<string>;
}): string => renderFor(options, generatedUsers(options));

export const runNatsConfig = async (args: string[]): Promise<void> => {
  const { values } = parseArgs({
    args,
    options: {
      config: { type: "string", short: "c" },
      listen: { type: "string" },
      "store-dir": { type: "string" },
      example: { type: "boolean" },
      "secrets-dir": { type: "string" },
    },
  });
  const config = await loadConfig(values.config, process.env);
  const options = { cluster: config.cluster, listen: values.listen ?? "0.0.0.0:4222", storeDir: values["store-dir"] ?? "/var/lib/nats" };
  const users = generatedUsers({ example: values.example ?? false, tenants: config.api.tenants.map((tenant) => tenant.name) });
  // With --secrets-dir each password also goes to `<dir>/<user>.password` (mode 0600), the
  // form nats.passwordFile reads, so provisioning (compose, configuration management) needs
  // no copying out of the server's file. They are written before the configuration is
  // printed: a server never runs with passwords nobody kept.
  const secretsDir = values["secrets-dir"];
  if (secretsDir !== undefined) {
    await mkdir(secretsDir, { recursive: true, mode: 0o700 });
    for (const user of users) await writeFile(join(secretsDir, `${user.user}.password`), `${user.password}\n`, { mode: 0o600 });
  }
  process.stdout.write(renderFor(options, users));
};
