// swaks → session → spool → mailbox → read back with Python's poplib and curl.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { openRaw } from "../support/raw-socket.ts";
import { makeDataDir, readMetric, removeDataDir, run, startTernNode, uniqueCluster, eventually, type TernNode } from "../support/tern-node.ts";

let node: TernNode;
let dataDir: string;

before(async () => {
  dataDir = await makeDataDir();
  node = await startTernNode({
    nodeId: "solo",
    cluster: uniqueCluster(),
    dataDir,
    localDomains: ["example.test", "xn--bcher-kva.test"],
    users: [
      { address: "alice@example.test", password: "alice-pw" },
      { address: "bob@example.test", password: "bob-pw" },
      { address: "carol@example.test", password: "carol-pw" },
      { address: "dave@example.test", password: "dave-pw" },
      { address: "anna@xn--bcher-kva.test", password: "anna-pw" },
    ],
    trustedNetworks: ["192.0.2.0/24"], // loopback is NOT trusted here: relaying must be refused
  });
});

after(async () => {
  await node.kill("SIGTERM");
  await removeDataDir(dataDir);
});

const swaks = (args: string[]) => run("swaks", ["--server", `127.0.0.1:${node.ports.smtp}`, "--hide-informational", ...args]);

const popMessages = async (user: string, password: string) => {
  const script = `
import poplib, json, sys
p = poplib.POP3("127.0.0.1", ${node.ports.pop3}, timeout=10)
p.user(${JSON.stringify(user)}); p.pass_(${JSON.stringify(password)})
count, size = p.stat()
out = []
for n in range(1, count + 1):
    resp, lines, octets = p.retr(n)
    out.append(b"\\r\\n".join(lines).decode("latin-1"))
print(json.dumps(out))
p.quit()
`;
  const result = await run("python3", ["-c", script]);
  assert.equal(result.code, 0, result.stderr);
  return JSON.parse(result.stdout) as string[];
};

test("mail for a local user is accepted with its queue id and read back over POP3 byte for byte", async () => {
  const body = "Line one\r\n.leading dot line\r\nLast line";
  const sent = await swaks([
    "--to", "alice@example.test",
    "--from", "sender@elsewhere.test",
    "--header", "Subject: first message",
    "--body", body,
  ]);
  assert.equal(sent.code, 0, sent.stdout + sent.stderr);
  const queueId = /250 2\.0\.0 Ok: queued as ([0-9A-Z]+)/.exec(sent.stdout)?.[1];
  assert.ok(queueId, `no queue id in: ${sent.stdout}`);
  await node.waitForEvent("recipient.delivered", { queueId });

  const messages = await popMessages("alice@example.test", "alice-pw");
  assert.equal(messages.length, 1);
  const message = messages[0]!;
  // Final delivery puts the envelope sender and the mailbox's address in front (RFC 5321 §4.4); then, for
  // inbound (MX) mail, the node's Authentication-Results field, its Received field, and what was sent.
  assert.match(message, /^Return-Path: <sender@elsewhere\.test>\r\nDelivered-To: alice@example\.test\r\nAuthentication-Results: [^;\r\n]+;(?:\r\n [^\r\n]*)+\r\nReceived: from .*\r\n\tby .* \(Tern\) with ESMTP id [0-9A-Z]+\r\n\tfor <alice@example\.test>;/);
  assert.match(message, /\r\nSubject: first message\r\n/);
  // swaks ends the body with blank lines of its own
  assert.match(message, new RegExp(`\r\n\r\n${body.replace(".", "\\.")}(\r\n)*$`), `body differs: ${JSON.stringify(message.slice(-80))}`);

  // bob's mailbox is his alone
  assert.deepEqual(await popMessages("bob@example.test", "bob-pw"), []);
});

