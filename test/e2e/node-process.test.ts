// The node process as a user runs it: config errors, NATS missing, the embedded
// nats-server default, and a graceful stop.
import { test } from "node:test";
import assert from "node:assert/strict";
import { findFreePort } from "../support/dnsmasq.ts";
import { createConnection } from "node:net";
import { readFile, stat, writeFile } from "node:fs/promises";
import { connect } from "@nats-io/transport-node";
import { join } from "node:path";
import { makeDataDir, projectRoot, removeDataDir, run, startTernNode, uniqueCluster, ternCli } from "../support/tern-node.ts";

const tern = (args: string[], env: Record<string, string> = {}) =>
  new Promise<{ code: number; stderr: string }>((resolve) => {
    import("node:child_process").then(({ spawn }) => {
      const child = spawn(process.execPath, [...ternCli, ...args], {
        cwd: projectRoot,
        env: { ...process.env, ...env },
        stdio: ["ignore", "ignore", "pipe"],
      });
      let stderr = "";
      child.stderr.on("data", (c: Buffer) => (stderr += c.toString()));
      child.once("exit", (code) => resolve({ code: code ?? -1, stderr }));
    });
  });


const portAnswers = (port: number) =>
  new Promise<boolean>((resolve) => {
    const socket = createConnection({ host: "127.0.0.1", port });
    socket.once("connect", () => (socket.destroy(), resolve(true)));
    socket.once("error", () => resolve(false));
  });

test("a bad config file stops the node at start with the field and value named (exit 78)", async () => {
  const dir = await makeDataDir();
  const path = join(dir, "bad.json");
  await writeFile(path, JSON.stringify({ listen: { pop3: "110" } }));
  const result = await tern(["node", "--config", path]);
  assert.equal(result.code, 78);
  assert.match(result.stderr, /^tern: invalid config:\n {2}listen\.pop3 = "110": Expected number/);
  await removeDataDir(dir);
});

test("with no NATS and no embedded server, one line says how to get one", async () => {
  const dir = await makeDataDir();
  const path = join(dir, "config.json");
  const port = await findFreePort();
  await writeFile(path, JSON.stringify({ dataDir: dir, nats: { servers: [`nats://127.0.0.1:${port}`], embedded: false } }));
  const result = await tern(["node", "--config", path]);
  assert.equal(result.code, 78);
  assert.equal(result.stderr.trim().split("\n").length, 1);
  assert.match(result.stderr, /no NATS server lets this node in at nats:\/\/127\.0\.0\.1:\d+ \(.+\); check nats credentials and TLS, or install a server \(apt-get install nats-server\) or set TERN_NATS_URL/);
  await removeDataDir(dir);
});

test("when nothing answers, the node starts nats-server itself, works, and stops it on SIGTERM", async () => {
  const dataDir = await makeDataDir();
  const natsPort = await findFreePort();
  const node = await startTernNode({
    nodeId: "embedded",
    cluster: uniqueCluster(),
    dataDir,
    nats: { servers: [`nats://127.0.0.1:${natsPort}`], embedded: true },
    localDomains: ["example.test"],
    users: [{ address: "me@example.test", password: "pw" }],
  });
  assert.equal(node.events("nats.embedded.started").length, 1);
  assert.equal(await portAnswers(natsPort), true);

  const sent = await run("swaks", ["--server", `127.0.0.1:${node.ports.smtp}`, "--to", "me@example.test", "--from", "x@y.test", "--body", "via embedded nats"]);
  assert.equal(sent.code, 0, sent.stdout);
  await node.waitForEvent("recipient.delivered", { recipient: "me@example.test" });
  const listed = await run("curl", ["-s", `pop3://me%40example.test:pw@127.0.0.1:${node.ports.pop3}/1`]);
  assert.match(listed.stdout, /via embedded nats/);

  // The embedded server is locked down like a production one: anonymous clients are refused,
  // the generated credentials are readable by their owner only, and tern queue finds its own.
  await assert.rejects(connect({ servers: [`nats://127.0.0.1:${natsPort}`], reconnect: false }), /Authorization Violation/);
  assert.equal((await stat(join(dataDir, "nats", "node.password"))).mode & 0o777, 0o600);
  const queue = await run(process.execPath, [...ternCli, "queue", "--config", join(dataDir, "config-embedded.json"), "shape"]);
  assert.equal(queue.code, 0, queue.stdout + queue.stderr);

  await node.kill("SIGTERM");
  assert.equal(node.events("node.stopped").length, 1, node.logs());
  assert.equal(await portAnswers(node.ports.smtp), false);
  // nats-server takes a moment to exit after SIGTERM
  let natsGone = false;
  for (let i = 0; i < 50 && !natsGone; i++) {
    natsGone = !(await portAnswers(natsPort));
    if (!natsGone) await new Promise((r) => setTimeout(r, 100));
  }
  assert.equal(natsGone, true, "the embedded nats-server was left running");
  await removeDataDir(dataDir);
});

