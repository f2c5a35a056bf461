// A per-user quota: mail that would take the mailbox over it is deferred with 4.2.2 and
// stays queued (the queue's expiry, not the mailbox, decides when it bounces); once the
// user deletes mail over POP3, the next retry delivers it.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import nodemailer from "nodemailer";
import { eventually, makeDataDir, removeDataDir, startTernNode, uniqueCluster, type TernNode } from "../support/tern-node.ts";
import { connectPop3, loginPop3, poplibFetch } from "../support/pop3.ts";

let node: TernNode;
let dataDir: string;

before(async () => {
  dataDir = await makeDataDir();
  node = await startTernNode({
    nodeId: "solo",
    cluster: uniqueCluster(),
    dataDir,
    localDomains: ["example.test"],
    users: [{ address: "alice@example.test", password: "alice-pw", quotaBytes: 4_000 }],
    delivery: { retryBaseMs: 200, retryMaxMs: 500, pollMs: 50 },
  });
});

after(async () => {
  await node.kill("SIGTERM");
  await removeDataDir(dataDir);
});

const send = async (raw: string) => {
  const transport = nodemailer.createTransport({ host: "127.0.0.1", port: node.ports.smtp, secure: false, ignoreTLS: true });
  try {
    const info = await transport.sendMail({ envelope: { from: "sender@elsewhere.test", to: "alice@example.test" }, raw });
    return /queued as ([0-9A-Za-z]+)/.exec(info.response)![1]!;
  } finally {
    transport.close();
  }
};

const metrics = async () => (await fetch(`http://127.0.0.1:${node.ports.http}/metrics`)).text();
const message = (tag: string) => `Subject: ${tag}\r\n\r\n` + `${"y".repeat(76)}\r\n`.repeat(30);

test("over quota defers with 4.2.2 and keeps the mail queued; deleting mail lets it in", { timeout: 30_000 }, async () => {
  const first = await send(message("first"));
  await node.waitForEvent("recipient.delivered", { queueId: first });

  const second = await send(message("second"));
  const deferred = await node.waitForEvent("recipient.deferred", { queueId: second });
  assert.equal(deferred.dsn, "4.2.2");
  assert.match(String(deferred.reply), /^4\.2\.2 mailbox full: \d+ of 4000 bytes used, message is \d+$/);
  // It keeps waiting (retried, deferred again), never bounced.
  await eventually(() => (node.events("recipient.deferred").filter((e) => e.queueId === second).length >= 2 ? true : undefined), 10_000, "a retry");
  assert.equal(node.events("recipient.failed").length, 0);
  assert.match(await metrics(), /^tern_queue_depth\{destination="local"\} 1$/m, "the mailboxes' queues count as one destination");
  assert.match(await metrics(), /^tern_mailbox_over_quota_total [2-9]/m);

  const session = await connectPop3(node.ports.pop3);
  assert.match(await loginPop3(session, "alice@example.test", "alice-pw"), /^\+OK maildrop has 1 messages/);
  assert.match(await session.command("DELE 1"), /^\+OK/);
  assert.match(await session.command("QUIT"), /^\+OK/);

  await node.waitForEvent("recipient.delivered", { queueId: second }, 10_000);
  const fetched = await poplibFetch(node.ports.pop3, "alice@example.test", "alice-pw");
  assert.ok("messages" in fetched);
  assert.deepEqual(fetched.messages.map((m) => /Subject: (\w+)/.exec(m.head)?.[1]), ["second"]);
});
