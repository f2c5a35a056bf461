// The crash that makes a queue redeliver: the mailbox committed the message, then the
// process died before the ack reached the queue. After the restart the queue entry is
// delivered again; the mailbox must recognise it, store nothing new, and count the
// duplicate. The crash is injected at exactly that point (actors/mailbox/faults.ts).
import { afterEach, test } from "node:test";
import assert from "node:assert/strict";
import nodemailer from "nodemailer";
import { makeDataDir, removeDataDir, startTernNode, uniqueCluster, type TernNode } from "../support/tern-node.ts";
import { poplibFetch } from "../support/pop3.ts";

const running: TernNode[] = [];
const dirs: string[] = [];

afterEach(async () => {
  await Promise.all(running.splice(0).map((node) => node.kill("SIGTERM")));
  await Promise.all(dirs.splice(0).map(removeDataDir));
});

/** Starts a node; with `crashAfterCommit` it kills itself right after its first new mailbox commit. */
const start = async (config: Record<string, unknown> & { dataDir: string }, crashAfterCommit = false) => {
  if (crashAfterCommit) process.env.TERN_FAULT_KILL_AFTER_MAILBOX_COMMIT = "1";
  try {
    const node = await startTernNode(config);
    running.push(node);
    return node;
  } finally {
    delete process.env.TERN_FAULT_KILL_AFTER_MAILBOX_COMMIT;
  }
};

const send = async (node: TernNode, to: string, raw: string) => {
  const transport = nodemailer.createTransport({ host: "127.0.0.1", port: node.ports.smtp, secure: false, ignoreTLS: true });
  try {
    const info = await transport.sendMail({ envelope: { from: "sender@elsewhere.test", to }, raw });
    const id = /queued as ([0-9A-Za-z]+)/.exec(info.response)?.[1];
    assert.ok(id, `no queue id in: ${info.response}`);
    return id;
  } finally {
    transport.close();
  }
};

const metric = async (node: TernNode, name: string): Promise<number> => {
  const text = await (await fetch(`http://127.0.0.1:${node.ports.http}/metrics`)).text();
  const line = text.split("\n").find((l) => l.startsWith(`${name}{`) || l.startsWith(`${name} `));
  return line === undefined ? Number.NaN : Number(line.slice(line.lastIndexOf(" ") + 1));
};

const raw = (tag: string) => `From: s@elsewhere.test\r\nTo: alice@example.test\r\nSubject: ${tag}\r\n\r\nonly once, please\r\n`;

test("one node: killed after the mailbox commit, restarted, it redelivers into the same single copy", { timeout: 60_000 }, async () => {
  const dataDir = await makeDataDir();
  dirs.push(dataDir);
  const config = {
    nodeId: "solo",
    cluster: uniqueCluster(),
    dataDir,
    localDomains: ["example.test"],
    users: [{ address: "alice@example.test", password: "alice-pw", home: "solo" }],
  };
  const doomed = await start(config, true);
  const id = await send(doomed, "alice@example.test", raw("solo"));
  await assert.rejects(doomed.waitForEvent("recipient.delivered", { queueId: id }), /node exited \(SIGKILL\)/);

  const node = await start(config);
  const delivered = await node.waitForEvent("recipient.delivered", { queueId: id });
  assert.match(String(delivered.reply), /^2\.0\.0 stored as uid \d+\.1$/);
  assert.equal(await metric(node, "tern_mailbox_duplicate_deliveries_total"), 1);
  assert.equal(await metric(node, "tern_mailbox_messages_stored_total"), 0, "the redelivery stored nothing new");

  const fetched = await poplibFetch(node.ports.pop3, "alice@example.test", "alice-pw");
  assert.ok("messages" in fetched, JSON.stringify(fetched));
  assert.equal(fetched.messages.length, 1, "exactly one copy");
  assert.match(fetched.messages[0]!.head, /Subject: solo/);
});

test("two nodes: the owner dies after committing, the sender's ask times out and defers; the retry finds the copy", { timeout: 60_000 }, async () => {
  const [dirA, dirB] = await Promise.all([makeDataDir(), makeDataDir()]);
  dirs.push(dirA, dirB);
  const common = {
    cluster: uniqueCluster(),
    localDomains: ["example.test"],
    users: [{ address: "alice@example.test", password: "alice-pw", home: "b" }],
    mailbox: { askTimeoutMs: 2_000 },
  };
  const configB = { ...common, nodeId: "b", dataDir: dirB };
  const [a, doomedB] = await Promise.all([
    start({ ...common, nodeId: "a", dataDir: dirA, delivery: { retryBaseMs: 200, retryMaxMs: 500, pollMs: 50 } }),
    start(configB, true),
  ]);
  const id = await send(a, "alice@example.test", raw("pair"));
  const deferred = await a.waitForEvent("recipient.deferred", { queueId: id });
  assert.match(String(deferred.reply), /^4\.\d\.\d mailbox of \S+ unavailable: MailboxUnavailable: /);
  await doomedB.kill("SIGKILL"); // already dead; waits for the exit

  const b = await start(configB);
  const delivered = await a.waitForEvent("recipient.delivered", { queueId: id }, 20_000);
  assert.equal(delivered.recipient, "alice@example.test");
  assert.equal(await metric(b, "tern_mailbox_duplicate_deliveries_total"), 1);
  const fetched = await poplibFetch(a.ports.pop3, "alice@example.test", "alice-pw");
  assert.ok("messages" in fetched, JSON.stringify(fetched));
  assert.equal(fetched.messages.length, 1, "exactly one copy");
});
