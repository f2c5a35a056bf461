// IP pools (issue 16): one node with several loopback source addresses in two pools. The
// receiving host (a scripted SMTP server on 127.0.0.1) sees each message come from the
// address, and with the EHLO name, that its pool rule demands: sender domain, the
// authenticated user, a header, the API's `pool` field, else the default pool.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { connectTern, TernApiError, type TernClient } from "../../cluster/client.ts";
import { startDnsmasq, type RunningDnsmasq } from "../support/dnsmasq.ts";
import { startScriptedSmtp, type ScriptedServer, type Transaction } from "../support/scripted-smtp.ts";
import { eventually, makeDataDir, removeDataDir, run, startTernNode, uniqueCluster, type TernNode } from "../support/tern-node.ts";

const cluster = uniqueCluster();
let dns: RunningDnsmasq;
let sink: ScriptedServer;
let node: TernNode;
let dataDir: string;
let tern: TernClient;

const BULK = { address: "127.0.0.2", ehlo: "bulk.tern.test" };
const TX = [
  { address: "127.0.0.3", ehlo: "tx1.tern.test" },
  { address: "127.0.0.4", ehlo: "tx2.tern.test" },
];

before(async () => {
  sink = await startScriptedSmtp({});
  dns = await startDnsmasq({ mx: [{ domain: "remote.test", host: "mx.remote.test", preference: 10 }], hosts: [{ name: "mx.remote.test", address: "127.0.0.1" }] });
  dataDir = await makeDataDir();
  node = await startTernNode({
    nodeId: "a",
    cluster,
    dataDir,
    localDomains: ["example.test"],
    users: [{ address: "alice@example.test", password: "alice-secret" }],
    trustedNetworks: ["127.0.0.0/8"],
    dns: { servers: [`${dns.host}:${dns.port}`], timeoutMs: 1000, tries: 2, allowedTargetNetworks: ["127.0.0.0/8"] },
    delivery: {
      remotePort: sink.port,
      retryBaseMs: 200,
      retryMaxMs: 1000,
      pollMs: 50,
      pools: { bulk: [BULK], tx: TX.map((source) => ({ ...source, weight: 1 })) },
      poolRules: [
        { senderDomain: ".news.example.org", pool: "bulk" },
        { user: "alice@example.test", pool: "tx" },
        { header: "X-Campaign", value: "spring", pool: "bulk" },
      ],
      defaultPool: "tx",
    },
  });
  tern = await connectTern({ cluster });
});

after(async () => {
  await tern?.close();
  await node?.kill("SIGTERM");
  await Promise.all([sink?.close(), dns?.stop(), removeDataDir(dataDir)]);
});

const swaks = (args: string[]) => run("swaks", ["--server", "127.0.0.1", "--port", String(node.ports.smtp), ...args]);

/** The transaction that carried the message whose Subject is `subject`. */
const arrived = (subject: string): Promise<Transaction> =>
  eventually(() => sink.accepted.find((mail) => mail.body.toString("latin1").includes(`Subject: ${subject}\r\n`)), 15_000, `"${subject}" at the receiving host`);

const from = (mail: Transaction) => ({ address: mail.client.address, ehlo: mail.client.ehlo });

test("each message leaves from an address of the pool its rule names, greeting with that address's name", async () => {
  const sends = {
    "by sender domain": ["--from", "letters@mail.news.example.org", "--to", "r1@remote.test"],
    "by header": ["--from", "shop@elsewhere.test", "--to", "r2@remote.test", "--add-header", "X-Campaign: spring"],
    "by default": ["--from", "shop@elsewhere.test", "--to", "r3@remote.test"],
    "by user": ["--from", "alice@example.test", "--to", "r4@remote.test", "--tls", "--auth", "PLAIN", "--auth-user", "alice@example.test", "--auth-password", "alice-secret"],
  } as const;
  for (const [subject, args] of Object.entries(sends)) {
    const sent = await swaks([...args, "--header", `Subject: ${subject}`]);
    assert.equal(sent.code, 0, sent.stdout + sent.stderr);
  }
  assert.deepEqual(from(await arrived("by sender domain")), BULK);
  // The delivery log names the source address of each attempt.
  const delivered = await node.waitForEvent("recipient.delivered", { recipient: "r1@remote.test" });
  assert.equal(delivered.source, BULK.address);
  assert.deepEqual(from(await arrived("by header")), BULK);
  for (const subject of ["by default", "by user"]) {
    const mail = await arrived(subject);
    assert.ok(TX.some((source) => source.address === mail.client.address && source.ehlo === mail.client.ehlo), `${subject}: ${JSON.stringify(from(mail))}`);
  }
});

test("a pool's addresses share its mail by weight", async () => {
  for (let n = 0; n < 20; n++) {
    const sent = await swaks(["--from", "shop@elsewhere.test", "--to", `w${n}@remote.test`, "--header", `Subject: weighted ${n}`]);
    assert.equal(sent.code, 0, sent.stdout + sent.stderr);
  }
  const used = new Set<string>();
  for (let n = 0; n < 20; n++) used.add((await arrived(`weighted ${n}`)).client.address);
  assert.deepEqual([...used].sort(), TX.map((source) => source.address), "both addresses of the tx pool sent some of 20 messages");
});

test("the API's pool field chooses the pool; a pool the node does not have is a BadRequest", async () => {
  await tern.submit({ from: "app@example.test", to: "api@remote.test", subject: "by api", text: "hello" }, { pool: "bulk" });
  assert.deepEqual(from(await arrived("by api")), BULK);
  await assert.rejects(
    tern.submit({ from: "app@example.test", to: "api@remote.test", subject: "nowhere", text: "hello" }, { pool: "nowhere" }),
    (error: unknown) => error instanceof TernApiError && error.code === "BadRequest" && /no IP pool "nowhere"/.test(error.message),
  );
});
