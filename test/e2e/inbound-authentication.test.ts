// Inbound authentication end to end: a node taking MX mail for three local domains with
// three local DMARC policies (strict.test "reject", junk.test "quarantine", open.test the
// default "none"), dnsmasq serving the senders' SPF, DKIM and DMARC records, messages
// signed here with a key made here, sent with Python's smtplib from 127.0.0.1 (which
// sender.test's SPF allows), and read back over IMAP with Python's imaplib.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { dkimSign } from "mailauth/lib/dkim/sign.js";
import type { DKIMSignOptions } from "mailauth";
import { startDnsmasq, type RunningDnsmasq } from "../support/dnsmasq.ts";
import { makeKey, txtRecord, type TestKey } from "../support/dkim.ts";
import { eventually, makeDataDir, readMetric, removeDataDir, run, startTernNode, uniqueCluster, type TernNode } from "../support/tern-node.ts";

let dns: RunningDnsmasq;
let node: TernNode;
let dataDir: string;
let key: TestKey;

const AUTHSERV_ID = "mx.tern.test";

before(async () => {
  dataDir = await makeDataDir();
  key = await makeKey(dataDir, "sel2026", "rsa-sha256");
  dns = await startDnsmasq({
    txt: [
      { name: "sender.test", strings: ["v=spf1 ip4:127.0.0.1 -all"] },
      txtRecord("sender.test", key),
      { name: "_dmarc.sender.test", strings: ["v=DMARC1; p=reject"] },
      { name: "bank.test", strings: ["v=spf1 -all"] },
      { name: "_dmarc.bank.test", strings: ["v=DMARC1; p=reject"] },
      { name: "_dmarc.shady.test", strings: ["v=DMARC1; p=quarantine"] },
    ],
  });
  node = await startTernNode({
    nodeId: "inauth",
    cluster: uniqueCluster(),
    dataDir,
    hostname: AUTHSERV_ID,
    localDomains: ["strict.test", "junk.test", "open.test"],
    users: [
      { address: "alice@strict.test", password: "alice-pw" },
      { address: "carol@junk.test", password: "carol-pw" },
      { address: "bob@open.test", password: "bob-pw" },
    ],
    trustedNetworks: ["192.0.2.0/24"], // loopback is not trusted: what comes without AUTH is MX mail
    inbound: { dmarc: { "strict.test": "reject", "junk.test": "quarantine" } },
    dns: { servers: [`${dns.host}:${dns.port}`], timeoutMs: 500, tries: 1 },
    delivery: { pollMs: 50 },
  });
});

after(async () => {
  await node?.kill("SIGTERM");
  await dns?.stop();
  await removeDataDir(dataDir);
});

const SMTPLIB = `
import json, smtplib, sys
port, sender, rcpts = int(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])
data = sys.stdin.buffer.read()
s = smtplib.SMTP("127.0.0.1", port, local_hostname="client.sender.test", timeout=60)
s.ehlo()
s.mail(sender)
out = {"rcpt": [list(s.rcpt(r)) for r in rcpts]}
if any(code == 250 for code, _ in out["rcpt"]):
    out["data"] = list(s.data(data))
s.quit()
print(json.dumps(out, default=lambda b: b.decode("latin-1")))
`;

interface Sent {
  readonly rcpt: Array<[number, string]>;
  readonly data?: [number, string];
}

/** One transaction from 127.0.0.1: each RCPT's reply, and DATA's when a recipient was taken. */
const send = async (sender: string, recipients: string[], message: string): Promise<Sent> => {
  const result = await run("/usr/bin/python3", ["-c", SMTPLIB, String(node.ports.smtp), sender, JSON.stringify(recipients)], message);
  assert.equal(result.code, 0, result.stderr);
  return JSON.parse(result.stdout) as Sent;
};

const IMAPLIB = `
import imaplib, json, sys
port, user, password, folder = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
m = imaplib.IMAP4("127.0.0.1", port)
m.login(user, password)
typ, _ = m.select('"%s"' % folder, readonly=True)
out = []
if typ == "OK":
    typ, data = m.fetch("1:*", "(BODY.PEEK[])")
    if typ == "OK":
        out = [part[1].decode("latin-1") for part in data if isinstance(part, tuple)]
m.logout()
print(json.dumps(out))
`;

/** Every message in one folder of a mailbox (none when the folder does not exist). */
const messagesIn = async (user: string, password: string, folder = "INBOX"): Promise<string[]> => {
  const result = await run("/usr/bin/python3", ["-c", IMAPLIB, String(node.ports.imap), user, password, folder]);
  assert.equal(result.code, 0, result.stderr);
  return JSON.parse(result.stdout) as string[];
};

