// Submission: STARTTLS and implicit TLS, AUTH PLAIN/LOGIN only over TLS, senders
// limited to the user's own addresses, Message-ID/Date added, failed logins limited
// per IP and per (user, IP) without locking the real user out; DSN parameters kept.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { open } from "lmdb";
import { startDnsmasq, type RunningDnsmasq } from "../support/dnsmasq.ts";
import { startSink, type Sink } from "../support/sink.ts";
import { openRaw } from "../support/raw-socket.ts";
import { eventually, makeDataDir, removeDataDir, run, startTernNode, uniqueCluster, type TernNode } from "../support/tern-node.ts";

let dns: RunningDnsmasq;
let sink: Sink;
let node: TernNode;
let dataDir: string;
let config: Parameters<typeof startTernNode>[0];

before(async () => {
  // "nobody…" at remote.test does not exist: its failure comes back as a DSN.
  sink = await startSink(0, { rcpt: (address) => (address.startsWith("nobody") ? { code: 550, text: "5.1.1 no such user" } : undefined) });
  dns = await startDnsmasq({
    mx: [{ domain: "remote.test", host: "mx.remote.test", preference: 10 }],
    hosts: [{ name: "mx.remote.test", address: "127.0.0.1" }],
  });
  dataDir = await makeDataDir();
  config = {
    nodeId: "submit",
    cluster: uniqueCluster(),
    dataDir,
    localDomains: ["example.test"],
    users: [
      { address: "alice@example.test", password: "alice-secret", aliases: ["sales@example.test"] },
      { address: "bob@example.test", password: "bob-secret" },
    ],
    trustedNetworks: ["192.0.2.0/24"], // loopback is not trusted: relaying needs AUTH
    dns: { servers: [`${dns.host}:${dns.port}`], timeoutMs: 500, tries: 1, allowedTargetNetworks: ["127.0.0.0/8"] },
    delivery: { remotePort: sink.port, pollMs: 50, retryBaseMs: 60_000 },
  };
  node = await startTernNode(config);
});

after(async () => {
  await node.kill("SIGTERM");
  await Promise.all([sink.close(), dns.stop()]);
  await removeDataDir(dataDir);
});

const swaks = (args: string[]) => run("swaks", ["--server", "127.0.0.1", "--hide-informational", ...args]);

test("AUTH is offered only after STARTTLS; an authenticated user relays and gets Message-ID and Date added", async () => {
  const plain = await openRaw(node.ports.smtp);
  await plain.waitFor(/^220 /);
  plain.send("EHLO c.test\r\n");
  const ehlo = await plain.waitFor(/250 SIZE \d+\r\n/);
  assert.match(ehlo, /250-STARTTLS/);
  assert.doesNotMatch(ehlo, /AUTH/);
  plain.send("AUTH PLAIN AGFsaWNlQGV4YW1wbGUudGVzdABhbGljZS1zZWNyZXQ=\r\n");
  await plain.waitFor(/\r\n5\d\d [^\r\n]*\r\n$/);
  plain.close();

  const sent = await swaks([
    "--port", String(node.ports.smtp), "--tls", "--auth", "PLAIN", "--auth-user", "alice@example.test", "--auth-password", "alice-secret",
    "--from", "alice@example.test", "--to", "someone@remote.test", "--add-header", "X-Case: submit",
    "--data", "From: alice@example.test\r\nTo: someone@remote.test\r\nSubject: no id, no date\r\n\r\nhello\r\n",
  ]);
  assert.equal(sent.code, 0, sent.stdout + sent.stderr);
  assert.match(sent.stdout, /250-AUTH PLAIN LOGIN/);
  assert.match(sent.stdout, /235 2\.7\.0 /);
  const queueId = /queued as ([0-9A-Z]+)/.exec(sent.stdout)![1]!;
  const arrived = await eventually(() => sink.received.find((m) => m.body.includes(queueId)), 10_000, "submitted mail");
  const text = arrived.body.toString();
  assert.match(text, /with ESMTPSA id /);
  assert.match(text, new RegExp(`\r\nMessage-ID: <${queueId}@[^>]+>\r\n`));
  assert.match(text, /\r\nDate: [A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} /);
});

