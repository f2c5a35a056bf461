// Two node processes on a nats-server of the test's own, which the test stops, restarts,
// and restarts with its JetStream store wiped. /readyz tells while NATS is away; a node
// recreates the lost ownership bucket and re-asserts the mailboxes it holds, so mail for
// alice sent through B still lands on A next to her older mail; and a KV entry rewritten
// by someone else (forged, or lost) does not take her mailbox away from A.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { Kvm } from "@nats-io/kv";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import nodemailer from "nodemailer";
import { makeSubjects } from "../../protocol/subjects.ts";
import { startNatsServer, type TestNatsServer } from "../support/nats-server.ts";
import { poplibFetch } from "../support/pop3.ts";
import { eventually, makeDataDir, removeDataDir, sleep, startTernNode, uniqueCluster, type TernNode } from "../support/tern-node.ts";

const cluster = uniqueCluster();
const subjects = makeSubjects(cluster);
const ALICE = "alice@example.test";
/** KV keys are the base64url of the lowercased address (cluster/ownership.ts). */
const aliceKey = Buffer.from(ALICE).toString("base64url");
/** A node trusts an owner it read from KV for 2 s; waiting longer makes it read the KV again. */
const OWNER_CACHE_MS = 2_000;

let nats: TestNatsServer;
let dirA: string;
let dirB: string;
let nodeA: TernNode | undefined;
let nodeB: TernNode | undefined;

const configOf = (nodeId: string, dataDir: string) => ({
  cluster,
  nodeId,
  dataDir,
  nats: { servers: [nats.url], embedded: false },
  localDomains: ["example.test"],
  // No home node: whichever node first gets mail for alice claims her mailbox.
  users: [{ address: ALICE, password: "alice-pw" }],
  mailbox: { askTimeoutMs: 3_000 },
  delivery: { retryBaseMs: 200, retryMaxMs: 1_000, pollMs: 50 },
});

before(async () => {
  nats = await startNatsServer();
  [dirA, dirB] = await Promise.all([makeDataDir(), makeDataDir()]);
  [nodeA, nodeB] = await Promise.all([startTernNode(configOf("a", dirA)), startTernNode(configOf("b", dirB))]);
});

after(async () => {
  await Promise.all([nodeA?.kill("SIGTERM"), nodeB?.kill("SIGTERM")]);
  await nats.dispose();
  await Promise.all([removeDataDir(dirA), removeDataDir(dirB)]);
});

const readyz = async (node: TernNode) => {
  const response = await fetch(`http://127.0.0.1:${node.ports.http}/readyz`);
  return { status: response.status, text: await response.text() };
};

/** Sends one message to alice through `node` and waits until that node delivered it. */
const sendToAlice = async (node: TernNode, subject: string) => {
  const transport = nodemailer.createTransport({ host: "127.0.0.1", port: node.ports.smtp, secure: false, ignoreTLS: true });
  try {
    const raw = `From: s@elsewhere.test\r\nTo: ${ALICE}\r\nSubject: ${subject}\r\n\r\nbody of ${subject}\r\n`;
    const info = await transport.sendMail({ envelope: { from: "s@elsewhere.test", to: ALICE }, raw });
    const id = /queued as ([0-9A-Za-z]+)/.exec(info.response)?.[1];
    assert.ok(id, `no queue id in: ${info.response}`);
    await node.waitForEvent("recipient.delivered", { queueId: id }, 30_000);
  } finally {
    transport.close();
  }
};

const subjectsInMailbox = async (node: TernNode) => {
  const result = await poplibFetch(node.ports.pop3, ALICE, "alice-pw");
  assert.ok("messages" in result, `POP3 login failed: ${JSON.stringify(result)}`);
  return result.messages.map((m) => /Subject: (.*)/.exec(m.head)?.[1]?.trim());
};

const withKv = async <A>(use: (kv: Awaited<ReturnType<Kvm["open"]>>) => Promise<A>): Promise<A> => {
  const nc: NatsConnection = await connect({ servers: [nats.url], name: "test-kv" });
  try {
    return await use(await new Kvm(nc).open(subjects.mailboxOwnersBucket));
  } finally {
    await nc.close();
  }
};

const kvOwnerOfAlice = () => withKv(async (kv) => (await kv.get(aliceKey))?.string());