/** The message whose text includes `marker`, once it is in the folder. */
const arrived = (user: string, password: string, marker: string, folder = "INBOX") =>
  eventually(async () => (await messagesIn(user, password, folder)).find((m) => m.includes(marker)), 20_000, `${marker} in ${user}'s ${folder}`);

/** The Authentication-Results fields of a message's header section, unfolded. */
const resultsFields = (message: string): string[] =>
  message
    .slice(0, message.indexOf("\r\n\r\n"))
    .replace(/\r\n[ \t]+/g, " ")
    .split("\r\n")
    .filter((line) => /^authentication-results:/i.test(line));

const signed = async (message: string): Promise<string> => {
  const options = {
    canonicalization: "relaxed/relaxed",
    signatureData: [{ signingDomain: "sender.test", selector: key.selector, privateKey: await readFile(key.keyFile), algorithm: "rsa-sha256" }],
  } as unknown as DKIMSignOptions;
  const result = await dkimSign(message, options);
  assert.equal(result.errors.length, 0, JSON.stringify(result.errors));
  return result.signatures + message;
};

test("a signed message from an SPF-allowed address is stored with spf, dkim and dmarc pass on top", async () => {
  const message = await signed("From: News <news@sender.test>\r\nTo: alice@strict.test\r\nSubject: signed and aligned\r\nMessage-ID: <m1@sender.test>\r\n\r\nHello Alice, m1.\r\n");
  const sent = await send("bounces@sender.test", ["alice@strict.test"], message);
  assert.equal(sent.data?.[0], 250, JSON.stringify(sent));
  const stored = await arrived("alice@strict.test", "alice-pw", "m1@sender.test");
  // Only the final delivery's Return-Path and Delivered-To come before it.
  assert.match(stored, /^Return-Path: <bounces@sender\.test>\r\nDelivered-To: alice@strict\.test\r\nAuthentication-Results: mx\.tern\.test;\r\n /, "the field comes first after the final delivery's");
  const [field, ...others] = resultsFields(stored);
  assert.equal(others.length, 0);
  assert.match(field!, /spf=pass [^;]*smtp\.mailfrom=bounces@sender\.test/);
  assert.match(field!, /dkim=pass [^;]*header\.i=@sender\.test header\.s=sel2026/);
  assert.match(field!, /dmarc=pass [^;]*header\.from=sender\.test/);
  assert.match(field!, /arc=none/);
  assert.ok(stored.indexOf("Authentication-Results:") < stored.indexOf("Received: from"), "above the trace field");
  assert.ok((await readMetric(node, "tern_inbound_auth_results_total", 'method="dmarc",result="pass"')) >= 1);
});

test("a forged From of a p=reject domain is refused at DATA (550 5.7.1) where the policy is reject, and nothing is stored", async () => {
  const refusedBefore = await readMetric(node, "tern_inbound_dmarc_actions_total", 'action="refuse"');
  const sent = await send("attacker@evil.test", ["alice@strict.test"], "From: CEO <ceo@bank.test>\r\nTo: alice@strict.test\r\nSubject: wire money m2\r\n\r\nNow.\r\n");
  assert.equal(sent.rcpt[0]![0], 250);
  assert.equal(sent.data?.[0], 550, JSON.stringify(sent));
  assert.match(sent.data![1], /^5\.7\.1 .*DMARC policy of bank\.test/);
  assert.equal(await readMetric(node, "tern_inbound_dmarc_actions_total", 'action="refuse"'), refusedBefore + 1);
  // A later message to the same mailbox arrives through the same queue: the refused one would be there before it.
  const later = await send("bounces@sender.test", ["alice@strict.test"], await signed("From: news@sender.test\r\nTo: alice@strict.test\r\nSubject: after m2\r\nMessage-ID: <m2b@sender.test>\r\n\r\nlater\r\n"));
  assert.equal(later.data?.[0], 250);
  await arrived("alice@strict.test", "alice-pw", "m2b@sender.test");
  const all = [...(await messagesIn("alice@strict.test", "alice-pw")), ...(await messagesIn("alice@strict.test", "alice-pw", "Junk"))];
  assert.ok(!all.some((m) => m.includes("wire money m2")), "the refused message is in no folder");
});

test("without the reject policy the same forgery is stored, with dmarc=fail in its field", async () => {
  const sent = await send("attacker@evil.test", ["bob@open.test"], "From: CEO <ceo@bank.test>\r\nTo: bob@open.test\r\nSubject: wire money m3\r\n\r\nNow.\r\n");
  assert.equal(sent.data?.[0], 250, JSON.stringify(sent));
  const stored = await arrived("bob@open.test", "bob-pw", "wire money m3");
  const [field] = resultsFields(stored);
  assert.match(field!, /dmarc=fail [^;]*policy\.dmarc=reject header\.from=bank\.test/);
  assert.match(field!, /spf=none [^;]*smtp\.mailfrom=attacker@evil\.test/);
  assert.match(field!, /dkim=none/);
});

