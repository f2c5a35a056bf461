// Two node processes of one cluster on the shared NATS: mail for bob (home "b") sent to
// node A is stored on B, readable over POP3 on either node; with B killed, A accepts and
// keeps new mail queued and its POP3 answers [SYS/TEMP]; once B is back the queue drains.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import nodemailer from "nodemailer";
import { makeSubjects } from "../../protocol/subjects.ts";
import { eventually, makeDataDir, readMetric, removeDataDir, run, startTernNode, uniqueCluster, type TernNode } from "../support/tern-node.ts";

const cluster = uniqueCluster();
const users = [
  { address: "alice@example.test", password: "alice-pw", home: "a" },
  { address: "bob@example.test", password: "bob-pw", home: "b" },
];
const common = { cluster, localDomains: ["example.test"], users };
const configA = () => ({ ...common, nodeId: "a", dataDir: dirA, delivery: { retryBaseMs: 200, retryMaxMs: 1000, pollMs: 50 } });
const configB = () => ({ ...common, nodeId: "b", dataDir: dirB });

let dirA: string;
let dirB: string;
let nodeA: TernNode | undefined;
let nodeB: TernNode | undefined;
let nc: NatsConnection | undefined;

before(async () => {
  dirA = await makeDataDir();
  dirB = await makeDataDir();
  // Both up before any mail: bob's mailbox is claimed by B when B starts.
  [nodeA, nodeB] = await Promise.all([startTernNode(configA()), startTernNode(configB())]);
  nc = await connect({ servers: ["nats://127.0.0.1:4222"], name: "tern-test-two-nodes" });
});

after(async () => {
  await nc?.close();
  await Promise.all([nodeA?.kill("SIGTERM"), nodeB?.kill("SIGTERM")]);
  await Promise.all([removeDataDir(dirA), removeDataDir(dirB)]);
});

const messageFor = (tag: string) =>
  [
    "From: Sender <sender@elsewhere.test>",
    "To: Bob <bob@example.test>",
    `Subject: two nodes ${tag}`,
    `Message-ID: <${tag}@elsewhere.test>`,
    "",
    `Body of ${tag}.`,
    ".a line that starts with a dot",
    "..and one with two",
    "",
    "8-bit: café ☃, trailing spaces   ",
    "",
  ].join("\r\n");

/** Sends `raw` to a node's SMTP port with nodemailer; returns the queue id from the 250 reply. */
const send = async (node: TernNode, to: string, raw: string) => {
  const transport = nodemailer.createTransport({ host: "127.0.0.1", port: node.ports.smtp, secure: false, ignoreTLS: true });
  try {
    const info = await transport.sendMail({ envelope: { from: "sender@elsewhere.test", to }, raw });
    assert.deepEqual(info.accepted, [to]);
    assert.deepEqual(info.rejected, []);
    const id = /^250 2\.0\.0 Ok: queued as ([0-9A-Za-z]+)$/.exec(info.response)?.[1];
    assert.ok(id, `no queue id in: ${info.response}`);
    return id;
  } finally {
    transport.close();
  }
};

interface Popped {
  /** Size given by LIST. */
  readonly listed: number;
  /** Octets poplib counted while reading RETR (dot-unstuffed, CRLFs included). */
  readonly octets: number;
  readonly bytes: Buffer;
}

const popScript = `
import poplib, json, sys, base64
port, user, password = int(sys.argv[1]), sys.argv[2], sys.argv[3]
p = poplib.POP3("127.0.0.1", port, timeout=20)
try:
    p.user(user)
    p.pass_(password)
except poplib.error_proto as e:
    print(json.dumps({"error": e.args[0].decode("latin-1")}))
    sys.exit(0)
resp, listing, _ = p.list()
sizes = [tuple(int(x) for x in line.split()) for line in listing]
out = []
for n, size in sizes:
    resp, lines, octets = p.retr(n)
    out.append({"n": n, "listed": size, "octets": octets, "b64": base64.b64encode(b"".join(l + b"\\r\\n" for l in lines)).decode()})
p.quit()
print(json.dumps({"messages": out}))
`;

const pop = async (node: TernNode, user: string, password: string): Promise<{ messages: Popped[] } | { error: string }> => {
  const result = await run("python3", ["-c", popScript, String(node.ports.pop3), user, password]);
  assert.equal(result.code, 0, result.stderr);
  const parsed = JSON.parse(result.stdout) as { error: string } | { messages: Array<{ n: number; listed: number; octets: number; b64: string }> };
  if ("error" in parsed) return parsed;
  parsed.messages.forEach((m, i) => assert.equal(m.n, i + 1, "LIST numbers messages from 1"));
  return { messages: parsed.messages.map((m) => ({ listed: m.listed, octets: m.octets, bytes: Buffer.from(m.b64, "base64") })) };
};

const popMessages = async (node: TernNode, user: string, password: string) => {
  const result = await pop(node, user, password);
  assert.ok("messages" in result, `POP3 login for ${user} failed: ${JSON.stringify(result)}`);
  return result.messages;
};

