// The nats section of the node config: one way to log in, secrets only by reference (a
// file or an environment variable, never the value in the parsed config), and no mail
// across a plain-text link to a remote NATS unless the operator says the link is trusted.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { parseConfig } from "../../nodes/config.ts";
import { natsServerConfig } from "../../nodes/nats-config-command.ts";
import { natsServerBinary } from "../support/spawn-nats-server.ts";
import { projectRoot } from "../support/tern-node.ts";

test("credentials: a password file with its user, a token, an nkey seed or a creds file", () => {
  assert.deepEqual(parseConfig({ nats: { user: "n", passwordFile: "/etc/tern/nats" } }).nats.auth, { kind: "user", user: "n", password: { file: "/etc/tern/nats" } });
  assert.deepEqual(parseConfig({ nats: { tokenFile: "/t" } }).nats.auth, { kind: "token", token: { file: "/t" } });
  assert.deepEqual(parseConfig({ nats: { nkeySeedFile: "/s" } }).nats.auth, { kind: "nkey", seed: { file: "/s" } });
  assert.deepEqual(parseConfig({ nats: { credsFile: "/c.creds" } }).nats.auth, { kind: "creds", file: "/c.creds" });
  assert.deepEqual(parseConfig({}).nats.auth, { kind: "none" });
});

test("two ways to log in, or a user without a password, are config errors", () => {
  assert.throws(() => parseConfig({ nats: { tokenFile: "/t", credsFile: "/c" } }), /more than one way to authenticate \(token, creds file\)/);
  assert.throws(() => parseConfig({ nats: { user: "n" } }), /nats\.user needs nats\.passwordFile/);
  assert.throws(() => parseConfig({ nats: { passwordFile: "/p" } }), /nats\.user is required/);
  assert.throws(() => parseConfig({ nats: { password: "inline" } }), /password/);
});

test("secrets from the environment stay there: the parsed config names the variable, never the value", () => {
  const config = parseConfig({ nats: { tokenFile: "/t" } }, { TERN_NATS_USER: "node", TERN_NATS_PASSWORD: "hunter2-secret" });
  assert.deepEqual(config.nats.auth, { kind: "user", user: "node", password: { env: "TERN_NATS_PASSWORD" } });
  assert.equal(JSON.stringify(config).includes("hunter2-secret"), false);
  assert.deepEqual(parseConfig({}, { TERN_NATS_NKEY_SEED: "SUAxxx" }).nats.auth, { kind: "nkey", seed: { env: "TERN_NATS_NKEY_SEED" } });
  assert.deepEqual(parseConfig({}, { TERN_NATS_CREDS: "/x.creds" }).nats.auth, { kind: "creds", file: "/x.creds" });
});

test("a remote NATS in plain text is refused unless TLS is configured or the link is declared trusted", () => {
  assert.throws(() => parseConfig({ nats: { servers: ["nats://10.0.0.5:4222"] } }), /10\.0\.0\.5:4222 is neither loopback nor TLS.*nats\.tls.*nats\.trustedLink/);
  assert.doesNotThrow(() => parseConfig({ nats: { servers: ["nats://10.0.0.5:4222"], tls: { caFile: "/ca.pem" } } }));
  assert.doesNotThrow(() => parseConfig({ nats: { servers: ["tls://nats.example.org:4222"] } }));
  assert.doesNotThrow(() => parseConfig({ nats: { servers: ["nats://10.0.0.5:4222"], trustedLink: true } }));
  assert.doesNotThrow(() => parseConfig({ nats: { servers: ["nats://127.0.0.1:4222", "nats://localhost:4223"] } }));
});

test("docs/nats-server.conf is what tern nats-config --example prints, and nats-server accepts it", () => {
  const documented = readFileSync(join(projectRoot, "docs/nats-server.conf"), "utf8");
  assert.equal(documented, natsServerConfig({ cluster: "tern", listen: "0.0.0.0:4222", storeDir: "/var/lib/nats", example: true }));
  const checked = spawnSync(natsServerBinary(), ["-t", "-c", join(projectRoot, "docs/nats-server.conf")], { encoding: "utf8" });
  assert.equal(checked.status, 0, checked.stderr);
  assert.match(checked.stdout + checked.stderr, /is valid/);
});

test("a server URL with credentials in it is refused without echoing them", () => {
  assert.throws(
    () => parseConfig({}, { TERN_NATS_URL: "nats://node:hunter2@127.0.0.1:4222" }),
    (error: Error) => /carries credentials/.test(error.message) && !error.message.includes("hunter2"),
  );
});

test("nats.replicas sets the replicas of the KV buckets and the events stream; events.replicas still overrides the stream's", () => {
  assert.equal(parseConfig({}).nats.replicas, 1);
  assert.equal(parseConfig({}).events.replicas, 1);
  const clustered = parseConfig({ nats: { replicas: 3 } });
  assert.equal(clustered.nats.replicas, 3);
  assert.equal(clustered.events.replicas, 3);
  assert.equal(parseConfig({ nats: { replicas: 3 }, events: { replicas: 5 } }).events.replicas, 5);
  assert.equal(parseConfig({ events: { replicas: 3 } }).nats.replicas, 1);
  assert.throws(() => parseConfig({ nats: { replicas: 6 } }), /replicas/);
  assert.throws(() => parseConfig({ nats: { replicas: 0 } }), /replicas/);
});
