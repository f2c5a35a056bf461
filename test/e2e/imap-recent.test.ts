// \Recent and UIDVALIDITY on a real node with Python's imaplib: mail delivered over SMTP is
// recent to the first session that SELECTs the folder (RECENT count, FETCH FLAGS, SEARCH
// RECENT), and to no later one; STATUS counts what nobody has been told of yet; mail that
// arrives while a session is selected is recent to it. A session whose selected folder is
// deleted and made again by another session is told BYE, and its STORE does not touch the
// new folder's message that took the same UID.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import nodemailer from "nodemailer";
import { makeDataDir, removeDataDir, run, startTernNode, uniqueCluster, type TernNode } from "../support/tern-node.ts";

let node: TernNode;
let dataDir: string;

const send = async (subject: string) => {
  const transport = nodemailer.createTransport({ host: "127.0.0.1", port: node.ports.smtp, secure: false, ignoreTLS: true });
  const raw = `From: s@elsewhere.test\r\nTo: erin@example.test\r\nSubject: ${subject}\r\n\r\nbody of ${subject}\r\n`;
  const info = await transport.sendMail({ envelope: { from: "s@elsewhere.test", to: "erin@example.test" }, raw });
  transport.close();
  await node.waitForEvent("recipient.delivered", { queueId: /queued as ([0-9A-Za-z]+)/.exec(info.response)![1] });
};

before(async () => {
  dataDir = await makeDataDir();
  node = await startTernNode({
    nodeId: "solo",
    cluster: uniqueCluster(),
    dataDir,
    localDomains: ["example.test"],
    users: [{ address: "erin@example.test", password: "erin-pw" }],
    imap: { failedLoginDelayMs: 0 },
  });
  await send("one");
  await send("two");
});

after(async () => {
  await node.kill("SIGTERM");
  await removeDataDir(dataDir);
});

const PRELUDE = (port: number) => `
import imaplib, json, time
out = {}
def connect():
    m = imaplib.IMAP4("127.0.0.1", ${port})
    m.login("erin@example.test", "erin-pw")
    return m
`;

const python = async (script: string): Promise<Record<string, unknown>> => {
  const result = await run("python3", ["-c", `${PRELUDE(node.ports.imap)}${script}\nprint(json.dumps(out))\n`]);
  assert.equal(result.code, 0, result.stderr);
  return JSON.parse(result.stdout);
};

test("RECENT: the first SELECT gets the new mail as \\Recent, the next SELECT none; EXAMINE takes nothing", { timeout: 60_000 }, async () => {
  const out = await python(`
a = connect()
out["status"] = a.status("INBOX", "(MESSAGES RECENT)")[1][0].decode()
a.select("INBOX", readonly=True)
out["examine_recent"] = a.response("RECENT")[1][0].decode()
a.select("INBOX")
out["select_recent"] = a.response("RECENT")[1][0].decode()
out["flags"] = [d.decode() for d in a.fetch("1:*", "(FLAGS)")[1]]
out["search_recent"] = a.search(None, "RECENT")[1][0].decode()
out["status_after"] = a.status("INBOX", "(RECENT)")[1][0].decode()
b = connect()
b.select("INBOX")
out["second_recent"] = b.response("RECENT")[1][0].decode()
out["second_flags"] = [d.decode() for d in b.fetch("1:*", "(FLAGS)")[1]]
b.logout()
a.logout()
`);
  assert.match(String(out.status), /INBOX \(MESSAGES 2 RECENT 2\)/, "nobody has been told of either yet");
  assert.equal(out.examine_recent, "2", "EXAMINE shows them");
  assert.equal(out.select_recent, "2", "and leaves them to the first SELECT");
  assert.deepEqual(out.flags, ["1 (FLAGS (\\Recent))", "2 (FLAGS (\\Recent))"]);
  assert.equal(out.search_recent, "1 2");
  assert.match(String(out.status_after), /RECENT 0/);
  assert.equal(out.second_recent, "0", "another session's SELECT finds nothing recent");
  assert.deepEqual(out.second_flags, ["1 (FLAGS ())", "2 (FLAGS ())"]);
});

test("mail arriving while a session is selected is \\Recent to it", { timeout: 60_000 }, async () => {
  // The session sends the mail itself once it has selected INBOX (Python's smtplib, to this node).
  const out = await python(`
import smtplib
a = connect()
a.select("INBOX")
out["before"] = a.response("RECENT")[1][0].decode()
with smtplib.SMTP("127.0.0.1", ${node.ports.smtp}) as smtp:
    smtp.sendmail("s@elsewhere.test", ["erin@example.test"], b"Subject: three\\r\\n\\r\\nbody of three\\r\\n")
for _ in range(100):
    a.noop()
    typ, data = a.response("EXISTS")
    if data and data[-1] and int(data[-1]) >= 3:
        break
    time.sleep(0.1)
out["recent"] = a.search(None, "RECENT")[1][0].decode()
a.logout()
`);
  assert.equal(out.before, "0");
  assert.equal(out.recent, "3");
});

test("UIDVALIDITY: a session whose selected folder is deleted and made again is told BYE, and its STORE does not reach the new folder", { timeout: 60_000 }, async () => {
  const out = await python(`
a = connect()
a.create("Box")
a.append("Box", None, None, b"Subject: old\\r\\n\\r\\nold\\r\\n")
a.select("Box")
out["old_uidvalidity"] = a.response("UIDVALIDITY")[1][0].decode()
b = connect()
b.delete("Box")
b.create("Box")
b.append("Box", None, None, b"Subject: new\\r\\n\\r\\nnew\\r\\n")
try:
    out["store"] = a.store("1", "+FLAGS", "(\\\\Deleted)")[0]
except imaplib.IMAP4.abort as error:
    out["aborted"] = str(error)
b.select("Box")
out["new_uidvalidity"] = b.response("UIDVALIDITY")[1][0].decode()
out["new_flags"] = [d.decode() for d in b.fetch("1", "(FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")[1] if isinstance(d, bytes)]
out["new_subject"] = [d[1].decode() for d in b.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")[1] if isinstance(d, tuple)]
b.logout()
`);
  assert.equal(out.store, undefined, "the STORE got no tagged answer");
  assert.match(String(out.aborted), /UIDVALIDITY/, "imaplib raised the server's BYE");
  assert.notEqual(out.old_uidvalidity, out.new_uidvalidity);
  assert.deepEqual(out.new_subject, ["Subject: new\r\n\r\n"]);
  const flags = JSON.stringify(await python(`
b = connect()
b.select("Box", readonly=True)
out["flags"] = b.fetch("1", "(FLAGS)")[1][0].decode()
b.logout()
`));
  assert.doesNotMatch(flags, /Deleted/, "the new folder's message with the same UID was not flagged");
});
