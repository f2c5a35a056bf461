// The feedback section: VERP, the bounce domain, feedback-loop addresses and where the
// token key comes from, checked when the config is read; the key itself is read when the
// node starts, and a node without a usable key does not start.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { parseConfig } from "../../nodes/config.ts";
import { makeDataDir, projectRoot, removeDataDir, uniqueCluster, ternCli } from "../support/tern-node.ts";

test("no feedback section: VERP off, no bounce domain, no feedback-loop address, no key", () => {
  assert.deepEqual(parseConfig({}).feedback, { verp: "off", bounceDomain: undefined, fblAddresses: [], key: undefined });
});

test("names are kept in lower case; the key comes from a file, or from TERN_FEEDBACK_KEY, which replaces the file", () => {
  const file = { verp: "recipient", bounceDomain: "Bounces.Example.ORG.", fblAddresses: ["FBL@Example.org"], keyFile: "/etc/tern/feedback.key" };
  assert.deepEqual(parseConfig({ feedback: file }).feedback, {
    verp: "recipient",
    bounceDomain: "bounces.example.org",
    fblAddresses: ["fbl@example.org"],
    key: { file: "/etc/tern/feedback.key" },
  });
  const fromEnv = parseConfig({ feedback: file }, { TERN_FEEDBACK_KEY: "a key that is long enough" }).feedback;
  assert.deepEqual(fromEnv.key, { env: "TERN_FEEDBACK_KEY" }, "the secret itself is not in the config");
  assert.equal(fromEnv.verp, "recipient", "the rest of the section stays");
  assert.deepEqual(parseConfig({}, { TERN_FEEDBACK_KEY: "a key that is long enough" }).feedback.key, { env: "TERN_FEEDBACK_KEY" });
});

test("VERP without a bounce domain, report addresses without a key, a bounce domain that is a local domain, a feedback address that is a mailbox: each refused by name", () => {
  const keyFile = "/etc/tern/feedback.key";
  assert.throws(() => parseConfig({ feedback: { verp: "message", keyFile } }), /feedback\.verp "message" needs feedback\.bounceDomain/);
  assert.throws(() => parseConfig({ feedback: { verp: "per-message", keyFile } }), /feedback\.verp = "per-message"/);
  assert.throws(() => parseConfig({ feedback: { bounceDomain: "bounces.example.org" } }), /feedback needs a key .*feedback\.keyFile .*TERN_FEEDBACK_KEY/);
  assert.throws(() => parseConfig({ feedback: { fblAddresses: ["fbl@example.org"] } }), /feedback needs a key/);
  assert.throws(() => parseConfig({ localDomains: ["localhost", "example.org"], feedback: { bounceDomain: "Example.org", keyFile } }), /feedback\.bounceDomain "example\.org" is one of localDomains/);
  assert.throws(() => parseConfig({ feedback: { bounceDomain: "bad..domain", keyFile } }), /feedback\.bounceDomain "bad\.\.domain" is not a domain name/);
  assert.throws(() => parseConfig({ feedback: { fblAddresses: ["me@localhost"], keyFile } }), /feedback\.fblAddresses names "me@localhost", which is a user's mailbox/);
  assert.throws(() => parseConfig({ feedback: { bounceDomain: "b.example.org", keyFile, keyEnv: "MY_KEY" } }), /both keyFile and keyEnv/);
});

const startWith = async (feedback: Record<string, unknown>, env: NodeJS.ProcessEnv = {}) => {
  const dir = await makeDataDir();
  const path = join(dir, "config.json");
  const withDir = Object.fromEntries(Object.entries(feedback).map(([k, v]) => [k, k === "keyFile" ? join(dir, String(v)) : v]));
  await writeFile(path, JSON.stringify({ dataDir: dir, cluster: uniqueCluster(), nats: { embedded: false }, listen: { smtp: 0, smtps: 0, pop3: 0, imap: 0, imaps: 0, http: 0 }, feedback: withDir }));
  await writeFile(join(dir, "short.key"), "short\n");
  const result = await new Promise<{ code: number; stderr: string }>((resolve) => {
    const child = spawn(process.execPath, [...ternCli, "node", "--config", path], { cwd: projectRoot, stdio: ["ignore", "ignore", "pipe"], env: { ...process.env, ...env } });
    let stderr = "";
    child.stderr.on("data", (c: Buffer) => (stderr += c.toString()));
    child.once("exit", (code) => resolve({ code: code ?? -1, stderr }));
  });
  await removeDataDir(dir);
  return result;
};

test("a node whose feedback key is missing or too short stops at start saying which (exit 78), never printing it", async () => {
  const missing = await startWith({ bounceDomain: "bounces.example.org", keyFile: "missing.key" });
  assert.equal(missing.code, 78, missing.stderr);
  assert.match(missing.stderr, /cannot read the feedback key from file .*missing\.key/);
  const short = await startWith({ bounceDomain: "bounces.example.org", keyFile: "short.key" });
  assert.equal(short.code, 78, short.stderr);
  assert.match(short.stderr, /a feedback key in file .*short\.key is shorter than 16 characters/);
  assert.doesNotMatch(short.stderr, /short\n/);
});
