// SIGHUP reloads a node's users from its config file, without a restart: a user added to
// the file can log in; a file the node would refuse changes nothing and is logged.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { makeDataDir, removeDataDir, run, startTernNode, uniqueCluster, type TernNode } from "../support/tern-node.ts";

let node: TernNode;
let dataDir: string;
let configFile: string;

before(async () => {
  dataDir = await makeDataDir();
  node = await startTernNode({ nodeId: "hup", cluster: uniqueCluster(), dataDir, localDomains: ["example.test"], users: [{ address: "alice@example.test", password: "alice-pw" }] });
  configFile = join(dataDir, "config-hup.json");
});

after(async () => {
  await node.kill("SIGTERM");
  await removeDataDir(dataDir);
});

/** Whether a POP3 login (USER/PASS over loopback, where plaintext login is allowed) succeeds. */
const popLogin = async (user: string, password: string): Promise<boolean> => {
  const script = `
import poplib, sys
p = poplib.POP3("127.0.0.1", ${node.ports.pop3}, timeout=10)
try:
    p.user(${JSON.stringify(user)}); p.pass_(${JSON.stringify(password)}); print("ok"); p.quit()
except poplib.error_proto as e:
    print("refused", e)
`;
  const result = await run("python3", ["-c", script]);
  assert.equal(result.code, 0, result.stderr);
  return result.stdout.startsWith("ok");
};

test("SIGHUP: a user added to the config file can log in; a bad file changes nothing", async () => {
  assert.equal(await popLogin("bob@example.test", "bob-pw"), false, "bob is not a user yet");
  const config = JSON.parse(await readFile(configFile, "utf8")) as { users: unknown[] };
  config.users.push({ address: "bob@example.test", password: "bob-pw" });
  await writeFile(configFile, JSON.stringify(config));
  process.kill(node.pid, "SIGHUP");
  await node.waitForEvent("config.reloaded", { users: 2 });
  assert.equal(await popLogin("bob@example.test", "bob-pw"), true);
  assert.equal(await popLogin("alice@example.test", "alice-pw"), true);

  await writeFile(configFile, JSON.stringify({ ...config, delivery: { retryBaseMs: 10, retryMaxMs: 1 } }));
  process.kill(node.pid, "SIGHUP");
  const failed = await node.waitForEvent("config.reload.failed");
  assert.match(String(failed.error), /retryBaseMs/);
  assert.equal(await popLogin("bob@example.test", "bob-pw"), true, "the users stay as they were");
});
