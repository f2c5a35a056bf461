// A graceful stop (SIGTERM) follows the node's layer graph: the listeners close first, a
// delivery in flight finishes and its outcome is committed before LMDB closes, so after
// a restart the message is neither queued again nor sent twice.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { connect } from "node:net";
import nodemailer from "nodemailer";
import { startDnsmasq, type RunningDnsmasq } from "../support/dnsmasq.ts";
import { startScriptedSmtp, type ScriptedServer } from "../support/scripted-smtp.ts";
import { eventually, makeDataDir, readMetric, removeDataDir, sleep, startTernNode, uniqueCluster, type TernNode } from "../support/tern-node.ts";

let dns: RunningDnsmasq;
let sink: ScriptedServer;
let node: TernNode | undefined;
let dataDir: string;

before(async () => {
  sink = await startScriptedSmtp({ dataReplyDelayMs: 1_500 }); // the attempt is still in flight when SIGTERM arrives
  dns = await startDnsmasq({ mx: [{ domain: "slow.test", host: "mx.slow.test", preference: 10 }], hosts: [{ name: "mx.slow.test", address: "127.0.0.1" }] });
  dataDir = await makeDataDir();
});

after(async () => {
  await node?.kill("SIGKILL");
  await sink?.close();
  await Promise.all([dns?.stop(), removeDataDir(dataDir)]);
});

const refused = (port: number) =>
  new Promise<boolean>((resolve) => {
    const socket = connect(port, "127.0.0.1");
    socket.once("connect", () => {
      socket.destroy();
      resolve(false);
    });
    socket.once("error", () => resolve(true));
  });

test("SIGTERM: listeners close first, the delivery in flight is recorded, nothing is sent twice after restart", async () => {
  const config = {
    nodeId: "graceful",
    cluster: uniqueCluster(),
    dataDir,
    localDomains: ["example.test"],
    users: [{ address: "alice@example.test", password: "pw" }],
    dns: { servers: [`${dns.host}:${dns.port}`], timeoutMs: 1000, tries: 2, allowedTargetNetworks: ["127.0.0.0/8"] },
    delivery: { remotePort: sink.port, retryBaseMs: 60_000, retryMaxMs: 60_000, pollMs: 50 },
  };
  node = await startTernNode(config);
  const smtpPort = node.ports.smtp;
  const transport = nodemailer.createTransport({ host: "127.0.0.1", port: smtpPort, secure: false, ignoreTLS: true });
  await transport.sendMail({ envelope: { from: "a@example.test", to: ["r@slow.test"] }, raw: "Subject: in flight\r\n\r\nbody\r\n" });
  transport.close();
  await eventually(() => (sink.commands.some((line) => line.toUpperCase() === "DATA") ? true : undefined), 10_000, "the delivery under way");

  const stopping = node.kill("SIGTERM");
  await eventually(async () => ((await refused(smtpPort)) ? true : undefined), 5_000, "the SMTP listener closed");
  assert.equal(sink.accepted.length, 0, "the listener closed while the delivery was still in flight");
  await stopping;

  assert.equal(sink.accepted.length, 1);
  const events = node.logs().split("\n").filter((line) => line.startsWith("{")).map((line) => JSON.parse(line) as { event: string });
  const order = (event: string) => events.findIndex((line) => line.event === event);
  assert.ok(order("recipient.delivered") >= 0, "the outcome was recorded before the node stopped");
  assert.ok(order("node.stopping") < order("recipient.delivered") && order("recipient.delivered") < order("node.stopped"));

  node = await startTernNode(config);
  assert.equal(await readMetric(node, "tern_queue_depth"), 0);
  await sleep(500);
  assert.equal(sink.accepted.length, 1, "not delivered a second time");
});
