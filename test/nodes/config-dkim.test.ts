// The dkim section: domains with their selectors and key files, checked when the config
// is read (shape, repeated selectors, From among the signed headers) and when the node
// starts (the key files themselves): a node whose key cannot sign does not start.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { parseConfig } from "../../nodes/config.ts";
import { makeDataDir, projectRoot, removeDataDir, uniqueCluster, ternCli } from "../support/tern-node.ts";

const key = (selector: string, algorithm = "rsa-sha256") => ({ selector, algorithm, keyFile: `/etc/tern/dkim/${selector}.pem` });

test("no dkim section: no domain signs", () => {
  assert.deepEqual(parseConfig({}).dkim.domains, {});
});

test("domains are kept in lower case with their selectors, in order", () => {
  const config = parseConfig({ dkim: { domains: { "Example.ORG": [key("2026a"), key("ed2026", "ed25519-sha256")] }, headers: ["From", "To", "Subject"] } });
  assert.deepEqual(Object.keys(config.dkim.domains), ["example.org"]);
  assert.deepEqual(config.dkim.domains["example.org"]!.map((k) => k.selector), ["2026a", "ed2026"]);
  assert.deepEqual(config.dkim.headers, ["From", "To", "Subject"]);
});

test("a bad algorithm, selector or domain, a domain without keys, a repeated selector, headers without From: each named", () => {
  assert.throws(() => parseConfig({ dkim: { domains: { "a.example": [key("s1", "rsa-sha1")] } } }), /dkim\.domains\.a\.example\[0\]\.algorithm = "rsa-sha1"/);
  assert.throws(() => parseConfig({ dkim: { domains: { "a.example": [key("bad selector")] } } }), /selector = "bad selector": expected DNS labels/);
  assert.throws(() => parseConfig({ dkim: { domains: { "a.example": [{ selector: "s1", algorithm: "rsa-sha256" }] } } }), /keyFile/);
  assert.throws(() => parseConfig({ dkim: { domains: { "a.example": [] } } }), /dkim\.domains\["a\.example"\] lists no key/);
  assert.throws(() => parseConfig({ dkim: { domains: { "a..example": [key("s1")] } } }), /dkim\.domains key "a\.\.example" is not a domain name/);
  assert.throws(() => parseConfig({ dkim: { domains: { "a.example": [key("s1"), key("S1")] } } }), /names selector "s1" twice/);
  assert.throws(() => parseConfig({ dkim: { domains: { "a.example": [key("s1")] }, headers: ["To", "Subject"] } }), /dkim\.headers must include From/);
});

test("a node whose DKIM key file is missing stops at start naming the domain, selector and file (exit 78)", async () => {
  const dir = await makeDataDir();
  const path = join(dir, "config.json");
  const keyFile = join(dir, "missing.pem");
  await writeFile(
    path,
    JSON.stringify({ dataDir: dir, cluster: uniqueCluster(), listen: { smtp: 0, smtps: 0, pop3: 0, http: 0 }, dkim: { domains: { "example.test": [{ selector: "s2026", algorithm: "rsa-sha256", keyFile }] } } }),
  );
  const result = await new Promise<{ code: number; stderr: string }>((resolve) => {
    const child = spawn(process.execPath, [...ternCli, "node", "--config", path], { cwd: projectRoot, stdio: ["ignore", "ignore", "pipe"] });
    let stderr = "";
    child.stderr.on("data", (c: Buffer) => (stderr += c.toString()));
    child.once("exit", (code) => resolve({ code: code ?? -1, stderr }));
  });
  assert.equal(result.code, 78, result.stderr);
  assert.match(result.stderr, /invalid config: dkim\.domains\["example\.test"\] selector "s2026", key file .*missing\.pem: cannot be read/);
  await removeDataDir(dir);
});