test("where the policy is quarantine, a DMARC failure goes to the Junk folder, not INBOX", async () => {
  const sent = await send("attacker@evil.test", ["carol@junk.test"], "From: CEO <ceo@bank.test>\r\nTo: carol@junk.test\r\nSubject: wire money m4\r\n\r\nNow.\r\n");
  assert.equal(sent.data?.[0], 250, JSON.stringify(sent));
  const junk = await arrived("carol@junk.test", "carol-pw", "wire money m4", "Junk");
  assert.match(resultsFields(junk)[0]!, /dmarc=fail/);
  assert.ok(!(await messagesIn("carol@junk.test", "carol-pw")).some((m) => m.includes("wire money m4")));
});

test("with the reject policy, a failure of a p=quarantine domain is filed as junk, not refused (the weaker policy applies)", async () => {
  const sent = await send("someone@evil.test", ["alice@strict.test"], "From: shady@shady.test\r\nTo: alice@strict.test\r\nSubject: offer m5\r\n\r\nCheap.\r\n");
  assert.equal(sent.data?.[0], 250, JSON.stringify(sent));
  await arrived("alice@strict.test", "alice-pw", "offer m5", "Junk");
});

test("Authentication-Results fields claiming this node's authserv-id are removed; another server's stay", async () => {
  const message =
    "Authentication-Results: mx.tern.test; dmarc=pass header.from=bank.test\r\n" +
    "Authentication-Results: (looks legit) MX.Tern.Test;\r\n\tspf=pass smtp.mailfrom=ceo@bank.test\r\n" +
    'Authentication-Results: "mx.tern.test"; dkim=pass header.d=bank.test\r\n' +
    "Authentication-Results: relay.other.example; spf=pass smtp.mailfrom=list@other.example\r\n" +
    "From: ceo@bank.test\r\nTo: bob@open.test\r\nSubject: forged results m6\r\n\r\nTrust me.\r\n";
  const removedBefore = await readMetric(node, "tern_inbound_auth_claimed_results_removed_total");
  const sent = await send("attacker@evil.test", ["bob@open.test"], message);
  assert.equal(sent.data?.[0], 250, JSON.stringify(sent));
  const stored = await arrived("bob@open.test", "bob-pw", "forged results m6");
  const fields = resultsFields(stored);
  assert.equal(fields.length, 2, fields.join("\n"));
  assert.match(fields[0]!, /^Authentication-Results: mx\.tern\.test; dkim=none .*dmarc=fail/, "only the node's own");
  assert.match(fields[1]!, /^Authentication-Results: relay\.other\.example; spf=pass/);
  assert.equal(await readMetric(node, "tern_inbound_auth_claimed_results_removed_total"), removedBefore + 3);
});

test("recipients of domains with different policies are not mixed in one transaction: the later one gets 452 4.5.3", async () => {
  const sent = await send("bounces@sender.test", ["alice@strict.test", "bob@open.test", "carol@junk.test"], await signed("From: news@sender.test\r\nTo: alice@strict.test\r\nSubject: split m7\r\nMessage-ID: <m7@sender.test>\r\n\r\nsplit\r\n"));
  assert.deepEqual(sent.rcpt.map(([code]) => code), [250, 452, 452]);
  assert.match(sent.rcpt[1]![1], /^4\.5\.3 /);
  assert.equal(sent.data?.[0], 250);
  const again = await send("bounces@sender.test", ["bob@open.test"], await signed("From: news@sender.test\r\nTo: bob@open.test\r\nSubject: split m7b\r\nMessage-ID: <m7b@sender.test>\r\n\r\nsplit\r\n"));
  assert.equal(again.data?.[0], 250);
  await arrived("alice@strict.test", "alice-pw", "m7@sender.test");
  await arrived("bob@open.test", "bob-pw", "m7b@sender.test");
});

test("submitted mail is not checked and gets no field of the node, but a forged one is still removed", async () => {
  const sent = await run("swaks", [
    "--server", "127.0.0.1", "--hide-informational", "--port", String(node.ports.smtp), "--tls",
    "--auth", "PLAIN", "--auth-user", "alice@strict.test", "--auth-password", "alice-pw",
    "--from", "alice@strict.test", "--to", "bob@open.test",
    "--data", "Authentication-Results: mx.tern.test; dmarc=pass\r\nFrom: alice@strict.test\r\nTo: bob@open.test\r\nSubject: internal m8\r\n\r\nhi\r\n",
  ]);
  assert.equal(sent.code, 0, sent.stdout + sent.stderr);
  const stored = await arrived("bob@open.test", "bob-pw", "internal m8");
  assert.deepEqual(resultsFields(stored), []);
});
