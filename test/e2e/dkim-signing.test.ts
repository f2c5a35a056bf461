// DKIM signing end to end: a node with keys for example.test (RSA and Ed25519 selectors,
// as during a rotation), an authenticated submission with swaks relayed to a loopback
// sink, and Debian's dkimpy verifying what the sink got against the public keys that
// dnsmasq serves. The signature is made once, at acceptance: the attempt the sink defers
// and the retry that it takes carry the same bytes. Mail from a domain without keys and
// mail arriving for a local mailbox are not signed. A message composed and submitted over
// the NATS API is signed the same way.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { connectTern } from "../../cluster/client.ts";
import { startDnsmasq, type RunningDnsmasq } from "../support/dnsmasq.ts";
import { makeKey, txtRecord, verifyDkim, type TestKey } from "../support/dkim.ts";
import { startSink, type ReceivedMail, type Sink } from "../support/sink.ts";
import { eventually, makeDataDir, removeDataDir, run, startTernNode, uniqueCluster, type TernNode } from "../support/tern-node.ts";

let dns: RunningDnsmasq;
let sink: Sink;
let node: TernNode;
let dataDir: string;
const cluster = uniqueCluster();
let rsa: TestKey;
let ed: TestKey;
/** Every DATA the sink was offered, the deferred ones too. */
const offered: ReceivedMail[] = [];

before(async () => {
  dataDir = await makeDataDir();
  rsa = await makeKey(dataDir, "rsa2026", "rsa-sha256");
  ed = await makeKey(dataDir, "ed2026", "ed25519-sha256");
  sink = await startSink(0, {
    // The first attempt for deferred@ gets a 4xx; the retry is taken.
    data: (mail) => {
      offered.push(mail);
      return mail.to.includes("deferred@remote.test") && offered.filter((m) => m.to.includes("deferred@remote.test")).length === 1
        ? { code: 451, text: "4.3.0 try again later" }
        : undefined;
    },
  });
  dns = await startDnsmasq({
    mx: [{ domain: "remote.test", host: "mx.remote.test", preference: 10 }],
    hosts: [{ name: "mx.remote.test", address: "127.0.0.1" }],
    txt: [txtRecord("example.test", rsa), txtRecord("example.test", ed)],
  });
  node = await startTernNode({
    nodeId: "dkim",
    cluster,
    dataDir,
    localDomains: ["example.test"],
    users: [
      { address: "alice@example.test", password: "alice-secret", aliases: ["alice@nokeys.test"] },
      { address: "bob@example.test", password: "bob-secret" },
    ],
    trustedNetworks: ["192.0.2.0/24"], // loopback is not trusted: what comes without AUTH is inbound MX mail
    dkim: {
      domains: {
        "example.test": [
          { selector: rsa.selector, algorithm: rsa.algorithm, keyFile: rsa.keyFile },
          { selector: ed.selector, algorithm: ed.algorithm, keyFile: ed.keyFile },
        ],
      },
    },
    dns: { servers: [`${dns.host}:${dns.port}`], timeoutMs: 500, tries: 1, allowedTargetNetworks: ["127.0.0.0/8"] },
    delivery: { remotePort: sink.port, pollMs: 50, retryBaseMs: 300, retryMaxMs: 1000 },
  });
});

after(async () => {
  await node?.kill("SIGTERM");
  await Promise.all([sink?.close(), dns?.stop()]);
  await removeDataDir(dataDir);
});

const submit = async (from: string, to: string, data: string) => {
  const sent = await run("swaks", [
    "--server", "127.0.0.1", "--hide-informational",
    "--port", String(node.ports.smtp), "--tls", "--auth", "PLAIN", "--auth-user", "alice@example.test", "--auth-password", "alice-secret",
    "--from", from, "--to", to, "--data", data,
  ]);
  assert.equal(sent.code, 0, sent.stdout + sent.stderr);
  return /queued as ([0-9A-Z]+)/.exec(sent.stdout)![1]!;
};

test("submitted mail reaches the remote signed by both selectors; the deferred attempt and the retry send identical bytes", async () => {
  const queueId = await submit(
    "alice@example.test",
    "deferred@remote.test",
    "From: Alice <alice@example.test>\r\nTo: deferred@remote.test\r\nSubject: signed once\r\n\r\nThe body,   with  spaces.\r\n",
  );
  const delivered = await eventually(() => sink.received.find((m) => m.body.includes(queueId)), 20_000, "the retried mail");
  const attempts = offered.filter((m) => m.body.includes(queueId));
  assert.equal(attempts.length, 2, "one deferred attempt, one accepted");
  assert.ok(attempts[0]!.body.equals(attempts[1]!.body), "the retry sends the bytes of the first attempt");
  const text = delivered.body.toString("latin1");
  // The signatures come first, above Tern's Received field, and cover the Message-ID and Date Tern added.
  assert.match(text, /^DKIM-Signature: [^]*?\r\nDKIM-Signature: [^]*?\r\nReceived: from /);
  assert.match(text, /h=[^;]*Message-ID/i);
  const checks = await verifyDkim(delivered.body, dns);
  assert.deepEqual(
    checks.map((c) => `${c.domain} ${c.selector} ${c.algorithm} ${c.ok}`).sort(),
    ["example.test ed2026 ed25519-sha256 true", "example.test rsa2026 rsa-sha256 true"],
  );
});

test("mail from a domain without a key is relayed unsigned", async () => {
  const queueId = await submit("alice@nokeys.test", "someone@remote.test", "From: alice@nokeys.test\r\nTo: someone@remote.test\r\nSubject: no key\r\n\r\nunsigned\r\n");
  const arrived = await eventually(() => sink.received.find((m) => m.body.includes(queueId)), 20_000, "unsigned mail");
  assert.doesNotMatch(arrived.body.toString("latin1"), /DKIM-Signature:/i);
  assert.deepEqual(await verifyDkim(arrived.body, dns), []);
});

test("inbound mail for a local mailbox is not signed, even with a From in a signing domain", async () => {
  const sent = await run("swaks", [
    "--server", "127.0.0.1", "--hide-informational", "--port", String(node.ports.smtp),
    "--from", "someone@example.test", "--to", "bob@example.test",
    "--data", "From: someone@example.test\r\nTo: bob@example.test\r\nSubject: inbound\r\n\r\nfor bob\r\n",
  ]);
  assert.equal(sent.code, 0, sent.stdout + sent.stderr);
  const stored = await eventually(
    async () => {
      const retrieved = await run("curl", ["-s", `pop3://bob%40example.test:bob-secret@127.0.0.1:${node.ports.pop3}/1`]);
      return retrieved.stdout.includes("for bob") ? retrieved.stdout : undefined;
    },
    20_000,
    "the message in bob's mailbox",
  );
  assert.match(stored, /Subject: inbound/);
  assert.doesNotMatch(stored, /DKIM-Signature:/i);
});

test("a message submitted over the NATS API is signed too", async () => {
  const tern = await connectTern({ cluster });
  try {
    const reply = await tern.submit({ from: "Alice <alice@example.test>", to: "api@remote.test", subject: "Composed ✓", text: "composed by the node\n" });
    const arrived = await eventually(() => sink.received.find((m) => m.body.toString("latin1").includes(` with NATS id ${reply.messageId}`)), 20_000, "API mail");
    const checks = await verifyDkim(arrived.body, dns);
    assert.deepEqual(checks.map((c) => `${c.selector} ${c.ok}`).sort(), ["ed2026 true", "rsa2026 true"]);
  } finally {
    await tern.close();
  }
});
