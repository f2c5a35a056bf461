import { test } from "node:test";
import assert from "node:assert/strict";
import { ConfigError, parseConfig } from "../../nodes/config.ts";

test("defaults give a one-node cluster on unprivileged loopback ports", () => {
  const config = parseConfig({});
  assert.equal(config.listen.host, "127.0.0.1");
  assert.deepEqual([config.listen.smtp, config.listen.pop3, config.listen.http], [2525, 1110, 9025]);
  assert.deepEqual(config.nats.servers, ["nats://127.0.0.1:4222"]);
  assert.equal(config.dataDir, "./data");
});

test("every bad field is named with the value found", () => {
  assert.throws(
    () => parseConfig({ listen: { smtp: 70000 }, users: [{ address: "nobody" }], colour: "blue" }),
    (error: unknown) => {
      assert.ok(error instanceof ConfigError);
      assert.match(error.message, /listen\.smtp = 70000: Expected a value between 0 and 65535/);
      assert.match(error.message, /users\[0\]\.address = "nobody": expected local@domain/);
      assert.match(error.message, /colour = "blue": Expected no excess property/);
      return true;
    },
  );
});

test("a user needs a password or a password hash", () => {
  assert.throws(() => parseConfig({ users: [{ address: "a@localhost" }] }), /users\[0\] = \{"address":"a@localhost"\}: needs password or passwordHash/);
  assert.throws(() => parseConfig({ users: [{ address: "a@localhost", passwordHash: "md5$x" }] }), /users\[0\]\.passwordHash = "md5\$x": expected scrypt/);
});

test("users must belong to a local domain", () => {
  assert.throws(
    () => parseConfig({ localDomains: ["a.test"], users: [{ address: "x@b.test", password: "p" }] }),
    /users\[\]\.address "x@b\.test" is not in localDomains/,
  );
});

test("environment overrides win over the file", () => {
  const config = parseConfig(
    { listen: { smtp: 2600, pop3: 1200 }, dataDir: "/from/file", nats: { trustedLink: true } },
    { TERN_SMTP_PORT: "2700", TERN_DATA_DIR: "/from/env", TERN_NATS_URL: "nats://a:1,nats://b:2" },
  );
  assert.equal(config.listen.smtp, 2700);
  assert.equal(config.listen.pop3, 1200);
  assert.equal(config.dataDir, "/from/env");
  assert.deepEqual(config.nats.servers, ["nats://a:1", "nats://b:2"]);
  assert.throws(() => parseConfig({}, { TERN_SMTP_PORT: "http" }), /invalid environment override/);
});

test("network lists must be CIDRs", () => {
  assert.deepEqual(parseConfig({ trustedNetworks: ["10.0.0.0/8", "2001:db8::/32", "192.0.2.1"] }).trustedNetworks, ["10.0.0.0/8", "2001:db8::/32", "192.0.2.1"]);
  assert.throws(() => parseConfig({ trustedNetworks: ["10.0.0.0/33"] }), /trustedNetworks\[0\] = "10\.0\.0\.0\/33"/);
  assert.throws(() => parseConfig({ dns: { allowedTargetNetworks: ["localhost"] } }), /dns\.allowedTargetNetworks\[0\] = "localhost"/);
});

test("the HTTP endpoint listens with the mail listeners unless http.listen gives it an address of its own", () => {
  assert.deepEqual(parseConfig({ listen: { host: "192.0.2.1", http: 9100 } }).http, { host: "192.0.2.1", port: 9100 });
  assert.deepEqual(parseConfig({ listen: { host: "192.0.2.1" }, http: { listen: "0.0.0.0:9200" } }).http, { host: "0.0.0.0", port: 9200 });
  assert.deepEqual(parseConfig({ http: { listen: "[::1]:9300" } }).http, { host: "::1", port: 9300 });
  assert.deepEqual(parseConfig({ http: { listen: "10.0.0.5:9200" } }, { TERN_HTTP_PORT: "9400" }).http, { host: "10.0.0.5", port: 9400 }, "TERN_HTTP_PORT still moves it");
  assert.throws(() => parseConfig({ http: { listen: "9200" } }), /http\.listen = "9200": expected host:port/);
  assert.throws(() => parseConfig({ http: { listen: "0.0.0.0:70000" } }), /http\.listen = "0\.0\.0\.0:70000": expected a port between 0 and 65535/);
  assert.equal(parseConfig({}).metrics.queueDestinations, 10);
  assert.equal(parseConfig({ metrics: { queueDestinations: 3 } }).metrics.queueDestinations, 3);
});

test("api.tenants refuses a reserved name: default, cluster (cluster events) and handoff (a drain's hand-off records)", () => {
  for (const name of ["default", "cluster", "handoff"]) {
    assert.throws(() => parseConfig({ api: { tenants: [{ name, senderDomains: [`${name}.example`] }] } }), /uses a reserved name \("default", "cluster", "handoff"\)/, name);
  }
  assert.equal(parseConfig({ api: { tenants: [{ name: "acme", senderDomains: ["acme.example"] }] } }).api.tenants[0]!.name, "acme");
});
