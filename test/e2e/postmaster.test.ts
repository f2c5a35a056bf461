// RFC 5321 §4.5.1: mail to postmaster (bare, or at a local domain) is always accepted,
// even with no user of that name; it is delivered to the node's postmaster (here the
// first configured user) and read back with Python's poplib.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { makeDataDir, removeDataDir, run, startTernNode, uniqueCluster, type TernNode } from "../support/tern-node.ts";

let node: TernNode;
let dataDir: string;

before(async () => {
  dataDir = await makeDataDir();
  node = await startTernNode({
    nodeId: "postmaster",
    cluster: uniqueCluster(),
    dataDir,
    localDomains: ["local.test"],
    users: [
      { address: "admin@local.test", password: "admin-pw" },
      { address: "alice@local.test", password: "alice-pw" },
    ],
    trustedNetworks: ["192.0.2.0/24"], // loopback is not trusted: nothing here is accepted as relaying
  });
});

after(async () => {
  await node.kill("SIGTERM");
  await removeDataDir(dataDir);
});

/** Sends one message with smtplib; returns each RCPT's reply and the DATA reply. */
const send = async (recipient: string, subject: string) => {
  const script = `
import smtplib, sys, json
port, recipient, subject = int(sys.argv[1]), sys.argv[2], sys.argv[3]
s = smtplib.SMTP("127.0.0.1", port, timeout=20)
s.ehlo("client.test")
s.mail("someone@elsewhere.test")
rcpt = s.rcpt(recipient)
data = s.data(f"From: someone@elsewhere.test\\r\\nTo: {recipient}\\r\\nSubject: {subject}\\r\\n\\r\\nhello\\r\\n".encode()) if rcpt[0] == 250 else (0, b"")
s.quit()
print(json.dumps({"rcpt": f"{rcpt[0]} {rcpt[1].decode()}", "data": f"{data[0]} {data[1].decode()}"}))`;
  const result = await run("python3", ["-c", script, String(node.ports.smtp), recipient, subject]);
  assert.equal(result.code, 0, result.stderr);
  return JSON.parse(result.stdout) as { rcpt: string; data: string };
};

const subjectsIn = async (user: string, password: string) => {
  const script = `
import poplib, sys, json
p = poplib.POP3("127.0.0.1", int(sys.argv[1]), timeout=10)
p.user(sys.argv[2]); p.pass_(sys.argv[3])
out = []
for n in range(1, p.stat()[0] + 1):
    for line in p.retr(n)[1]:
        if line.startswith(b"Subject: "): out.append(line[9:].decode())
p.quit()
print(json.dumps(sorted(out)))`;
  const result = await run("python3", ["-c", script, String(node.ports.pop3), user, password]);
  assert.equal(result.code, 0, result.stderr);
  return JSON.parse(result.stdout) as string[];
};

test("RCPT TO:<postmaster>, <postmaster@local.test> and <PostMaster@LOCAL.TEST> get 250 and reach the first user's mailbox", async () => {
  const sent = [await send("postmaster", "bare"), await send("postmaster@local.test", "at domain"), await send("PostMaster@LOCAL.TEST", "any case")];
  for (const reply of sent) {
    assert.match(reply.rcpt, /^250 /);
    assert.match(reply.data, /^250 2\.0\.0 Ok: queued as [0-9A-Z]+/);
  }
  for (const reply of sent) await node.waitForEvent("recipient.delivered", { queueId: /queued as ([0-9A-Z]+)/.exec(reply.data)![1] });
  assert.deepEqual(await subjectsIn("admin@local.test", "admin-pw"), ["any case", "at domain", "bare"]);
  assert.deepEqual(await subjectsIn("alice@local.test", "alice-pw"), []);
});

test("swaks to a bare postmaster is accepted; other unknown names still get 550 5.1.1", async () => {
  const swaks = (to: string) => run("swaks", ["--server", `127.0.0.1:${node.ports.smtp}`, "--hide-informational", "--from", "x@elsewhere.test", "--to", to, "--quit-after", "RCPT"]);
  const bare = (await swaks("postmaster")).stdout;
  assert.match(bare, / -> RCPT TO:<postmaster>\r?\n<- {2}250 /);
  assert.match((await swaks("root@local.test")).stdout, /<~?\*\* +550 5\.1\.1 No such user here/);
});