test("tern user add on a missing file creates a config the node starts with, and names the domain to add to an existing one", async () => {
  const dataDir = await makeDataDir();
  const configPath = join(dataDir, "tern.json");
  const cli = (args: string[], stdin: string) => run(process.execPath, [...ternCli, ...args], stdin);
  const added = await cli(["user", "add", "--config", configPath, "alice@example.org", "--home", "node1"], "a long secret\n");
  assert.equal(added.code, 0, added.stderr);
  assert.match(added.stderr, /created .*tern\.json/);
  const saved = JSON.parse(await readFile(configPath, "utf8"));
  assert.deepEqual(saved.localDomains, ["example.org"]);
  assert.equal(saved.nats.embedded, true);

  const node = await startTernNode({ ...saved, nodeId: "node1", cluster: uniqueCluster(), dataDir });
  const login = await run("python3", ["-c", `
import smtplib, ssl
s = smtplib.SMTP("127.0.0.1", ${node.ports.smtp}, timeout=10)
s.starttls(context=ssl._create_unverified_context())
s.login("alice@example.org", "a long secret"); print("ok")
s.close()`]);
  assert.equal(login.stdout.trim(), "ok", login.stderr);
  await node.kill("SIGTERM");

  // A second user of another domain in the same file: refused, naming what to add; the file is unchanged.
  const refused = await cli(["user", "add", "--config", configPath, "bob@other.test"], "secret two\n");
  assert.equal(refused.code, 78);
  assert.match(refused.stderr, /add "other\.test" to localDomains/);
  assert.deepEqual(JSON.parse(await readFile(configPath, "utf8")), saved);
  await removeDataDir(dataDir);
});

test("tern user add stores an scrypt hash that SMTP AUTH then accepts", async () => {
  const dataDir = await makeDataDir();
  const configPath = join(dataDir, "users.json");
  await writeFile(configPath, JSON.stringify({ localDomains: ["example.test"], users: [] }));
  const added = await run(process.execPath, [...ternCli, "user", "add", "--config", configPath, "carol@example.test"], "correct horse\n");
  assert.equal(added.code, 0, added.stderr);
  const saved = JSON.parse(await import("node:fs/promises").then((fs) => fs.readFile(configPath, "utf8")));
  assert.match(saved.users[0].passwordHash, /^scrypt\$16384\$8\$1\$/);
  assert.equal(JSON.stringify(saved).includes("correct horse"), false);

  const node = await startTernNode({ ...saved, nodeId: "users", cluster: uniqueCluster(), dataDir });
  const login = (password: string) =>
    run("python3", ["-c", `
import smtplib, ssl
s = smtplib.SMTP("127.0.0.1", ${node.ports.smtp}, timeout=10)
s.starttls(context=ssl._create_unverified_context())
try:
    s.login("carol@example.test", ${JSON.stringify(password)}); print("ok")
except smtplib.SMTPAuthenticationError as e:
    print(e.smtp_code)
s.close()`]);
  assert.equal((await login("correct horse")).stdout.trim(), "ok");
  assert.equal((await login("wrong horse")).stdout.trim(), "535");
  await node.kill("SIGTERM");
  await removeDataDir(dataDir);
});