test("/readyz says not ready while NATS is reconnecting, and ready again once it is back", { timeout: 60_000 }, async () => {
  assert.deepEqual(await readyz(nodeA!), { status: 200, text: "ready\n" });
  await nats.stop();
  const down = await eventually(async () => {
    const answer = await readyz(nodeA!);
    return answer.status === 503 ? answer : undefined;
  }, 10_000, "/readyz to fail");
  assert.match(down.text, /^not ready:\nnats: reconnecting/);
  await nats.restart();
  await eventually(async () => ((await readyz(nodeA!)).status === 200 ? true : undefined), 20_000, "/readyz to pass again");
  await eventually(async () => ((await readyz(nodeB!)).status === 200 ? true : undefined), 20_000, "/readyz of B to pass again");
});

test("JetStream loses its store: A recreates the bucket and re-asserts alice; mail sent through B joins her older mail on A", { timeout: 90_000 }, async () => {
  await sendToAlice(nodeA!, "before the loss");
  assert.equal(await kvOwnerOfAlice(), "a", "the first node to get mail for alice claims her mailbox");
  const generationsBefore = new Set(nodeA!.events("mailbox.owners.reasserted").map((e) => e.generation));

  await nats.restart({ wipe: true });
  // A notices on its own, within a few seconds, without any mail or POP3 asking.
  await eventually(
    () => nodeA!.events("mailbox.owners.reasserted").find((e) => !generationsBefore.has(e.generation) && e.failed === 0 && Number(e.mailboxes) >= 1),
    20_000,
    "A to re-assert its mailboxes into the recreated bucket",
  );
  assert.equal(await kvOwnerOfAlice(), "a");
  await eventually(async () => ((await readyz(nodeB!)).status === 200 ? true : undefined), 20_000, "B ready");

  await sendToAlice(nodeB!, "after the loss");
  assert.deepEqual(await subjectsInMailbox(nodeA!), ["before the loss", "after the loss"]);
  assert.deepEqual(await subjectsInMailbox(nodeB!), ["before the loss", "after the loss"], "B reads the same mailbox, on A");
});

test("a forged KV entry does not take alice's mailbox from A: A's record wins and the KV is put right", { timeout: 60_000 }, async () => {
  // The KV names B. A holds alice: it keeps delivering locally and re-asserts the KV.
  await withKv((kv) => kv.put(aliceKey, "b"));
  await sleep(OWNER_CACHE_MS + 200);
  await sendToAlice(nodeA!, "forged to b, sent to A");
  await nodeA!.waitForEvent("mailbox.owner.reasserted", { user: ALICE, kvOwner: "b", reason: "held here" });
  assert.equal(await kvOwnerOfAlice(), "a");

  // The KV names B again; now B gets the mail. B has no record of alice, so it does not
  // take the KV's word: it asks who holds her, A answers (and re-asserts), and the mail goes to A.
  await withKv((kv) => kv.put(aliceKey, "b"));
  await sleep(OWNER_CACHE_MS + 200);
  await sendToAlice(nodeB!, "forged to b, sent to B");
  await nodeA!.waitForEvent("mailbox.owner.reasserted", { user: ALICE, kvOwner: "b", reason: "holders query" });
  assert.equal(await kvOwnerOfAlice(), "a");

  // The entry is gone altogether: B asks before it claims, and A answers.
  await withKv((kv) => kv.delete(aliceKey));
  await sleep(OWNER_CACHE_MS + 200);
  await sendToAlice(nodeB!, "entry deleted, sent to B");
  assert.equal(await kvOwnerOfAlice(), "a");

  // The entry names a node that does not exist: B's ask finds no one there, so it asks who
  // holds alice, and A answers.
  await withKv((kv) => kv.put(aliceKey, "ghost"));
  await sleep(OWNER_CACHE_MS + 200);
  await sendToAlice(nodeB!, "forged to a ghost, sent to B");
  await nodeA!.waitForEvent("mailbox.owner.reasserted", { user: ALICE, kvOwner: "ghost", reason: "holders query" });
  assert.equal(await kvOwnerOfAlice(), "a");

  assert.deepEqual(await subjectsInMailbox(nodeA!), [
    "before the loss",
    "after the loss",
    "forged to b, sent to A",
    "forged to b, sent to B",
    "entry deleted, sent to B",
    "forged to a ghost, sent to B",
  ]);
});
