// Per-client limits: connections and message rate per IP, and errors per connection,
// each refused with its reply and counted in Prometheus by reason.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { openRaw } from "../support/raw-socket.ts";
import { makeDataDir, removeDataDir, startTernNode, uniqueCluster, readMetric, type TernNode } from "../support/tern-node.ts";

let node: TernNode;
let dataDir: string;

before(async () => {
  dataDir = await makeDataDir();
  node = await startTernNode({
    nodeId: "limits",
    cluster: uniqueCluster(),
    dataDir,
    localDomains: ["example.test"],
    users: [{ address: "alice@example.test", password: "pw" }],
    trustedNetworks: ["192.0.2.0/24"],
    smtp: { maxConnectionsPerIp: 3, maxMessagesPerIpPerMinute: 4, maxErrors: 3 },
  });
});

after(async () => {
  await node.kill("SIGTERM");
  await removeDataDir(dataDir);
});

test("a fourth concurrent connection from one IP gets 421 4.7.0; another IP still gets in", async () => {
  const open = await Promise.all([1, 2, 3].map(() => openRaw(node.ports.smtp)));
  await Promise.all(open.map((c) => c.waitFor(/^220 /)));
  const fourth = await openRaw(node.ports.smtp);
  await fourth.waitFor(/^421 4\.7\.0 Too many connections from your address/);
  const other = await openRaw(node.ports.smtp, { localAddress: "127.0.0.2" });
  await other.waitFor(/^220 /);
  [...open, other].forEach((c) => c.close());
  assert.equal(await readMetric(node, "tern_smtp_rejections_total", 'reason="too-many-connections"'), 1);
});

test("more messages per minute than allowed get 450 4.7.1", async () => {
  const smtp = await openRaw(node.ports.smtp, { localAddress: "127.0.0.3" });
  await smtp.waitFor(/^220 /);
  smtp.send("EHLO c.test\r\n" + "MAIL FROM:<a@c.test>\r\nRSET\r\n".repeat(5));
  const transcript = await smtp.waitFor(/450 4\.7\.1 /);
  assert.equal(transcript.match(/250 2\.1\.0 /g)?.length, 4);
  smtp.close();
});

test("too many refused commands end the connection with 421", async () => {
  const smtp = await openRaw(node.ports.smtp, { localAddress: "127.0.0.4" });
  await smtp.waitFor(/^220 /);
  smtp.send("EHLO c.test\r\nMAIL FROM:<a@c.test>\r\n" + "RCPT TO:<x@elsewhere.test>\r\n".repeat(4));
  const transcript = await smtp.waitFor(/421 4\.7\.0 Too many errors/);
  assert.equal(transcript.match(/554 5\.7\.1 Relay access denied/g)?.length, 3);
  await smtp.waitFor(/$/, 100);
  assert.equal(await readMetric(node, "tern_smtp_rejections_total", 'reason="too-many-errors"'), 1);
});