test("an EHLO name cannot add header fields: what is not printable ASCII is written as '?' in the Received field", async () => {
  // 不 is U+4E0D and 上 U+4E0A: written byte by byte (latin1) their low bytes are CR and LF.
  const raw = await openRaw(node.ports.smtp);
  try {
    await raw.waitFor(/^220 /m);
    raw.send(Buffer.from("EHLO a不上X-Injected:yes\r\n", "utf8"));
    await raw.waitFor(/^250 /m);
    raw.send("MAIL FROM:<sender@elsewhere.test>\r\nRCPT TO:<dave@example.test>\r\nDATA\r\n");
    await raw.waitFor(/^354 /m);
    raw.send("Subject: injected?\r\n\r\nhello\r\n.\r\nQUIT\r\n");
    await raw.waitFor(/^250 2\.0\.0 Ok: queued as/m);
  } finally {
    raw.close();
  }
  const message = await eventually(async () => (await popMessages("dave@example.test", "dave-pw")).find((m) => m.includes("Subject: injected?")));
  // (smtp-server lowercases the name.) The Authentication-Results field names the HELO the same way.
  assert.match(message, /\r\nReceived: from a\?\?x-injected:yes \(/);
  assert.match(message, /smtp\.helo="?a\?\?x-injected:yes/);
  assert.doesNotMatch(message.split("\r\n\r\n")[0]!, /[^\x00-\x7f]/, "the header section is ASCII");
  assert.doesNotMatch(message, /\r\nX-Injected/i, "no field of the client's making");
});

test("a POP3 session on a mailbox that never had mail ends with +OK though its first mail arrived meanwhile; the next session sees it", async () => {
  const script = `
import poplib, subprocess, time, json
def login():
    p = poplib.POP3("127.0.0.1", ${node.ports.pop3}, timeout=10)
    p.user("carol@example.test"); p.pass_("carol-pw")
    return p
first = login()
before = first.stat()[0]
sent = subprocess.run(["swaks", "--server", "127.0.0.1:${node.ports.smtp}", "--to", "carol@example.test", "--from", "s@elsewhere.test", "--hide-all"]).returncode
arrived = 0
for _ in range(100):
    other = login(); arrived = other.stat()[0]; other.quit()
    if arrived: break
    time.sleep(0.1)
during = first.stat()[0]
quit = first.quit().decode()
last = login(); after = last.stat()[0]; last.quit()
print(json.dumps([before, sent, arrived, during, quit, after]))
`;
  const result = await run("python3", ["-c", script]);
  assert.equal(result.code, 0, result.stderr);
  const [before, sent, arrived, during, quit, after] = JSON.parse(result.stdout) as [number, number, number, number, string, number];
  assert.deepEqual([before, sent, arrived], [0, 0, 1], "empty at login; the mail arrived while the session was open");
  assert.equal(during, 0, "the session keeps the view it opened with (RFC 1939)");
  assert.match(quit, /^\+OK /);
  assert.equal(after, 1);
});

test("IDN domains written as A-labels (xn--) need no SMTPUTF8: accepted, delivered and kept in that form", async () => {
  const sent = await swaks(["--to", "anna@xn--bcher-kva.test", "--from", "jo@xn--mnchen-3ya.example", "--header", "Subject: idn"]);
  assert.equal(sent.code, 0, sent.stdout + sent.stderr);
  const queueId = /250 2\.0\.0 Ok: queued as ([0-9A-Z]+)/.exec(sent.stdout)?.[1];
  assert.ok(queueId, sent.stdout);
  await node.waitForEvent("recipient.delivered", { queueId });
  const [message] = await popMessages("anna@xn--bcher-kva.test", "anna-pw");
  assert.match(message!, /^Return-Path: <jo@xn--mnchen-3ya\.example>\r\nDelivered-To: anna@xn--bcher-kva\.test\r\n/);
});

test("curl lists and retrieves the same mailbox", async () => {
  await swaks(["--to", "bob@example.test", "--from", "x@elsewhere.test", "--body", "for curl"]);
  const listing = await eventually(async () => {
    const result = await run("curl", ["-s", `pop3://bob%40example.test:bob-pw@127.0.0.1:${node.ports.pop3}/`]);
    return result.stdout.trim() !== "" ? result.stdout : undefined;
  }, 10_000, "bob's mail");
  assert.match(listing, /^1 \d+\r?\n$/);
  const retrieved = await run("curl", ["-s", `pop3://bob%40example.test:bob-pw@127.0.0.1:${node.ports.pop3}/1`]);
  assert.match(retrieved.stdout, /\r\n\r\nfor curl\r\n/);
});

test("relaying from an untrusted network is refused with 554 5.7.1, unknown local users with 550 5.1.1", async () => {
  const relay = await swaks(["--to", "someone@remote.test", "--from", "a@example.test", "--quit-after", "RCPT"]);
  assert.match(relay.stdout, /<\*\* +554 5\.7\.1 Relay access denied/);
  const unknown = await swaks(["--to", "nobody@example.test", "--from", "a@elsewhere.test", "--quit-after", "RCPT"]);
  assert.match(unknown.stdout, /<\*\* +550 5\.1\.1 No such user here/);
  const metrics = await (await fetch(`http://127.0.0.1:${node.ports.http}/metrics`)).text();
  assert.match(metrics, /tern_smtp_rejections_total\{reason="relay-denied"\} 1/);
  assert.match(metrics, /tern_smtp_rejections_total\{reason="unknown-user"\} 1/);
});

test("the node reports healthy and ready and exposes delivery metrics", async () => {
  assert.equal((await fetch(`http://127.0.0.1:${node.ports.http}/healthz`)).status, 200);
  const ready = await fetch(`http://127.0.0.1:${node.ports.http}/readyz`);
  assert.equal(ready.status, 200);
  const metrics = await (await fetch(`http://127.0.0.1:${node.ports.http}/metrics`)).text();
  assert.match(metrics, /^tern_messages_accepted_total [1-9]/m);
  assert.match(metrics, /tern_recipients_delivered_total\{route="local"\} [1-9]/);
  assert.equal(await readMetric(node, "tern_queue_depth"), 0);
  assert.match(metrics, /process_resident_memory_bytes/);
});
