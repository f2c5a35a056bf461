// `tern user add|hash`: users with scrypt password hashes in the config file.
import { parseArgs } from "node:util";
import { chown, readFile, rename, stat, writeFile } from "node:fs/promises";
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
    throw new ConfigError(`cannot read ${values.config}: ${error.message}`);
  });
  const raw = existing === undefined ? startingConfig(address) : parseJson(values.config, existing);
  const users = (raw.users ?? []).filter((user) => String(user.address).toLowerCase() !== address.toLowerCase());
  users.push({ address, passwordHash: await hashPassword(await readPassword()), ...(values.home ? { home: values.home } : {}) });
  const updated = { ...raw, users };
  parseConfig(updated); // refuse to write a config the node would refuse
  // Written aside and renamed over the file: a crash mid-write must not lose every user's hash.
  // The new file keeps the old one's mode and owners (a node running as another user must
  // still read it); a new file is the writer's alone.
  const aside = `${values.config}.tern-new`;
  const before = existing === undefined ? undefined : await stat(values.config);
  try {
    await writeFile(aside, `${JSON.stringify(updated, null, 2)}\n`, { mode: before === undefined ? 0o600 : before.mode & 0o777 });
    if (before !== undefined) await chown(aside, before.uid, before.gid).catch(() => undefined); // only root may give a file away
    await rename(aside, values.config);
  } catch (error) {
    throw new ConfigError(`cannot write ${values.config}: ${(error as Error).message}`);
  }
  if (existing === undefined) {
    console.error(`tern: created ${values.config}, a development config: local domain ${domainOfAddress(address)}, NATS started by the node when none answers (nats.embedded)`);
  }
  console.error(`tern: ${address} saved in ${values.config}`);
  return 0;
};

const parseJson = (file: string, text: string): { users?: Array<Record<string, unknown>> } => {
  try {
    return JSON.parse(text) as { users?: Array<Record<string, unknown>> };
  } catch (error) {
    throw new ConfigError(`${file} is not JSON: ${(error as Error).message}`);
  }
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
