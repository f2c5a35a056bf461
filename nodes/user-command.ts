// `tern user add|hash`: users with scrypt password hashes in the config file.
import { parseArgs } from "node:util";
import { readFile, writeFile } from "node:fs/promises";
import { hashPassword } from "../actors/users/store.ts";
import { ConfigError, parseConfig } from "./config.ts";

const readPassword = async (): Promise<string> => {
  let text = "";
  for await (const chunk of process.stdin) text += chunk;
  const password = text.replace(/\r?\n$/, "");
  if (password === "") throw new ConfigError("no password on standard input");
  return password;
};

export const runUser = async (args: string[]): Promise<number> => {
  const { values, positionals } = parseArgs({ args, allowPositionals: true, options: { config: { type: "string" }, home: { type: "string" } } });
  const [action, address] = positionals;
  if (action === "hash") {
    console.log(await hashPassword(await readPassword()));
    return 0;
  }
  if (action !== "add" || !values.config || !address) throw new ConfigError(`usage: tern user add --config FILE ADDRESS [--home NODE]`);
  const existing = await readFile(values.config, "utf8").catch((error: NodeJS.ErrnoException) => {
    if (error.code === "ENOENT") return undefined;
    throw new ConfigError(`tern: cannot read ${values.config}: ${error.message}`);
  });
  const raw = existing === undefined ? startingConfig(address) : (JSON.parse(existing) as { users?: Array<Record<string, unknown>> });
  const users = (raw.users ?? []).filter((user) => String(user.address).toLowerCase() !== address.toLowerCase());
  users.push({ address, passwordHash: await hashPassword(await readPassword()), ...(values.home ? { home: values.home } : {}) });
  const updated = { ...raw, users };
  parseConfig(updated); // refuse to write a config the node would refuse
  await writeFile(values.config, `${JSON.stringify(updated, null, 2)}\n`);
  if (existing === undefined) {
    console.error(`tern: created ${values.config}, a development config: local domain ${domainOfAddress(address)}, NATS started by the node when none answers (nats.embedded)`);
  }
  console.error(`tern: ${address} saved in ${values.config}`);
  return 0;
};

const domainOfAddress = (address: string) => address.slice(address.lastIndexOf("@") + 1).toLowerCase();

/**
 * The config `user add` writes when the file does not exist yet: the user's domain is local
 * (else the node would refuse the user) and, as for `tern node` without a config, the node
 * starts its own NATS when none answers, so the file works at once on a development machine.
 * A production config sets nats.servers and leaves embedded off.
 */
const startingConfig = (address: string): { users?: Array<Record<string, unknown>> } & Record<string, unknown> => ({
  localDomains: [domainOfAddress(address)],
  nats: { embedded: true },
});
