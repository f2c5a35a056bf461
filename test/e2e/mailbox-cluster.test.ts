// Mailboxes across two node processes: bob's mailbox lives on B, mail and POP3 come in on A.
// A 30 MB message (30× NATS's max payload) goes A → B and back byte for byte; the maildrop
// lock holds across nodes; a restart of B while a client on A is logged in costs the
// client its session but no mail; a lock left by a dead retriever node expires.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import nodemailer from "nodemailer";
import { eventually, makeDataDir, removeDataDir, startTernNode, uniqueCluster, type TernNode } from "../support/tern-node.ts";
import { connectPop3, loginPop3, poplibFetch, type PoppedMessage } from "../support/pop3.ts";

const cluster = uniqueCluster();
const users = [{ address: "bob@example.test", password: "bob-pw", home: "b" }];
const common = {
  cluster,
  localDomains: ["example.test"],
  users,
  limits: { maxMessageBytes: 40 * 1024 * 1024, maxRecipients: 10 },
  mailbox: { askTimeoutMs: 5_000 },
  pop3: { lockLeaseMs: 3_000 },
};
const configA = () => ({ ...common, nodeId: "a", dataDir: dirA, delivery: { retryBaseMs: 200, retryMaxMs: 1000, pollMs: 50 } });
const configB = () => ({ ...common, nodeId: "b", dataDir: dirB });

let dirA: string;
let dirB: string;
let nodeA: TernNode | undefined;
let nodeB: TernNode | undefined;

before(async () => {
  [dirA, dirB] = await Promise.all([makeDataDir(), makeDataDir()]);
  [nodeA, nodeB] = await Promise.all([startTernNode(configA()), startTernNode(configB())]);
});

after(async () => {
  await Promise.all([nodeA?.kill("SIGTERM"), nodeB?.kill("SIGTERM")]);
  await Promise.all([removeDataDir(dirA), removeDataDir(dirB)]);
});

const send = async (node: TernNode, raw: string | Buffer) => {
  const transport = nodemailer.createTransport({ host: "127.0.0.1", port: node.ports.smtp, secure: false, ignoreTLS: true });
  try {
    const info = await transport.sendMail({ envelope: { from: "sender@elsewhere.test", to: "bob@example.test" }, raw });
    const id = /queued as ([0-9A-Za-z]+)/.exec(info.response)?.[1];
    assert.ok(id, `no queue id in: ${info.response}`);
    return id;
  } finally {
    transport.close();
  }
};

const fetchAll = async (node: TernNode): Promise<PoppedMessage[]> => {
  const result = await poplibFetch(node.ports.pop3, "bob@example.test", "bob-pw");
  assert.ok("messages" in result, `POP3 login failed: ${JSON.stringify(result)}`);
  return result.messages;
};

/** 76-column lines of base64 noise, some starting with "." so byte-stuffing is exercised. */
const largeMessage = (bytes: number): Buffer => {
  const header = "From: sender@elsewhere.test\r\nTo: bob@example.test\r\nSubject: large\r\nMessage-ID: <large@elsewhere.test>\r\n\r\n";
  const lines: string[] = [];
  let size = header.length;
  for (let n = 0; size < bytes; n++) {
    const line = (n % 1000 === 0 ? "." : "") + randomBytes(57).toString("base64");
    lines.push(line);
    size += line.length + 2;
  }
  return Buffer.from(header + lines.join("\r\n") + "\r\n", "latin1");
};

const sha256 = (bytes: Buffer | string) => createHash("sha256").update(bytes).digest("hex");

const small = (tag: string) => `From: s@elsewhere.test\r\nTo: bob@example.test\r\nSubject: ${tag}\r\n\r\nbody of ${tag}\r\n`;

test("a 30 MB message sent to A is stored on B and read back over POP3 on A byte for byte", { timeout: 120_000 }, async () => {
  const raw = largeMessage(30 * 1024 * 1024);
  const id = await send(nodeA!, raw);
  const delivered = await nodeA!.waitForEvent("recipient.delivered", { queueId: id }, 60_000);
  assert.equal(delivered.server, "mailbox/bob@example.test");

  const [message, ...others] = await fetchAll(nodeA!);
  assert.equal(others.length, 0);
  assert.ok(message!.received?.includes(`with ESMTP id ${id}`), message!.received ?? "no Received header");
  assert.equal(message!.sha256, sha256(raw), "the body read on A differs from what was sent");
  assert.equal(message!.listed, message!.size, "LIST size is not the exact size");
  assert.ok(message!.finalDelivery?.startsWith("Return-Path: <"), message!.finalDelivery ?? "no Return-Path and Delivered-To in front");
  assert.equal(message!.size, raw.length + Buffer.byteLength(message!.received!, "latin1") + Buffer.byteLength(message!.finalDelivery!, "latin1"));
  // It really lives on B: B serves the same bytes from its own store.
  const [onB] = await fetchAll(nodeB!);
  assert.equal(onB!.sha256, message!.sha256);
  assert.equal(onB!.uidl, message!.uidl, "UIDL is the same whichever node serves it");
  // Both pulls (the body by B, the POP3 reply by A) are over: nothing left reserved in either budget.
  for (const [node, id] of [[nodeA!, "a"], [nodeB!, "b"]] as const) {
    const metrics = await (await fetch(`http://127.0.0.1:${node.ports.http}/metrics`)).text();
    assert.match(metrics, new RegExp(`^tern_blob_pull_bytes 0$`, "m"));
    assert.match(metrics, new RegExp(`^tern_blob_pulls 0$`, "m"));
  }
});

