// A node's NATS link logs in the way the server demands: user and password, token, nkey,
// TLS with a client certificate. Each against a real nats-server of its own; secrets come
// from files or the environment, and a refusal says why.
import { after, test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createAccount, createOperator, createUser } from "@nats-io/nkeys";
import { encodeAccount, encodeOperator, encodeUser, fmtCreds } from "@nats-io/jwt";
import { linkToNats, NatsUnavailable } from "../../cluster/nats.ts";
import type { NatsSecurity } from "../../cluster/nats-auth.ts";
import { makeSubjects } from "../../protocol/subjects.ts";
import { spawnNatsServer } from "../support/spawn-nats-server.ts";

const cleanups: Array<() => Promise<void>> = [];
after(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

const workDir = async () => {
  const dir = await mkdtemp(join(tmpdir(), "tern-nats-link-"));
  cleanups.push(() => rm(dir, { recursive: true, force: true }));
  return dir;
};

/** Starts nats-server with `config` (a config-file body without `listen`) on a free port. */
const natsServer = async (config: string) => {
  const server = await spawnNatsServer({ config });
  cleanups.push(server.dispose);
  return server.port;
};

const subjects = makeSubjects("linktest");

const link = (servers: string[], security: NatsSecurity) =>
  linkToNats({ servers, security, embedded: false, dataDir: "/nonexistent", clientName: "link-test", subjects, inboxPrefix: subjects.nodeInbox("n1") });

/** A request/reply round trip over the link, so "connected" means usable. */
const roundTrip = async (security: NatsSecurity, port: number, scheme = "nats") => {
  const { nc, close } = await link([`${scheme}://127.0.0.1:${port}`], security);
  try {
    const sub = nc.subscribe(`${subjects.nodeInbox("n1")}.echo`, { callback: (_e, msg) => void msg.respond(msg.data) });
    const reply = await nc.request(`${subjects.nodeInbox("n1")}.echo`, "ping", { timeout: 2_000 });
    sub.unsubscribe();
    return reply.string();
  } finally {
    await close();
  }
};

test("user and password: the password is read from a file (its trailing newline is not part of it)", async () => {
  const dir = await workDir();
  const port = await natsServer(`authorization { users: [ { user: "n", password: "s3cret" } ] }`);
  await writeFile(join(dir, "password"), "s3cret\n", { mode: 0o600 });
  assert.equal(await roundTrip({ auth: { kind: "user", user: "n", password: { file: join(dir, "password") } }, tls: undefined }, port), "ping");

  await writeFile(join(dir, "wrong"), "guess\n");
  await assert.rejects(
    link([`nats://127.0.0.1:${port}`], { auth: { kind: "user", user: "n", password: { file: join(dir, "wrong") } }, tls: undefined }),
    (error: Error) => error instanceof NatsUnavailable && /Authorization Violation/.test(error.message) && !error.message.includes("guess"),
  );
});

test("token from the environment; a missing variable is reported by name, not guessed", async () => {
  const dir = await workDir();
  const port = await natsServer(`authorization { token: "tok-123" }`);
  process.env.TERN_TEST_NATS_TOKEN = "tok-123";
  try {
    assert.equal(await roundTrip({ auth: { kind: "token", token: { env: "TERN_TEST_NATS_TOKEN" } }, tls: undefined }, port), "ping");
  } finally {
    delete process.env.TERN_TEST_NATS_TOKEN;
  }
  await assert.rejects(
    link([`nats://127.0.0.1:${port}`], { auth: { kind: "token", token: { env: "TERN_TEST_NATS_TOKEN" } }, tls: undefined }),
    /environment variable TERN_TEST_NATS_TOKEN is empty/,
  );
});

test("nkey: the node signs the server's challenge with the seed from a file", async () => {
  const dir = await workDir();
  const user = createUser();
  const port = await natsServer(`authorization { users: [ { nkey: "${user.getPublicKey()}" } ] }`);
  await writeFile(join(dir, "seed"), new TextDecoder().decode(user.getSeed()), { mode: 0o600 });
  assert.equal(await roundTrip({ auth: { kind: "nkey", seed: { file: join(dir, "seed") } }, tls: undefined }, port), "ping");

  const stranger = createUser();
  await writeFile(join(dir, "other-seed"), new TextDecoder().decode(stranger.getSeed()));
  await assert.rejects(link([`nats://127.0.0.1:${port}`], { auth: { kind: "nkey", seed: { file: join(dir, "other-seed") } }, tls: undefined }), NatsUnavailable);
});

test("creds file: a user JWT signed by its account, in the decentralised (operator) mode", async () => {
  const dir = await workDir();
  const operator = createOperator();
  const account = createAccount();
  const user = createUser();
  const operatorJwt = await encodeOperator("test-operator", operator);
  const unlimited = { subs: -1, data: -1, payload: -1 };
  const accountJwt = await encodeAccount("tern", account, { limits: { ...unlimited, conn: -1, leaf: -1, imports: -1, exports: -1, wildcards: true } }, { signer: operator });
  const userJwt = await encodeUser("tern-node", user, account, unlimited);
  const port = await natsServer(
    `operator: "${operatorJwt}"\nresolver: MEMORY\nresolver_preload: { ${account.getPublicKey()}: "${accountJwt}" }`,
  );
  await writeFile(join(dir, "node.creds"), fmtCreds(userJwt, user), { mode: 0o600 });
  assert.equal(await roundTrip({ auth: { kind: "creds", file: join(dir, "node.creds") }, tls: undefined }, port), "ping");
  await assert.rejects(
    link([`nats://127.0.0.1:${port}`], { auth: { kind: "creds", file: join(dir, "missing.creds") }, tls: undefined }),
    /cannot read the NATS creds file .*missing\.creds/,
  );
});

test("TLS: the server is verified against the configured CA and the node presents its client certificate", async () => {
  const dir = await workDir();
  const ssl = (...args: string[]) => execFileSync("openssl", args, { cwd: dir, stdio: "ignore" });
  ssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=Test CA");
  const issue = (name: string, ext: string) => {
    ssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", `${name}.key`, "-out", `${name}.csr`, "-subj", `/CN=${name}`);
    execFileSync("sh", ["-c", `printf '${ext}' > ${name}.ext`], { cwd: dir });
    ssl("x509", "-req", "-in", `${name}.csr`, "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out", `${name}.pem`, "-days", "2", "-extfile", `${name}.ext`);
  };
  issue("server", "subjectAltName=IP:127.0.0.1,DNS:localhost\\n");
  issue("client", "extendedKeyUsage=clientAuth\\n");
  const port = await natsServer(
    `tls { cert_file: "${join(dir, "server.pem")}", key_file: "${join(dir, "server.key")}", ca_file: "${join(dir, "ca.pem")}", verify: true }`,
  );
  const tls = { caFile: join(dir, "ca.pem"), certFile: join(dir, "client.pem"), keyFile: join(dir, "client.key") };
  assert.equal(await roundTrip({ auth: { kind: "none" }, tls }, port, "tls"), "ping");
  // Without the client certificate the server refuses; without the CA the node refuses the server.
  await assert.rejects(link([`tls://127.0.0.1:${port}`], { auth: { kind: "none" }, tls: { caFile: tls.caFile } }), NatsUnavailable);
  await assert.rejects(link([`tls://127.0.0.1:${port}`], { auth: { kind: "none" }, tls: { certFile: tls.certFile, keyFile: tls.keyFile } }), NatsUnavailable);
});
