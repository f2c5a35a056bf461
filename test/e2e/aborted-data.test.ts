// A transaction that ends without a 250 leaves nothing in the spool: clients that drop
// the connection in the middle of a 1 MB DATA, a message over the size limit, a client
// that stalls until the idle timeout, a node stopped in the middle of a DATA. Seen the way
// an operator sees it: the spool gauges on /metrics (bodies being received, bytes of body
// pages) return to where they were; after a stop, the LMDB files hold no body.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { open } from "lmdb";
import { openRaw, type RawConversation } from "../support/raw-socket.ts";
import { eventually, makeDataDir, readMetric, removeDataDir, startTernNode, uniqueCluster, type TernNode } from "../support/tern-node.ts";

const LINE = `${"x".repeat(76)}\r\n`;
/** About `bytes` of message text, in 78-octet lines. */
const bodyText = (bytes: number) => LINE.repeat(Math.ceil(bytes / LINE.length));

const spoolGauges = async (node: TernNode) => ({
  incoming: await readMetric(node, "tern_spool_incoming_bodies"),
  bytes: await readMetric(node, "tern_spool_body_bytes"),
});

/** Opens a transaction for alice and sends the header and `bytes` of body, without the final dot. */
const startTransfer = async (node: TernNode, bytes: number): Promise<RawConversation> => {
  const smtp = await openRaw(node.ports.smtp);
  await smtp.waitFor(/^220 /);
  smtp.send("EHLO client.test\r\nMAIL FROM:<sender@client.test>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n");
  await smtp.waitFor(/\r\n354 /);
  smtp.send(`Subject: cut short\r\n\r\n${bodyText(bytes)}`);
  return smtp;
};

const config = (dataDir: string, smtp: Record<string, unknown> = {}) => ({
  nodeId: "aborts",
  cluster: uniqueCluster(),
  dataDir,
  localDomains: ["example.test"],
  users: [{ address: "alice@example.test", password: "pw" }],
  limits: { maxMessageBytes: 2_000_000 },
  smtp: { maxConnectionsPerIp: 50, maxMessagesPerIpPerMinute: 1_000, ...smtp },
});

describe("clients that go away or send too much", () => {
  let node: TernNode;
  let dataDir: string;
  before(async () => {
    dataDir = await makeDataDir();
    node = await startTernNode(config(dataDir));
  });
  after(async () => {
    await node.kill("SIGTERM");
    await removeDataDir(dataDir);
  });

  test("twenty clients dropping the connection in the middle of a 1 MB DATA leave the spool as it was", async () => {
    const start = await spoolGauges(node);
    const clients = await Promise.all(Array.from({ length: 20 }, () => startTransfer(node, 1_000_000)));
    // The partial bodies are on disk (so there is something to leak) before the clients go.
    const during = await eventually(async () => {
      const gauges = await spoolGauges(node);
      return gauges.incoming === start.incoming + 20 && gauges.bytes >= start.bytes + 20 * 900_000 ? gauges : undefined;
    }, 30_000, "twenty partial bodies in the spool");
    assert.ok(during.bytes > start.bytes);
    clients.forEach((client) => client.close());
    await eventually(async () => {
      const gauges = await spoolGauges(node);
      return gauges.incoming === start.incoming && gauges.bytes === start.bytes ? true : undefined;
    }, 15_000, "the spool back where it was");
    assert.equal(await readMetric(node, "tern_smtp_rejections_total", 'reason="data-aborted"'), 20);
    assert.equal(node.events("session.data.aborted").length, 20);
    assert.equal(await readMetric(node, "tern_messages_accepted_total"), 0);
  });

  test("a message over the size limit gets 552 and its body goes, also when the client then drops", async () => {
    const start = await spoolGauges(node);
    const whole = await startTransfer(node, 3_000_000);
    whole.send(".\r\n");
    await whole.waitFor(/\r\n552 /, 15_000);
    const cut = await startTransfer(node, 2_500_000); // past the limit, then gone without the final dot
    await eventually(async () => ((await readMetric(node, "tern_spool_incoming_bodies")) === start.incoming ? true : undefined), 15_000, "the oversized body discarded while the client still sends");
    cut.close();
    whole.close();
    await eventually(async () => {
      const gauges = await spoolGauges(node);
      return gauges.incoming === start.incoming && gauges.bytes === start.bytes ? true : undefined;
    }, 15_000, "the spool back where it was");
    assert.equal(await readMetric(node, "tern_messages_accepted_total"), 0);
  });

  test("after all that, a whole message is still accepted", async () => {
    const smtp = await startTransfer(node, 10_000);
    smtp.send(".\r\nQUIT\r\n");
    await smtp.waitFor(/\r\n250 2\.0\.0 Ok: queued as /);
    smtp.close();
    assert.equal(await readMetric(node, "tern_messages_accepted_total"), 1);
  });
});

describe("a client that stalls in the middle of DATA", () => {
  let node: TernNode;
  let dataDir: string;
  before(async () => {
    dataDir = await makeDataDir();
    node = await startTernNode(config(dataDir, { idleTimeoutMs: 1_000 }));
  });
  after(async () => {
    await node.kill("SIGTERM");
    await removeDataDir(dataDir);
  });

  test("is timed out with 421 and its partial body discarded", async () => {
    const start = await spoolGauges(node);
    const stalled = await startTransfer(node, 500_000);
    await stalled.waitFor(/\r\n421 /, 10_000);
    await eventually(async () => {
      const gauges = await spoolGauges(node);
      return gauges.incoming === start.incoming && gauges.bytes === start.bytes ? true : undefined;
    }, 10_000, "the spool back where it was");
    assert.equal(node.events("session.data.aborted").length, 1);
    stalled.close();
  });
});

describe("a node stopped in the middle of a DATA", () => {
  test("ends the transaction after its grace period and leaves no partial body in the LMDB files", async () => {
    const dataDir = await makeDataDir();
    try {
      const node = await startTernNode(config(dataDir));
      const client = await startTransfer(node, 800_000);
      await eventually(async () => ((await spoolGauges(node)).bytes >= 700_000 ? true : undefined), 15_000, "the partial body in the spool");
      await node.kill("SIGTERM"); // waits out smtp-server's 10 s grace period for open transactions
      assert.match(client.received(), /\r\n421 /);
      assert.equal(node.events("session.data.aborted").length, 1);
      const root = open({ path: join(dataDir, "tern.lmdb"), maxDbs: 64, readOnly: true });
      try {
        assert.equal(root.openDB({ name: "spool.incoming" }).getCount(), 0);
        assert.equal(root.openDB({ name: "spool.bodies", encoding: "binary" }).getCount(), 0);
      } finally {
        await root.close();
      }
      client.close();
    } finally {
      await removeDataDir(dataDir);
    }
  });
});
