// The suppression list end to end, on two nodes of one cluster: a hard bounce (550 5.1.1
// from the remote MX) adds its recipient for the sender's domain; after that an API
// submit to it is refused with the entry named, an authenticated SMTP submission gets
// 550 5.7.1 at RCPT on the other node too, and a message already queued for a recipient
// listed meanwhile is not sent (no DSN either). Each refusal is a "suppressed" event and
// counted in tern_suppressed_total{where}; `tern suppress add|list|remove|import` manage
// the list; mail for a local mailbox is never refused.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { followEvents } from "../../cluster/events-client.ts";
import { connectTern, TernApiError, type TernClient } from "../../cluster/client.ts";
import { suppressCommand } from "../../nodes/suppress-command.ts";
import type { SuppressedEvent } from "../../protocol/events.ts";
import { startDnsmasq, type RunningDnsmasq } from "../support/dnsmasq.ts";
import { startScriptedSmtp, type ScriptedServer } from "../support/scripted-smtp.ts";
import { eventually, makeDataDir, readMetric, removeDataDir, run, startTernNode, uniqueCluster, type TernNode } from "../support/tern-node.ts";

const cluster = uniqueCluster();
let dns: RunningDnsmasq;
let mx: ScriptedServer;
let nodes: TernNode[] = [];
const dirs: string[] = [];
let acme: TernClient;
let nc: NatsConnection;
let cliConfig: string;

const nodeConfig = async (nodeId: string) => {
  const dataDir = await makeDataDir();
  dirs.push(dataDir);
  return {
    nodeId,
    cluster,
    dataDir,
    localDomains: ["example.test"],
    users: [
      { address: "alice@example.test", password: "alice-pw", aliases: ["news@acme.test"] },
      { address: "bob@example.test", password: "bob-pw" },
    ],
    // Loopback is not trusted: relaying needs AUTH, as for a submission client elsewhere.
    trustedNetworks: ["192.0.2.0/24"],
    api: { tenants: [{ name: "acme", senderDomains: ["acme.test"] }], maxSendAtAheadMs: 3_600_000 },
    dns: { servers: [`${dns.host}:${dns.port}`], timeoutMs: 1000, tries: 2, allowedTargetNetworks: ["127.0.0.0/8"] },
    delivery: { remotePort: mx.port, retryBaseMs: 3_600_000, retryMaxMs: 3_600_000, pollMs: 50, connectTimeoutMs: 2000 },
  };
};

before(async () => {
  mx = await startScriptedSmtp({ rcpt: (to) => (to.startsWith("gone@") ? "550 5.1.1 no such user here" : undefined) });
  dns = await startDnsmasq({ mx: [{ domain: "remote.test", host: "mx.remote.test", preference: 10 }], hosts: [{ name: "mx.remote.test", address: "127.0.0.1" }] });
  nodes = [await startTernNode(await nodeConfig("s1")), await startTernNode(await nodeConfig("s2"))];
  nc = await connect({ servers: "127.0.0.1:4222" });
  acme = await connectTern({ cluster, tenant: "acme", nc });
  cliConfig = join(dirs[0]!, "cli.json");
  await writeFile(cliConfig, JSON.stringify({ cluster, nats: { servers: ["nats://127.0.0.1:4222"], embedded: false } }));
});

after(async () => {
  await acme?.close();
  await nc?.close();
  await Promise.all(nodes.map((node) => node.kill("SIGTERM")));
  await Promise.all([mx?.close(), dns?.stop(), ...dirs.map(removeDataDir)]);
});

const nodeNamed = (id: string) => nodes[id === "s1" ? 0 : 1]!;

/** `tern suppress …` in this process, as the operator. */
const suppress = async (...args: string[]) => {
  let stdout = "";
  let stderr = "";
  const code = await suppressCommand(["--config", cliConfig, ...args], { out: (t) => (stdout += `${t}\n`), err: (t) => (stderr += `${t}\n`) });
  return { code, stdout, stderr };
};

/** swaks as alice, authenticated over STARTTLS, on one node. */
const submitSmtp = (node: TernNode, from: string, to: string) =>
  run("swaks", [
    "--server", "127.0.0.1", "--port", String(node.ports.smtp), "--tls", "--auth", "PLAIN", "--auth-user", "alice@example.test", "--auth-password", "alice-pw",
    "--from", from, "--to", to, "--body", "hello", "--hide-informational",
  ]);

const suppressedEvents = async (): Promise<SuppressedEvent[]> => {
  const found: SuppressedEvent[] = [];
  for await (const { event } of followEvents(nc, { cluster, type: "suppressed", timeoutMs: 2_000 })) if (event.type === "suppressed") found.push(event);
  return found;
};

const suppressedCount = async (where: string) => (await Promise.all(nodes.map((node) => readMetric(node, "tern_suppressed_total", `where="${where}"`)))).reduce((a, b) => a + b, 0);

