// The log as an operator reads it (docs/ops/logs.md), from a real node driven by real
// clients: Python's smtplib, poplib and imaplib from chosen loopback addresses, a raw
// socket that hangs up mid-DATA, and delivery through dnsmasq to a sink that defers one
// recipient once. Checked: a line per connection, rejection, failed login, accepted
// message and delivery attempt, with the fields the docs promise; every line's level,
// time and names; and the fail2ban filter of docs/ops/fail2ban/, run over this log by
// Python's re (as fail2ban runs it) and, where fail2ban is installed (CI installs it), by
// fail2ban-regex, with the jail read by fail2ban-client.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { startDnsmasq, type RunningDnsmasq } from "../support/dnsmasq.ts";
import { imapLoginFrom, popLoginFrom, smtpAuthFrom } from "../support/python-logins.ts";
import { openRaw } from "../support/raw-socket.ts";
import { startSink, type Sink } from "../support/sink.ts";
import { eventually, makeDataDir, projectRoot, removeDataDir, run, startTernNode, uniqueCluster, type TernNode } from "../support/tern-node.ts";

let dns: RunningDnsmasq;
let sink: Sink;
let node: TernNode;
let dataDir: string;
let laterAsked = 0;

/** Lines of the node's stdout, as written. */
const lines = () => node.logs().split("\n").filter((line) => line.startsWith("{"));

before(async () => {
  // later@ is deferred at its first RCPT, accepted after; everyone else at once.
  sink = await startSink(0, { rcpt: (address) => (address === "later@remote.test" && laterAsked++ === 0 ? { code: 451, text: "4.2.1 try again later" } : undefined) });
  dns = await startDnsmasq({
    mx: [{ domain: "remote.test", host: "mx.remote.test", preference: 10 }],
    hosts: [{ name: "mx.remote.test", address: "127.0.0.1" }],
  });
  dataDir = await makeDataDir();
  node = await startTernNode({
    nodeId: "acct",
    cluster: uniqueCluster(),
    dataDir,
    localDomains: ["example.test"],
    users: [{ address: "alice@example.test", password: "alice-pw" }],
    // 127.0.0.1 relays; the other loopback addresses are strangers.
    trustedNetworks: ["127.0.0.1/32"],
    inbound: { authenticate: false },
    dns: { servers: [`${dns.host}:${dns.port}`], timeoutMs: 1000, tries: 2, allowedTargetNetworks: ["127.0.0.0/8"] },
    delivery: { remotePort: sink.port, retryBaseMs: 300, retryMaxMs: 1000, pollMs: 50 },
  });
});

after(async () => {
  await node?.kill("SIGTERM");
  await Promise.all([sink?.close(), dns?.stop()]);
  await removeDataDir(dataDir);
});

/** Runs a Python SMTP conversation from `source`; prints the replies it got as JSON. */
const smtpFrom = async (source: string, script: string): Promise<Record<string, unknown>> => {
  const program = `
import smtplib, json, sys
s = smtplib.SMTP("127.0.0.1", int(sys.argv[1]), timeout=20, source_address=(sys.argv[2], 0))
s.ehlo("client.test")
out = {}
${script}
s.quit()
print(json.dumps(out))`;
  const result = await run("python3", ["-c", program, String(node.ports.smtp), source]);
  assert.equal(result.code, 0, result.stderr);
  return JSON.parse(result.stdout) as Record<string, unknown>;
};

const HOSTILE_USER = 'evil","client":"198.51.100.1';

test("a failed login of each protocol is one auth.failed line: protocol, conn, client and user, in that order", async () => {
  assert.match((await smtpAuthFrom(node.ports.smtp, "alice@example.test", "wrong", "127.0.0.7")).reply, /^535 /);
  assert.match((await smtpAuthFrom(node.ports.smtp, HOSTILE_USER, "wrong", "127.0.0.7")).reply, /^535 /);
  assert.match((await popLoginFrom(node.ports.pop3, "alice@example.test", "wrong", "127.0.0.8")).reply, /^-ERR \[AUTH\]/);
  assert.match((await imapLoginFrom(node.ports.imap, "alice@example.test", "wrong", "127.0.0.9")).reply, /^NO .*AUTHENTICATIONFAILED/);
  // And the right password, from an address of its own: a success is no failure.
  assert.match((await popLoginFrom(node.ports.pop3, "alice@example.test", "alice-pw", "127.0.0.12")).reply, /^\+OK/);

  const failed = await eventually(() => (node.events("auth.failed").length >= 4 ? node.events("auth.failed") : undefined), 10_000, "four auth.failed lines");
  assert.deepEqual(failed.map((line) => [line.protocol, line.client, line.user]), [
    ["smtp", "127.0.0.7", "alice@example.test"],
    ["smtp", "127.0.0.7", HOSTILE_USER],
    ["pop3", "127.0.0.8", "alice@example.test"],
    ["imap", "127.0.0.9", "alice@example.test"],
  ]);
  for (const line of failed) {
    assert.deepEqual(Object.keys(line).slice(0, 8), ["level", "time", "node", "event", "protocol", "conn", "client", "user"]);
    assert.equal(typeof line.conn, "string");
  }
  assert.deepEqual([failed[0]!.code, failed[0]!.dsn, failed[0]!.reply], [535, "5.7.8", "535 5.7.8 Authentication credentials invalid"]);
  const succeeded = await node.waitForEvent("auth.succeeded", { protocol: "pop3", client: "127.0.0.12" });
  assert.equal(succeeded.user, "alice@example.test");
});

