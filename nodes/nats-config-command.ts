// `tern nats-config`: prints a nats-server configuration that locks a cluster's NATS down
// (see "Securing a cluster" in the README): JetStream, and one user per role with the
// permissions that role needs, nothing for anonymous clients.
import { randomBytes } from "node:crypto";
import { parseArgs } from "node:util";
import { renderServerConfig, type NatsRole } from "../cluster/nats-permissions.ts";
import { makeSubjects } from "../protocol/subjects.ts";
import { loadConfig } from "./config.ts";

const roles: ReadonlyArray<NatsRole> = ["node", "operator", "application"];

/** The configuration for `cluster`; `example` puts placeholders where passwords go (docs/nats-server.conf). */
export const natsServerConfig = (options: { readonly cluster: string; readonly listen: string; readonly storeDir: string; readonly example: boolean }): string =>
  renderServerConfig({
    subjects: makeSubjects(options.cluster),
    users: roles.map((role) => ({
      role,
      user: `tern-${role}`,
      password: options.example ? `CHANGE-ME-${role}-password` : randomBytes(24).toString("base64url"),
    })),
    listen: options.listen,
    storeDir: options.storeDir,
    header: [
      `nats-server configuration for the Tern cluster "${options.cluster}", written by \`tern nats-config\`.`,
      `Anonymous clients get nothing. Give each node the tern-node password (nats.user + nats.passwordFile),`,
      `tern queue the tern-operator one, applications the tern-application one. Passwords may be replaced by`,
      `bcrypt hashes, and users by nkeys ({ nkey: "U…", permissions: … }); see the README.`,
    ],
  });

export const runNatsConfig = async (args: string[]): Promise<void> => {
  const { values } = parseArgs({
    args,
    options: {
      config: { type: "string", short: "c" },
      listen: { type: "string" },
      "store-dir": { type: "string" },
      example: { type: "boolean" },
    },
  });
  const config = await loadConfig(values.config, process.env);
  process.stdout.write(
    natsServerConfig({
      cluster: config.cluster,
      listen: values.listen ?? "0.0.0.0:4222",
      storeDir: values["store-dir"] ?? "/var/lib/nats",
      example: values.example ?? false,
    }),
  );
};
