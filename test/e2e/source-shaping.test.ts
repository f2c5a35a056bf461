// Shaping per source address (issue 16): one node with two pools of one loopback address
// each (chosen by sender domain, so the split is known) and a per-source site budget for one
// recipient domain: one connection at a time from each address, two messages per
// connection, four new connections per minute. The receiving host (a scripted SMTP server)
// sees each address keep to those limits on its own.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { connectTern, type TernClient } from "../../cluster/client.ts";
import { startDnsmasq, type RunningDnsmasq } from "../support/dnsmasq.ts";
import { startScriptedSmtp, type ScriptedServer } from "../support/scripted-smtp.ts";
import { eventually, makeDataDir, removeDataDir, startTernNode, uniqueCluster, type TernNode } from "../support/tern-node.ts";

const cluster = uniqueCluster();
let dns: RunningDnsmasq;
let sink: ScriptedServer;
let node: TernNode;
let dataDir: string;
let tern: TernClient;

const POOL = [
  { address: "127.0.0.3", ehlo: "tx1.tern.test", sender: "app@one.example.test" },
  { address: "127.0.0.4", ehlo: "tx2.tern.test", sender: "app@two.example.test" },
];

before(async () => {
  // Each message keeps its connection busy a little, so connections would pile up without the limit.
  sink = await startScriptedSmtp({ dataReplyDelayMs: 30 });
  dns = await startDnsmasq({ mx: [{ domain: "remote.test", host: "mx.remote.test", preference: 10 }], hosts: [{ name: "mx.remote.test", address: "127.0.0.1" }] });
  dataDir = await makeDataDir();
  node = await startTernNode({
    nodeId: "a",
    cluster,
    dataDir,
    localDomains: ["one.example.test", "two.example.test"],
    users: [],
    trustedNetworks: ["127.0.0.0/8"],
    dns: { servers: [`${dns.host}:${dns.port}`], timeoutMs: 1000, tries: 2, allowedTargetNetworks: ["127.0.0.0/8"] },
    delivery: {
      remotePort: sink.port,
      retryBaseMs: 200,
      retryMaxMs: 1000,
      pollMs: 50,
      connectionsPerSite: 8,
      pools: { one: [{ address: POOL[0]!.address, ehlo: POOL[0]!.ehlo }], two: [{ address: POOL[1]!.address, ehlo: POOL[1]!.ehlo }] },
      poolRules: [{ senderDomain: "one.example.test", pool: "one" }],
      defaultPool: "two",
      siteBudgets: { "domain:remote.test": { connections: 1, messagesPerConnection: 2, connectionsPerMinute: 4, perSource: true } },
    },
  });
  tern = await connectTern({ cluster });
});

after(async () => {
  await tern?.close();
  await node?.kill("SIGTERM");
  await Promise.all([sink?.close(), dns?.stop(), removeDataDir(dataDir)]);
});

test("each source address keeps its own connection limit, messages per connection and new connections per minute", async () => {
  // 12 messages from each address: at 2 per connection and 4 new connections a minute,
  // each address carries 8 within the first minute; the other 4 wait for the next.
  await Promise.all(
    POOL.flatMap(({ sender }, p) =>
      Array.from({ length: 12 }, (_, n) => tern.submit({ from: sender, to: `r${p}-${n}@remote.test`, subject: `shaped ${p}-${n}`, text: "hello" })),
    ),
  );
  await eventually(() => sink.accepted.length >= 16 || undefined, 30_000, "16 messages at the receiving host");
  await new Promise((resolve) => setTimeout(resolve, 2_000));
  assert.equal(sink.accepted.length, 16, "no more than each address's allowance within the minute");
  for (const { address } of POOL) {
    const mails = sink.accepted.filter((mail) => mail.client.address === address);
    assert.equal(mails.length, 8, `${address}: messages sent`);
    const perConnection = new Map<number, number>();
    for (const mail of mails) perConnection.set(mail.connection, (perConnection.get(mail.connection) ?? 0) + 1);
    assert.deepEqual([...perConnection.values()], [2, 2, 2, 2], `${address}: four connections of two messages`);
    assert.equal(sink.peakConnections(address), 1, `${address}: connections at once`);
  }
  assert.equal(sink.peakConnections(), 2, "the two addresses sent side by side");
});