test("each refused command is an smtp.rejected line with its stage, reason, code, enhanced code and reply", async () => {
  const replies = await smtpFrom("127.0.0.10", `
s.mail("someone@elsewhere.test")
out["unknown"] = list(s.rcpt("nobody@example.test"))
out["relay"] = list(s.rcpt("someone@remote.test"))
out["unknown"][1] = out["unknown"][1].decode(); out["relay"][1] = out["relay"][1].decode()`);
  assert.deepEqual([(replies.unknown as unknown[])[0], (replies.relay as unknown[])[0]], [550, 554]);
  const unknown = await node.waitForEvent("smtp.rejected", { client: "127.0.0.10", reason: "unknown-user" });
  assert.deepEqual(
    [unknown.stage, unknown.code, unknown.dsn, unknown.reply, unknown.sender, unknown.recipient],
    ["rcpt", 550, "5.1.1", "550 5.1.1 No such user here", "someone@elsewhere.test", "nobody@example.test"],
  );
  const relay = await node.waitForEvent("smtp.rejected", { client: "127.0.0.10", reason: "relay-denied" });
  assert.deepEqual([relay.stage, relay.code, relay.dsn, relay.recipient], ["rcpt", 554, "5.7.1", "someone@remote.test"]);
  assert.equal(relay.conn, unknown.conn, "one connection");
  const closed = await node.waitForEvent("connection.closed", { conn: unknown.conn });
  assert.deepEqual([closed.protocol, closed.client, closed.accepted, closed.rejections], ["smtp", "127.0.0.10", 0, 2]);
});