/** Which node logged the add of `rcpt` (the one that recorded its bounce). */
let adder = "";

test("a 550 5.1.1 from the remote MX adds the recipient for the sender's domain, once its bounced event is published", async () => {
  const reply = await acme.submitRaw("Subject: first\r\n\r\nhello\r\n", { from: "news@acme.test", to: ["gone@remote.test", "fine@remote.test"] });
  assert.deepEqual(reply.accepted, ["gone@remote.test", "fine@remote.test"]);
  const holder = nodeNamed(reply.node);
  const failed = await holder.waitForEvent("recipient.failed", { queueId: reply.messageId, recipient: "gone@remote.test" });
  assert.equal(failed.category, "bad-mailbox");
  const added = await holder.waitForEvent("suppression.added", { recipient: "gone@remote.test" }, 10_000);
  assert.deepEqual([added.scope, added.reason, added.queueId], ["acme.test", "bad-mailbox", reply.messageId]);
  adder = reply.node;

  const listed = await suppress("list", "--scope", "acme.test", "--json");
  assert.equal(listed.code, 0, listed.stderr);
  const [entry] = listed.stdout.trim().split("\n").map((line) => JSON.parse(line));
  assert.deepEqual(
    { ...entry, at: typeof entry.at },
    { address: "gone@remote.test", scope: "acme.test", reason: "bad-mailbox", at: "number", msg: reply.messageId, node: reply.node, detail: "550 5.1.1 no such user here" },
  );
  assert.equal(await readMetric(holder, "tern_suppressions_added_total", 'reason="bad-mailbox"'), 1);
});

test("an API submit to a suppressed recipient is refused, naming the entry; the other recipients go", async () => {
  const reply = await acme.submitRaw("Subject: second\r\n\r\nhello\r\n", { from: "news@acme.test", to: ["GONE@remote.test", "other@remote.test"] });
  assert.deepEqual(reply.accepted, ["other@remote.test"]);
  assert.deepEqual(reply.refused, [
    {
      recipient: "GONE@remote.test",
      reason: "suppressed",
      reply: "550 5.7.1 Recipient address is on the suppression list (bad-mailbox, scope acme.test); not sent",
      suppression: { scope: "acme.test", reason: "bad-mailbox" },
    },
  ]);
  await assert.rejects(
    acme.submitRaw("Subject: third\r\n\r\nhello\r\n", { from: "news@acme.test", to: ["gone@remote.test"] }),
    (error: TernApiError) => error.code === "AllRecipientsRefused" && error.refused[0]?.reason === "suppressed",
  );
  assert.equal(await suppressedCount("api"), 2);
});

test("an authenticated SMTP submission gets 550 5.7.1 at RCPT, on the node that did not record the bounce too; another sender domain is not affected", async () => {
  const other = nodeNamed(adder === "s1" ? "s2" : "s1");
  const refused = await submitSmtp(other, "news@acme.test", "gone@remote.test");
  assert.notEqual(refused.code, 0);
  assert.match(refused.stdout, /<~\* 550 5\.7\.1 Recipient address is on the suppression list \(bad-mailbox, scope acme\.test\); not sent/);
  assert.equal(await readMetric(other, "tern_suppressed_total", 'where="smtp"'), 1);
  // The entry is acme.test's: alice's own domain still sends to the address, and its bounce lists it for example.test.
  const fromAlice = await submitSmtp(other, "alice@example.test", "gone@remote.test");
  assert.equal(fromAlice.code, 0, fromAlice.stdout);
  await other.waitForEvent("suppression.added", { recipient: "gone@remote.test", scope: "example.test" }, 10_000);
});

test("a message queued before its recipient was listed is not sent when it falls due, and draws no DSN", async () => {
  const reply = await acme.submitRaw("Subject: later\r\n\r\nhello\r\n", { from: "news@acme.test", to: ["later@remote.test"] }, { sendAt: Date.now() + 6_000 });
  assert.deepEqual(reply.accepted, ["later@remote.test"]);
  const added = await suppress("add", "--scope", "acme.test", "--detail", "unsubscribed by phone", "later@remote.test");
  assert.equal(added.code, 0, added.stderr);
  assert.match(added.stdout, /added 1, already on the list 0/);
  const holder = nodeNamed(reply.node);
  const suppressed = await holder.waitForEvent("recipient.suppressed", { queueId: reply.messageId, where: "delivery" }, 15_000);
  assert.deepEqual([suppressed.scope, suppressed.reason], ["acme.test", "manual"]);
  assert.equal(mx.commands.some((command) => /RCPT TO:<later@remote\.test>/i.test(command)), false, "never offered to the MX");
  assert.equal(holder.events("dsn.queued").some((line) => line.queueId === reply.messageId), false);
  assert.equal(await readMetric(holder, "tern_suppressed_total", 'where="delivery"'), 1);
  const status = await acme.status(reply.messageId);
  assert.match(JSON.stringify(status), /suppression list/);
});

