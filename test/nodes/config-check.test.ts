// What a config must get right beyond its schema, and `tern config check`: contradicting
// values refused when parsed, unreadable files and ports in use found before a start,
// environment overrides named when bad, IPv6 DNS servers accepted.
import { test } from "node:test";
import assert from "node:assert/strict";
import { writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import { join } from "node:path";
import { parseConfig } from "../../nodes/config.ts";
import { machineProblems } from "../../nodes/config-check.ts";
import { makeDataDir, projectRoot, removeDataDir, run, ternCli } from "../support/tern-node.ts";

test("contradicting values are refused with their paths", () => {
  assert.throws(() => parseConfig({ tls: { certFile: "/etc/tern/cert.pem" } }), /tls\.certFile is set without tls\.keyFile/);
  assert.throws(() => parseConfig({ nats: { tls: { keyFile: "/k.pem" } } }), /nats\.tls\.keyFile is set without nats\.tls\.certFile/);
  assert.throws(() => parseConfig({ delivery: { retryBaseMs: 5_000, retryMaxMs: 1_000 } }), /delivery\.retryBaseMs \(5000\) is more than delivery\.retryMaxMs \(1000\)/);
  assert.throws(() => parseConfig({ hostname: "not a host" }), /hostname = "not a host": expected a host name/);
  assert.throws(() => parseConfig({ listen: { host: "bad host!" } }), /listen\.host = "bad host!": expected an IP address or a host name/);
  assert.doesNotThrow(() => parseConfig({ listen: { host: "::" }, hostname: "mx1.example.org" }));
});

test("IPv6 DNS servers are accepted in brackets; a bare IPv6 address is not a host:port", () => {
  const config = parseConfig({ dns: { servers: ["[2001:db8::53]:53", "192.0.2.53:5353"] } });
  assert.deepEqual(config.dns.servers, [{ host: "2001:db8::53", port: 53 }, { host: "192.0.2.53", port: 5353 }]);
  assert.throws(() => parseConfig({ dns: { servers: ["2001:db8::53"] } }), /dns\.servers\[0\] = "2001:db8::53": expected host:port/);
});

test("a bad environment override names its variable and value", () => {
  assert.throws(() => parseConfig({}, { TERN_SMTP_PORT: "abc" }), /listen\.smtp = null \(from TERN_SMTP_PORT="abc"\)/);
});

test("files that cannot be read and ports in use are found before a start", async () => {
  const dir = await makeDataDir();
  const busy = createServer();
  await new Promise<void>((resolve) => busy.listen({ host: "127.0.0.1", port: 0 }, resolve));
  try {
    const port = (busy.address() as { port: number }).port;
    await writeFile(join(dir, "cert.pem"), "x");
    const config = parseConfig({ tls: { certFile: join(dir, "cert.pem"), keyFile: join(dir, "missing.pem") }, listen: { smtp: port, smtps: 0, pop3: 0, imap: 0, imaps: 0, http: 0 } });
    assert.deepEqual(await machineProblems(config), [
      `tls.keyFile = ${JSON.stringify(join(dir, "missing.pem"))}: cannot be read (ENOENT)`,
      `listen.smtp = ${port}: cannot listen on 127.0.0.1 port ${port} (in use)`,
    ]);
  } finally {
    busy.close();
    await removeDataDir(dir);
  }
});

test("the HTTP endpoint's own address (http.listen) is checked where it listens", async () => {
  const busy = createServer();
  await new Promise<void>((resolve) => busy.listen({ host: "127.0.0.1", port: 0 }, resolve));
  try {
    const port = (busy.address() as { port: number }).port;
    const mail = { smtp: 0, smtps: 0, pop3: 0, imap: 0, imaps: 0 };
    assert.deepEqual(await machineProblems(parseConfig({ listen: { ...mail, http: port } })), [`listen.http = ${port}: cannot listen on 127.0.0.1 port ${port} (in use)`]);
    assert.deepEqual(await machineProblems(parseConfig({ listen: { ...mail, http: port }, http: { listen: "127.0.0.1:0" } })), [], "listen.http is not used then");
    assert.deepEqual(await machineProblems(parseConfig({ listen: { ...mail, http: 0 }, http: { listen: `127.0.0.1:${port}` } })), [
      `http.listen = "127.0.0.1:${port}": cannot listen on 127.0.0.1 port ${port} (in use)`,
    ]);
  } finally {
    busy.close();
  }
});

test("tern config check: 0 for a config a node would start with, 78 with every problem for one it would not", async () => {
  const dir = await makeDataDir();
  try {
    const cli = (...args: string[]) => run(process.execPath, [...ternCli, "config", "check", ...args]);
    await writeFile(join(dir, "good.json"), JSON.stringify({ nodeId: "n1", cluster: "c1", listen: { smtp: 0, smtps: 0, pop3: 0, imap: 0, imaps: 0, http: 0 } }));
    const good = await cli(join(dir, "good.json"));
    assert.equal(good.code, 0, good.stderr);
    assert.match(good.stdout, /good\.json: ok \(node n1, cluster c1\)/);

    await writeFile(join(dir, "bad.json"), JSON.stringify({ delivery: { retryBaseMs: 9_000, retryMaxMs: 10 }, tls: { certFile: "/x.pem" } }));
    const bad = await cli(join(dir, "bad.json"));
    assert.equal(bad.code, 78);
    assert.match(bad.stderr, /tls\.certFile is set without tls\.keyFile/);
    assert.match(bad.stderr, /delivery\.retryBaseMs \(9000\) is more than delivery\.retryMaxMs \(10\)/);

    await writeFile(join(dir, "typo.json"), JSON.stringify({ listen: { smtp: "25" } }));
    const typo = await cli(join(dir, "typo.json"));
    assert.equal(typo.code, 78);
    assert.match(typo.stderr, /listen\.smtp = "25"/);

    assert.equal((await cli()).code, 2, "no file: usage");
  } finally {
    await removeDataDir(dir);
  }
});