test("a message that has Message-ID and Date keeps them (no second copy)", async () => {
  const sent = await swaks([
    "--port", String(node.ports.smtps), "--tls-on-connect", "--auth", "LOGIN", "--auth-user", "alice@example.test", "--auth-password", "alice-secret",
    "--from", "sales@example.test", "--to", "someone@remote.test",
  ]);
  assert.equal(sent.code, 0, sent.stdout + sent.stderr);
  const queueId = /queued as ([0-9A-Z]+)/.exec(sent.stdout)![1]!;
  const arrived = await eventually(() => sink.received.find((m) => m.body.includes(queueId)), 10_000, "implicit-TLS mail");
  const text = arrived.body.toString();
  assert.equal(text.match(/\r\nMessage-Id:/gi)?.length, 1);
  assert.equal(text.match(/\r\nDate:/gi)?.length, 1);
  assert.match(text, /with ESMTPSA id /);
});

test("an authenticated user may not send as someone else (553 5.7.1)", async () => {
  const sent = await swaks([
    "--port", String(node.ports.smtp), "--tls", "--auth", "PLAIN", "--auth-user", "alice@example.test", "--auth-password", "alice-secret",
    "--from", "bob@example.test", "--to", "someone@remote.test", "--quit-after", "MAIL",
  ]);
  assert.match(sent.stdout, /<~\* +553 5\.7\.1 Sender address rejected: not owned by user alice@example\.test/);
});

test("AUTH inside a mail transaction is refused (503 5.5.1): a sender given before the login is never taken as the user's", async () => {
  const client = await openRaw(node.ports.smtps, { tls: true });
  try {
    await client.waitFor(/^220 /);
    client.send("EHLO c.test\r\n");
    await client.waitFor(/250 [^\r\n]*\r\n$/);
    client.send("MAIL FROM:<ceo@bank.example>\r\n");
    await client.waitFor(/250 [^\r\n]*\r\n$/);
    client.send(`AUTH PLAIN ${Buffer.from("\0alice@example.test\0alice-secret").toString("base64")}\r\n`);
    assert.match(await client.waitFor(/\r\n5\d\d [^\r\n]*\r\n$/), /503 5\.5\.1 AUTH not permitted during a mail transaction\r\n$/);
    // Still not logged in: relaying is refused.
    client.send("RCPT TO:<victim@remote.test>\r\n");
    assert.match(await client.waitFor(/\r\n(?:250|554) [^\r\n]*\r\n$/), /\r\n554 5\.7\.1 [^\r\n]*\r\n$/);
    // After RSET the same login works, and the sender is checked against the user.
    client.send(`RSET\r\nAUTH PLAIN ${Buffer.from("\0alice@example.test\0alice-secret").toString("base64")}\r\n`);
    await client.waitFor(/\r\n235 [^\r\n]*\r\n$/);
    client.send("MAIL FROM:<ceo@bank.example>\r\n");
    assert.match(await client.waitFor(/\r\n553 [^\r\n]*\r\n$/), /553 5\.7\.1 Sender address rejected: not owned by user alice@example\.test/);
  } finally {
    client.close();
  }
});

test("failed logins are limited per (user, IP) and per IP, but the real user on another address still gets in", async () => {
  const attempt = (password: string, source: string) => `
import smtplib, ssl
s = smtplib.SMTP("127.0.0.1", ${node.ports.smtp}, timeout=10, source_address=("${source}", 0))
s.starttls(context=ssl._create_unverified_context())
s.ehlo()
s.user, s.password = "bob@example.test", "${password}"
try:
    s.auth("PLAIN", s.auth_plain)  # one AUTH command per attempt (login() would try several)
    print("235")
except smtplib.SMTPResponseException as e:
    print(e.smtp_code, e.smtp_error.decode())
s.close()`;
  const codes: string[] = [];
  for (let i = 0; i < 6; i++) codes.push((await run("python3", ["-c", attempt("wrong", "127.0.0.1")])).stdout.trim());
  assert.deepEqual(codes.slice(0, 5).map((c) => c.slice(0, 3)), ["535", "535", "535", "535", "535"]);
  assert.match(codes[5]!, /^454 4\.7\.0 Too many failed authentication attempts/);
  const blockedEvenWithPassword = await run("python3", ["-c", attempt("bob-secret", "127.0.0.1")]);
  assert.match(blockedEvenWithPassword.stdout, /^454 /);
  const fromElsewhere = await run("python3", ["-c", attempt("bob-secret", "127.0.0.2")]);
  assert.equal(fromElsewhere.stdout.trim(), "235", fromElsewhere.stderr);
});

