// Durable events end to end, on a nats-server of the test's own: a relayed message's
// events arrive in the stream in order; events recorded while NATS is down wait in the
// outbox (its size and age on /metrics) and all arrive, once each, when NATS is back;
// `tern events` replays from a stream sequence and from a time, and filters by type.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { startDnsmasq, type RunningDnsmasq } from "../support/dnsmasq.ts";
import { startNatsServer, type TestNatsServer } from "../support/nats-server.ts";
import { startSink, type Sink } from "../support/sink.ts";
import { eventually, makeDataDir, projectRoot, readMetric, removeDataDir, run, startTernNode, uniqueCluster, type TernNode, ternCli } from "../support/tern-node.ts";

const cluster = uniqueCluster();
let nats: TestNatsServer;
let dns: RunningDnsmasq;
let sink: Sink;
let node: TernNode;
let dataDir: string;
let cliConfig: string;

type Printed = { seq: number; id: string; type: string; msg: string; tenant: string; domain: string; rcpt?: string };

before(async () => {
  [nats, dns, sink, dataDir] = await Promise.all([
    startNatsServer(),
    startDnsmasq({ mx: [{ domain: "relay.test", host: "mx.relay.test", preference: 10 }], hosts: [{ name: "mx.relay.test", address: "127.0.0.1" }] }),
    startSink(),
    makeDataDir(),
  ]);
  node = await startTernNode({
    nodeId: "ev",
    cluster,
    dataDir,
    nats: { servers: [nats.url], embedded: false },
    localDomains: ["example.test"],
    users: [{ address: "bob@example.test", password: "pw" }],
    trustedNetworks: ["127.0.0.0/8"],
    api: { tenants: [{ name: "acme", senderDomains: ["acme.test"] }] },
    dns: { servers: [`${dns.host}:${dns.port}`], timeoutMs: 1000, tries: 1, allowedTargetNetworks: ["127.0.0.0/8"] },
    delivery: { remotePort: sink.port, retryBaseMs: 300, retryMaxMs: 600, pollMs: 50 },
    mailbox: { askTimeoutMs: 1_000 },
  });
  cliConfig = join(dataDir, "cli.json");
  await writeFile(cliConfig, JSON.stringify({ cluster, nats: { servers: [nats.url], embedded: false } }));
});

after(async () => {
  await node?.kill("SIGTERM");
  await Promise.all([nats?.dispose(), dns?.stop(), sink?.close()]);
  await removeDataDir(dataDir);
});

const send = async (from: string, to: string) => {
  const sent = await run("swaks", ["--server", `127.0.0.1:${node.ports.smtp}`, "--from", from, "--to", to, "--body", "hello", "--silent", "2"]);
  assert.equal(sent.code, 0, sent.stdout + sent.stderr);
  return /queued as ([0-9A-Z]+)/.exec(sent.stdout + sent.stderr)?.[1] ?? (await node.waitForEvent("message.accepted", { sender: from })).queueId as string;
};

const ternEvents = async (...args: string[]): Promise<Printed[]> => {
  const out = await run(process.execPath, [...ternCli, "events", "--config", cliConfig, "--json", ...args]);
  assert.equal(out.code, 0, out.stderr);
  return out.stdout.trim().split("\n").filter(Boolean).map((line) => JSON.parse(line) as Printed);
};

test("a relayed message's events arrive in order, accepted then delivered, with its tenant and destination domain", async () => {
  const msg = await send("news@acme.test", "carol@relay.test");
  await node.waitForEvent("recipient.delivered", { queueId: msg });
  const events = await eventually(async () => {
    const found = (await ternEvents()).filter((e) => e.msg === msg);
    return found.length >= 2 ? found : undefined;
  }, 10_000, "two events of the message");
  assert.deepEqual(events.map((e) => [e.type, e.tenant, e.domain, e.rcpt]), [
    ["accepted", "acme", "relay.test", "carol@relay.test"],
    ["delivered", "acme", "relay.test", "carol@relay.test"],
  ]);
  assert.ok(events[0]!.seq < events[1]!.seq);
});

test("events recorded while NATS is down wait in the outbox and all arrive once it is back, none lost, none twice", async () => {
  await nats.stop();
  const msgs: string[] = [];
  for (let n = 0; n < 3; n++) msgs.push(await send(`user${n}@elsewhere.test`, "bob@example.test"));
  await eventually(async () => ((await readMetric(node, "tern_events_outbox_entries")) >= 3 ? true : undefined), 10_000, "events in the outbox");
  await eventually(async () => ((await readMetric(node, "tern_events_outbox_oldest_age_seconds")) > 0.5 ? true : undefined), 10_000, "outbox age");
  await node.waitForEvent("events.publish.stalled", {}, 15_000);
  await nats.restart();
  for (const msg of msgs) await node.waitForEvent("recipient.delivered", { queueId: msg }, 30_000);
  await eventually(async () => ((await readMetric(node, "tern_events_outbox_entries")) === 0 ? true : undefined), 15_000, "outbox drained");
  assert.equal(await readMetric(node, "tern_events_outbox_oldest_age_seconds"), 0);
  const events = await ternEvents();
  assert.equal(new Set(events.map((e) => e.id)).size, events.length, "no event twice");
  for (const msg of msgs) {
    const mine = events.filter((e) => e.msg === msg).map((e) => e.type);
    assert.equal(mine[0], "accepted", `${msg}: ${mine.join(" ")}`);
    assert.equal(mine.filter((t) => t === "accepted").length, 1);
    assert.equal(mine.at(-1), "delivered", `${msg}: ${mine.join(" ")}`);
  }
});

test("tern events replays from a stream sequence and from a time, and filters by type", async () => {
  const all = await ternEvents();
  const middle = all[Math.floor(all.length / 2)]!;
  const fromSeq = await ternEvents("--since", String(middle.seq));
  assert.deepEqual(fromSeq.map((e) => e.seq), all.filter((e) => e.seq >= middle.seq).map((e) => e.seq));

  await new Promise((resolve) => setTimeout(resolve, 50));
  const since = new Date().toISOString();
  const msg = await send("late@elsewhere.test", "bob@example.test");
  await node.waitForEvent("recipient.delivered", { queueId: msg });
  const fromTime = await eventually(async () => {
    const found = await ternEvents("--since", since);
    return found.some((e) => e.msg === msg && e.type === "delivered") ? found : undefined;
  }, 10_000, "events since the time");
  // Everything replayed was stored after `since`, the new message's events among them, in order.
  assert.deepEqual(fromTime.filter((e) => e.msg === msg).map((e) => e.type), ["accepted", "delivered"]);
  assert.ok(fromTime.every((e) => e.seq > middle.seq), "nothing from before the time");

  const delivered = await ternEvents("--type", "delivered", "--tenant", "default", "--domain", "example.test");
  assert.ok(delivered.length >= 4);
  assert.ok(delivered.every((e) => e.type === "delivered" && e.tenant === "default" && e.domain === "example.test"));
});