test("an accepted message, then one line per recipient and attempt: MX, IP, reply, delay and attempt number", async () => {
  const replies = await smtpFrom("127.0.0.1", `
msg = "From: news@client.test\\r\\nTo: now@remote.test\\r\\nMessage-ID: <acct-1@client.test>\\r\\nSubject: accounting\\r\\n\\r\\nHello.\\r\\n"
s.mail("news@client.test")
s.rcpt("now@remote.test"); s.rcpt("later@remote.test")
out["data"] = s.data(msg)[1].decode()`);
  const queueId = /queued as ([0-9A-Z]+)/.exec(String(replies.data))?.[1];
  assert.ok(queueId, String(replies.data));

  const accepted = await node.waitForEvent("message.accepted", { queueId });
  assert.deepEqual(
    [accepted.client, accepted.messageId, accepted.sender, accepted.recipients],
    ["127.0.0.1", "<acct-1@client.test>", "news@client.test", ["now@remote.test", "later@remote.test"]],
  );
  assert.ok(typeof accepted.size === "number" && accepted.size > 100, `size ${accepted.size}`);
  const opened = node.events("connection.opened").find((line) => line.conn === accepted.conn);
  assert.deepEqual([opened?.protocol, opened?.listener, opened?.client], ["smtp", "smtp", "127.0.0.1"]);
  const closed = await node.waitForEvent("connection.closed", { conn: accepted.conn });
  assert.equal(closed.accepted, 1);
  assert.ok(typeof closed.durationMs === "number" && closed.durationMs >= 0);

  const now = await node.waitForEvent("recipient.delivered", { queueId, recipient: "now@remote.test" });
  const deferred = await node.waitForEvent("recipient.deferred", { queueId, recipient: "later@remote.test" });
  const later = await node.waitForEvent("recipient.delivered", { queueId, recipient: "later@remote.test" }, 15_000);
  for (const line of [now, deferred, later]) {
    assert.deepEqual([line.sender, line.mx, line.ip], ["news@client.test", "mx.remote.test", "127.0.0.1"]);
    assert.ok(typeof line.delayMs === "number" && line.delayMs >= 0, `delayMs ${line.delayMs}`);
    assert.equal(typeof line.entry, "string");
  }
  assert.deepEqual([now.attempt, deferred.attempt, later.attempt], [1, 1, 2]);
  assert.match(String(now.reply), /^250 /);
  assert.equal(deferred.reply, "451 4.2.1 try again later");
  assert.equal(deferred.dsn, "4.2.1");
  assert.match(String(deferred.nextAttemptAt), /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
  assert.ok((later.delayMs as number) > (deferred.delayMs as number), "the retry's delay counts from acceptance");
});

test("a client hanging up in the middle of DATA is an aborted transaction, not a crash", async () => {
  const smtp = await openRaw(node.ports.smtp, { localAddress: "127.0.0.11" });
  await smtp.waitFor(/^220 /);
  smtp.send("EHLO client.test\r\nMAIL FROM:<a@client.test>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n");
  await smtp.waitFor(/\r\n354 /);
  smtp.send("Subject: cut\r\n\r\nhalf a message\r\n");
  await eventually(async () => ((await fetch(`http://127.0.0.1:${node.ports.http}/metrics`).then((r) => r.text())).includes("tern_spool_incoming_bodies 1") ? true : undefined), 10_000, "the body in the spool");
  smtp.close();
  const aborted = await node.waitForEvent("session.data.aborted", { client: "127.0.0.11" });
  assert.equal(aborted.level, "info");
  await node.waitForEvent("connection.closed", { conn: aborted.conn });
  assert.deepEqual(node.events("session.data.crashed"), []);
});

const RETIRED = ["msg", "rcpt", "rcpts", "from", "to", "mailFrom", "remote", "address", "bytes", "attempts", "detail", "note", "why"];

test("every line: level, ISO-8601 UTC time, node and event first; no retired field names; nothing logged as an error", () => {
  const parsed = lines().map((line) => JSON.parse(line) as Record<string, unknown>);
  assert.ok(parsed.length > 20);
  for (const line of parsed) {
    assert.deepEqual(Object.keys(line).slice(0, 4), ["level", "time", "node", "event"], JSON.stringify(line));
    assert.ok(["info", "warn", "error"].includes(String(line.level)), JSON.stringify(line));
    assert.match(String(line.time), /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    assert.equal(line.node, "acct");
    assert.deepEqual(RETIRED.filter((name) => name in line), [], JSON.stringify(line));
  }
  assert.deepEqual(parsed.filter((line) => line.level === "error"), []);
});

/** The filter's failregex, as fail2ban would run it: <HOST> becomes a named group. */
const failregex = () => {
  const conf = readFileSync(join(projectRoot, "docs/ops/fail2ban/tern.conf"), "utf8");
  const regex = /^failregex = (.+)$/m.exec(conf)?.[1];
  assert.ok(regex, "a failregex line");
  return regex;
};

test("the fail2ban filter finds the client of every failed login, and only those, in this log", async () => {
  const log = join(dataDir, "node.log");
  // As a file, and as the journal hands lines to fail2ban (host and unit in front).
  const journal = join(dataDir, "journal.log");
  await writeFile(log, `${lines().join("\n")}\n`);
  await writeFile(journal, lines().map((line) => `mx1 tern[4242]: ${line}`).join("\n") + "\n");
  const expected = ["127.0.0.7", "127.0.0.7", "127.0.0.8", "127.0.0.9"];
  const program = `
import re, sys, json
regex = re.compile(sys.argv[1].replace("<HOST>", r"(?:::f{4,6}:)?(?P<host>[\\w\\-.^_:]*\\w)"))
found = {}
for path in sys.argv[2:]:
    found[path] = [m.group("host") for m in (regex.search(line) for line in open(path)) if m]
print(json.dumps(found))`;
  const result = await run("python3", ["-c", program, failregex(), log, journal]);
  assert.equal(result.code, 0, result.stderr);
  const found = JSON.parse(result.stdout) as Record<string, string[]>;
  assert.deepEqual(found[log], expected);
  assert.deepEqual(found[journal], expected);

  const fail2ban = await run("sh", ["-c", "command -v fail2ban-regex"]);
  if (fail2ban.code !== 0) return; // not installed here: Python's re above is what fail2ban runs
  for (const path of [log, journal]) {
    const checked = await run("fail2ban-regex", ["-v", path, join(projectRoot, "docs/ops/fail2ban/tern.conf")]);
    assert.equal(checked.code, 0, checked.stdout + checked.stderr);
    assert.match(checked.stdout, new RegExp(`Lines: \\d+ lines, 0 ignored, ${expected.length} matched`), checked.stdout);
    // -v lists each match as "|      <host>  <date>".
    const hosts = [...checked.stdout.matchAll(/^\|\s+(\S+)\s{2}\w{3} \w{3} \d\d \d\d:\d\d:\d\d \d{4}$/gm)].map((m) => m[1]);
    assert.deepEqual(hosts, expected, checked.stdout);
  }
  // The jail as fail2ban reads it, beside the filter, in a copy of the system's configuration.
  const conf = join(dataDir, "fail2ban");
  await run("cp", ["-r", "/etc/fail2ban", conf]);
  await run("cp", [join(projectRoot, "docs/ops/fail2ban/tern.conf"), join(conf, "filter.d/tern.conf")]);
  await run("cp", [join(projectRoot, "docs/ops/fail2ban/tern.jail.conf"), join(conf, "jail.d/tern.conf")]);
  const dump = await run("fail2ban-client", ["-c", conf, "-d"]);
  assert.equal(dump.code, 0, dump.stdout + dump.stderr);
  assert.match(dump.stdout, /\['add', 'tern', 'systemd'\]/);
  assert.match(dump.stdout, /\['set', 'tern', 'addjournalmatch', '_SYSTEMD_UNIT=tern\.service'\]/);
});