test("UIDL is stable across sessions and never reused after a delete", { timeout: 60_000 }, async () => {
  await nodeA!.waitForEvent("recipient.delivered", { queueId: await send(nodeA!, small("uidl-1")) });
  const before = await fetchAll(nodeA!);
  assert.equal(before.length, 2);
  assert.deepEqual((await fetchAll(nodeB!)).map((m) => m.uidl), before.map((m) => m.uidl));

  // Delete the newest, then a new message arrives: it must not take the deleted one's UIDL.
  const session = await connectPop3(nodeA!.ports.pop3);
  assert.match(await loginPop3(session, "bob@example.test", "bob-pw"), /^\+OK maildrop has 2 messages/);
  assert.match(await session.command("DELE 2"), /^\+OK/);
  assert.match(await session.command("QUIT"), /^\+OK .* \(1 messages left\)$/);
  await nodeA!.waitForEvent("recipient.delivered", { queueId: await send(nodeA!, small("uidl-2")) });
  const after = await fetchAll(nodeA!);
  assert.equal(after.length, 2);
  assert.equal(after[0]!.uidl, before[0]!.uidl);
  assert.ok(!before.map((m) => m.uidl).includes(after[1]!.uidl), `UIDL ${after[1]!.uidl} was reused`);
  assert.match(after[1]!.head, /Subject: uidl-2/);
});

test("the maildrop lock holds across nodes: a session on B while one on A is open gets [IN-USE]", { timeout: 60_000 }, async () => {
  const onA = await connectPop3(nodeA!.ports.pop3);
  assert.match(await loginPop3(onA, "bob@example.test", "bob-pw"), /^\+OK/);
  const onB = await connectPop3(nodeB!.ports.pop3);
  assert.equal(await loginPop3(onB, "bob@example.test", "bob-pw"), "-ERR [IN-USE] maildrop already locked");
  const alsoA = await connectPop3(nodeA!.ports.pop3);
  assert.equal(await loginPop3(alsoA, "bob@example.test", "bob-pw"), "-ERR [IN-USE] maildrop already locked");
  // The lock outlives several lease periods while the session idles (it is renewed), then QUIT frees it.
  await new Promise((resolve) => setTimeout(resolve, 4_000));
  assert.equal(await loginPop3(onB, "bob@example.test", "bob-pw"), "-ERR [IN-USE] maildrop already locked");
  assert.match(await onA.command("QUIT"), /^\+OK/);
  assert.match(await loginPop3(onB, "bob@example.test", "bob-pw"), /^\+OK maildrop has 2 messages/);
  await onB.command("QUIT");
  alsoA.socket.destroy();
});

test("owner B restarts while a client on A is logged in: the client gets errors, the mail stays", { timeout: 60_000 }, async () => {
  const session = await connectPop3(nodeA!.ports.pop3);
  assert.match(await loginPop3(session, "bob@example.test", "bob-pw"), /^\+OK maildrop has 2 messages/);
  assert.match(await session.command("DELE 1"), /^\+OK/);

  await nodeB!.kill("SIGKILL");
  assert.equal(await session.command("RETR 2"), "-ERR [SYS/TEMP] mailbox temporarily unavailable, try again later");
  // While B is down nobody can log in to bob's mailbox; nothing is lost meanwhile.
  const meanwhile = await connectPop3(nodeA!.ports.pop3);
  assert.equal(await loginPop3(meanwhile, "bob@example.test", "bob-pw"), "-ERR [SYS/TEMP] mailbox temporarily unavailable, try again later");
  meanwhile.socket.destroy();

  nodeB = await startTernNode(configB());
  // The restarted B knows nothing of the old lock: the session ends without UPDATE.
  assert.match(await session.command("QUIT"), /^-ERR \[SYS\/TEMP\] maildrop lock lost/);
  await session.closed;

  const messages = await fetchAll(nodeA!);
  assert.equal(messages.length, 2, "the DELE of a session that lost its lock must not apply");
});

test("a lock left by a retriever node that died expires after its lease", { timeout: 60_000 }, async () => {
  const session = await connectPop3(nodeA!.ports.pop3);
  assert.match(await loginPop3(session, "bob@example.test", "bob-pw"), /^\+OK/);
  await nodeA!.kill("SIGKILL");
  const started = Date.now();
  const onB = await connectPop3(nodeB!.ports.pop3);
  assert.equal(await loginPop3(onB, "bob@example.test", "bob-pw"), "-ERR [IN-USE] maildrop already locked");
  const reply = await eventually(async () => {
    const answer = await loginPop3(onB, "bob@example.test", "bob-pw");
    return answer.startsWith("+OK") ? answer : undefined;
  }, 10_000, "the dead session's lease to run out");
  assert.match(reply, /^\+OK maildrop has 2 messages/);
  assert.ok(Date.now() - started < 6_000, "the lease (3 s) should have expired within 6 s");
  await onB.command("QUIT");
  nodeA = await startTernNode(configA());
});