test("every refusal is a suppressed event: at the API, at SMTP and before delivery", async () => {
  const events = await eventually(async () => {
    const found = await suppressedEvents();
    return found.length >= 4 ? found : undefined;
  }, 10_000, "four suppressed events");
  assert.deepEqual(events.map((e) => [e.where, e.rcpt.toLowerCase(), e.scope, e.reason, e.tenant]).sort(), [
    ["api", "gone@remote.test", "acme.test", "bad-mailbox", "acme"],
    ["api", "gone@remote.test", "acme.test", "bad-mailbox", "acme"],
    ["delivery", "later@remote.test", "acme.test", "manual", "acme"],
    ["smtp", "gone@remote.test", "acme.test", "bad-mailbox", "acme"],
  ]);
  assert.ok(events.every((e) => e.sender === "news@acme.test" && e.domain === "remote.test"));
});

test("tern suppress import, list and remove; a removed address is taken again", async () => {
  const file = join(dirs[0]!, "import.csv");
  await writeFile(file, ["address,scope", "# from the old provider", "one@remote.test", "two@remote.test,acme.test", "", "\"three@remote.test\",global"].join("\n"));
  const imported = await suppress("import", "--scope", "shop.test", file);
  assert.equal(imported.code, 0, imported.stderr);
  assert.match(imported.stdout, /added 3, already on the list 0/);
  const all = await suppress("list", "--all", "--json");
  const entries = all.stdout.trim().split("\n").map((line) => JSON.parse(line) as { address: string; scope: string; reason: string });
  assert.deepEqual(entries.map((e) => `${e.scope} ${e.address} ${e.reason}`).sort(), [
    "acme.test gone@remote.test bad-mailbox",
    "acme.test later@remote.test manual",
    "acme.test two@remote.test import",
    "example.test gone@remote.test bad-mailbox",
    "global three@remote.test import",
    "shop.test one@remote.test import",
  ]);
  const text = await suppress("list", "--address", "two@remote.test");
  assert.match(text.stdout, /^acme\.test two@remote\.test import \d{4}-\d\d-\d\dT/);
  const bad = await suppress("import", join(dirs[0]!, "missing.txt"));
  assert.equal(bad.code, 2);

  // A global entry refuses every sender at once, on both nodes.
  for (const node of nodes) {
    const refused = await submitSmtp(node, "alice@example.test", "three@remote.test");
    assert.match(refused.stdout, /<~\* 550 5\.7\.1 .*\(import, scope global\)/);
  }
  const removed = await suppress("remove", "--scope", "acme.test", "gone@remote.test", "nobody@remote.test");
  assert.equal(removed.code, 0, removed.stderr);
  assert.match(removed.stdout, /removed 1, not on the list 1/);
  await eventually(async () => {
    try {
      return (await acme.submitRaw("Subject: back\r\n\r\nhello\r\n", { from: "news@acme.test", to: ["fine@remote.test", "gone@remote.test"] })).refused.length === 0 ? true : undefined;
    } catch {
      return undefined;
    }
  }, 5_000, "gone@ taken again");
});

test("a tenant manages its own domains' entries over the API, not the global scope", async () => {
  assert.deepEqual(await acme.suppressions.add({ scope: "acme.test", addresses: ["api@remote.test"] }), { changed: ["api@remote.test"], unchanged: [] });
  await assert.rejects(acme.suppressions.add({ scope: "global", addresses: ["x@remote.test"] }), (error: TernApiError) => error.code === "ScopeNotAllowed");
  await assert.rejects(acme.suppressions.remove({ scope: "shop.test", addresses: ["one@remote.test"] }), (error: TernApiError) => error.code === "ScopeNotAllowed");
  const page = await acme.suppressions.list({});
  assert.ok(page.entries.every((e) => e.scope === "acme.test"), JSON.stringify(page.entries));
  assert.ok(page.entries.some((e) => e.address === "api@remote.test"));
  assert.deepEqual(await acme.suppressions.remove({ scope: "acme.test", addresses: ["api@remote.test"] }), { changed: ["api@remote.test"], unchanged: [] });
});

test("a local mailbox is never refused: the list is about mail leaving the cluster", async () => {
  const added = await suppress("add", "bob@example.test");
  assert.equal(added.code, 0, added.stderr);
  const sent = await submitSmtp(nodes[0]!, "alice@example.test", "bob@example.test");
  assert.equal(sent.code, 0, sent.stdout);
  const queueId = /queued as ([0-9A-Z]+)/.exec(sent.stdout)![1]!;
  await nodes[0]!.waitForEvent("recipient.delivered", { queueId, recipient: "bob@example.test" });
});