/** The stored message is Return-Path and Delivered-To, one Received header (naming the queue id), then exactly what was sent. */
const assertStored = (message: Popped, queueId: string, raw: string) => {
  const text = message.bytes.toString("latin1");
  const final = /^Return-Path: <[^>\r\n]*>\r\nDelivered-To: [^\r\n]+\r\n/.exec(text)?.[0];
  assert.ok(final, `no Return-Path and Delivered-To in front: ${JSON.stringify(text.slice(0, 200))}`);
  const received = /^Received: [^\r\n]*(?:\r\n[ \t][^\r\n]*)*\r\n/.exec(text.slice(final.length))?.[0];
  assert.ok(received, `no Received header after them: ${JSON.stringify(text.slice(0, 200))}`);
  assert.match(received, new RegExp(`\\(Tern\\) with ESMTP id ${queueId}[;\\r]`));
  assert.equal(message.bytes.subarray(Buffer.byteLength(final + received, "latin1")).toString("hex"), Buffer.from(raw, "utf8").toString("hex"), "body bytes differ");
  assert.equal(message.listed, message.bytes.length, "LIST size is not the exact size of the message");
  assert.equal(message.octets, message.bytes.length);
};

const isNoResponders = (error: unknown): boolean =>
  error instanceof Error && (error.name === "NoResponders" || isNoResponders(error.cause));

const rawOne = messageFor("first");
const rawTwo = messageFor("second");
let firstId: string;

test("mail for bob sent to A is stored on B and readable over POP3 on both nodes", async () => {
  const a = nodeA!;
  const b = nodeB!;
  firstId = await send(a, "bob@example.test", rawOne);
  const delivered = await a.waitForEvent("recipient.delivered", { queueId: firstId });
  assert.equal(delivered.recipient, "bob@example.test");
  assert.equal(delivered.server, "mailbox/bob@example.test");
  assert.match(String(delivered.reply), /^2\.0\.0 stored as uid \S+$/);

  const onB = await popMessages(b, "bob@example.test", "bob-pw");
  assert.equal(onB.length, 1, "B holds exactly one message for bob");
  assertStored(onB[0]!, firstId, rawOne);

  const onA = await popMessages(a, "bob@example.test", "bob-pw");
  assert.equal(onA.length, 1);
  assertStored(onA[0]!, firstId, rawOne);
  assert.ok(onA[0]!.bytes.equals(onB[0]!.bytes), "A and B serve different bytes for the same message");

  // Routing is per user: nothing landed in alice's mailbox (on A).
  assert.deepEqual(await popMessages(a, "alice@example.test", "alice-pw"), []);
  assert.deepEqual(await popMessages(b, "alice@example.test", "alice-pw"), []);
  // Wrong password is refused (so a successful login above really checked credentials).
  const refused = await pop(a, "bob@example.test", "wrong");
  assert.ok("error" in refused && refused.error.startsWith("-ERR"), JSON.stringify(refused));
  assert.doesNotMatch("error" in refused ? refused.error : "", /SYS\/TEMP/);
});

test("with B killed, A accepts and defers bob's mail, POP3 on A answers [SYS/TEMP]; after B restarts nothing is lost", async () => {
  const a = nodeA!;
  assert.ok(firstId, "the first test must have run");
  await nodeB!.kill("SIGKILL");
  nodeB = undefined;
  // Wait until NATS has dropped B's subscriptions, so A's asks fail fast (no responders)
  // rather than waiting out their 30 s timeout.
  const bList = makeSubjects(cluster).mailbox("b", "list");
  await eventually(async () => {
    try {
      await nc!.request(bList, new Uint8Array(), { timeout: 1_000 });
      return undefined;
    } catch (error) {
      return isNoResponders(error) ? true : undefined;
    }
  }, 10_000, "B's mailbox subjects to lose their responder");

  const secondId = await send(a, "bob@example.test", rawTwo);
  assert.notEqual(secondId, firstId);
  const deferred = await a.waitForEvent("recipient.deferred", { queueId: secondId });
  assert.equal(deferred.recipient, "bob@example.test");
  assert.match(String(deferred.reply), /^4\.2\.0 mailbox of bob@example\.test unavailable: MailboxUnavailable: /);
  assert.equal(a.events("recipient.delivered").filter((e) => e.queueId === secondId).length, 0, "delivered while B is down");

  const whileDown = await pop(a, "bob@example.test", "bob-pw");
  assert.ok("error" in whileDown, `POP3 login on A succeeded with B down: ${JSON.stringify(whileDown)}`);
  assert.match(whileDown.error, /^-ERR \[SYS\/TEMP\] /);

  // Still queued: A keeps retrying (quickly, per its delivery config) and keeps deferring.
  await eventually(() => (a.events("recipient.deferred").filter((e) => e.queueId === secondId).length >= 2 ? true : undefined), 10_000, "a retry");
  assert.equal(a.events("recipient.delivered").filter((e) => e.queueId === secondId).length, 0);

  nodeB = await startTernNode(configB());
  const b = nodeB;
  const delivered = await a.waitForEvent("recipient.delivered", { queueId: secondId }, 20_000);
  assert.equal(delivered.recipient, "bob@example.test");

  const onB = await popMessages(b, "bob@example.test", "bob-pw");
  assert.equal(onB.length, 2, "B should hold both messages (the first survived SIGKILL, the second arrived after restart)");
  assertStored(onB[0]!, firstId, rawOne);
  assertStored(onB[1]!, secondId, rawTwo);

  const onA = await popMessages(a, "bob@example.test", "bob-pw");
  assert.equal(onA.length, 2);
  assertStored(onA[0]!, firstId, rawOne);
  assertStored(onA[1]!, secondId, rawTwo);

  // Delivered exactly once: one delivered event per message on A.
  assert.equal(a.events("recipient.delivered").filter((e) => e.queueId === secondId).length, 1);
  assert.equal(a.events("recipient.delivered").filter((e) => e.queueId === firstId).length, 1);
  // The queue on A has drained.
  await eventually(async () => ((await readMetric(a, "tern_queue_depth")) === 0 ? true : undefined), 5_000, "A's queue to drain");
});
