// Recipient and sender domains that cannot exist in the DNS (an empty label, a label over
// 63 octets, a name over 253) are refused for good at RCPT / MAIL (501 5.1.3 / 5.1.7), so
// nothing is queued to wait out DNS timeouts for days. Address literals work as before.
// The client is Python's smtplib, as a user's script would send.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { makeDataDir, readMetric, removeDataDir, run, startTernNode, uniqueCluster, type TernNode } from "../support/tern-node.ts";

let node: TernNode;
let dataDir: string;

before(async () => {
  dataDir = await makeDataDir();
  node = await startTernNode({
    nodeId: "domains",
    cluster: uniqueCluster(),
    dataDir,
    localDomains: ["example.test"],
    users: [{ address: "alice@example.test", password: "pw" }],
    trustedNetworks: ["127.0.0.0/8"], // relaying allowed: only the domain's syntax decides
    smtp: { maxErrors: 100 },
  });
});

after(async () => {
  await node.kill("SIGTERM");
  await removeDataDir(dataDir);
});

/** The reply to `MAIL FROM:<sender>` then, when it was accepted, to `RCPT TO:<recipient>` (RSET after each). */
const replies = async (pairs: ReadonlyArray<readonly [sender: string, recipient: string]>): Promise<Array<[number, string]>> => {
  const result = await run("python3", ["-c", `
import json, smtplib, sys
s = smtplib.SMTP("127.0.0.1", ${node.ports.smtp}, timeout=10)
s.ehlo("client.test")
out = []
for sender, recipient in json.load(sys.stdin):
    code, text = s.mail(sender)
    if code == 250:
        code, text = s.rcpt(recipient)
    out.append([code, text.decode()])
    s.rset()
s.quit()
print(json.dumps(out))`], JSON.stringify(pairs));
  assert.equal(result.code, 0, result.stderr);
  return JSON.parse(result.stdout);
};

const label63 = "a".repeat(63);

test("recipients whose domain cannot exist get 501 5.1.3 at RCPT", async () => {
  const impossible = [
    `bob@${"a".repeat(64)}.org`, // a label over 63 octets
    "bob@-edge.org", // a label starting with a hyphen
    `bob@${[label63, label63, label63, "d".repeat(62)].join(".")}`, // 254 octets (smtp-server's own path limit catches it first)
  ];
  const got = await replies(impossible.map((recipient) => ["sender@client.test", recipient] as const));
  for (const [n, [code, text]] of got.entries()) assert.deepEqual([code, text.slice(0, 6)], [501, "5.1.3 "], `${impossible[n]}: ${text}`);
  assert.match(got[0]![1], /^5\.1\.3 Bad destination mailbox address syntax \(label-too-long\)/);
  assert.match(got[1]![1], /^5\.1\.3 Bad destination mailbox address syntax \(hyphen-at-label-edge\)/);
  assert.equal(await readMetric(node, "tern_smtp_rejections_total", 'reason="bad-recipient-domain"'), 2);
});

test("empty labels (a..b, a leading or trailing dot) get 501 5.1.3 too", async () => {
  const got = await replies(["bob@a..example.org", "bob@.example.org", "bob@example.org."].map((recipient) => ["sender@client.test", recipient] as const));
  for (const [code, text] of got) assert.deepEqual([code, text.slice(0, 6)], [501, "5.1.3 "], text);
});

test("a sender whose domain cannot exist gets 501 5.1.7 at MAIL; the null sender is fine", async () => {
  const got = await replies([[`someone@${"b".repeat(64)}.org`, "bob@example.org"], ["", "bob@example.org"]]);
  const [code, text] = got[0]!;
  const [nullCode] = got[1]!;
  assert.equal(code, 501);
  assert.match(text, /^5\.1\.7 Bad sender mailbox address syntax/);
  assert.equal(nullCode, 250);
});

test("names at the limits and address literals are accepted as before", async () => {
  const fine = [
    `bob@${label63}.org`,
    `bob@${[label63, label63, label63, "d".repeat(57)].join(".")}`, // local part + @ + domain within smtp-server's 253
    "bob@[192.0.2.1]",
    "bob@[IPv6:2001:db8::1]",
    "alice@example.test",
  ];
  const got = await replies(fine.map((recipient) => ["sender@client.test", recipient] as const));
  for (const [n, [code, text]] of got.entries()) assert.equal(code, 250, `${fine[n]}: ${text}`);
});