test("DSN parameters (RET, ENVID, NOTIFY, ORCPT) are accepted and stored with the queued message", async () => {
  const sent = await run("python3", ["-c", `
import smtplib, ssl
s = smtplib.SMTP("127.0.0.1", ${node.ports.smtp}, timeout=10)
s.starttls(context=ssl._create_unverified_context())
s.login("alice@example.test", "alice-secret")
s.sendmail("alice@example.test", ["waiting@unresolvable.example"], b"Subject: dsn\\r\\n\\r\\nkeep me\\r\\n",
  mail_options=["RET=HDRS", "ENVID=env-42"], rcpt_options=["NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;waiting@unresolvable.example"])
print("ok")
s.quit()`]);
  assert.equal(sent.stdout.trim(), "ok", sent.stderr);
  await node.waitForEvent("recipient.deferred", { recipient: "waiting@unresolvable.example" });
  await node.kill("SIGTERM");
  const root = open({ path: join(dataDir, "tern.lmdb"), readOnly: true });
  const messages = root.openDB<{ sender: string; attributes?: Record<string, any> }, string>({ name: "spool.messages" });
  const records = [...messages.getRange().map(({ value }) => value)].filter((m) => m.sender === "alice@example.test");
  await root.close();
  assert.equal(records.length, 1);
  const attributes = records[0]!.attributes!;
  assert.equal(attributes.user, "alice@example.test");
  assert.deepEqual({ ret: attributes.dsn.ret, envid: attributes.dsn.envid }, { ret: "HDRS", envid: "env-42" });
  assert.deepEqual(attributes.recipientDsn["waiting@unresolvable.example"].notify, ["SUCCESS", "FAILURE"]);
  assert.match(attributes.recipientDsn["waiting@unresolvable.example"].orcpt, /waiting@unresolvable\.example/);
  node = await startTernNode(config); // for the hooks that follow
});

test("ENVID and ORCPT come back in the failure DSN as the client meant them: decoded from xtext once", async () => {
  const sent = await run("python3", ["-c", `
import smtplib, ssl
s = smtplib.SMTP("127.0.0.1", ${node.ports.smtp}, timeout=10)
s.starttls(context=ssl._create_unverified_context())
s.login("alice@example.test", "alice-secret")
s.sendmail("alice@example.test", ["nobody+2024@remote.test"], b"Subject: to nobody\\r\\n\\r\\nhello\\r\\n",
  mail_options=["ENVID=id+2B4142"], rcpt_options=["ORCPT=rfc822;nobody+2B2024@remote.test"])
s.quit()
print("ok")`]);
  assert.equal(sent.stdout.trim(), "ok", sent.stderr);
  const dsn = await eventually(async () => {
    const read = await run("python3", ["-c", `
import poplib, json
p = poplib.POP3("127.0.0.1", ${node.ports.pop3}, timeout=10)
p.user("alice@example.test"); p.pass_("alice-secret")
print(json.dumps([b"\\r\\n".join(p.retr(n + 1)[1]).decode("latin-1") for n in range(p.stat()[0])]))
p.quit()`]);
    return (JSON.parse(read.stdout || "[]") as string[]).find((m) => m.includes("Original-Envelope-Id"));
  }, 20_000, "the failure DSN in alice's mailbox");
  assert.match(dsn, /\r\nOriginal-Envelope-Id: id\+4142\r\n/);
  assert.match(dsn, /\r\nOriginal-Recipient: rfc822; nobody\+2024@remote\.test\r\n/);
});

test("swaks with PIPELINING (and 8-bit text) is accepted in one go", async () => {
  const sent = await swaks([
    "--port", String(node.ports.smtp), "--pipeline", "--tls", "--auth", "PLAIN", "--auth-user", "alice@example.test", "--auth-password", "alice-secret",
    "--from", "alice@example.test", "--to", "bob@example.test", "--data", "Subject: caf\u00e9\r\n\r\ncr\u00e8me br\u00fbl\u00e9e\r\n",
  ]);
  assert.equal(sent.code, 0, sent.stdout + sent.stderr);
  assert.match(sent.stdout, /250-PIPELINING/);
  assert.match(sent.stdout, / ~> MAIL FROM:<alice@example\.test>\n ~> RCPT TO:<bob@example\.test>\n ~> DATA\n/); // sent together
  assert.match(sent.stdout, /queued as [0-9A-Z]+/);
});
