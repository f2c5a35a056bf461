// CONDSTORE (RFC 7162) on a real node: HIGHESTMODSEQ in SELECT and STATUS, FETCH MODSEQ and
// CHANGEDSINCE, STORE UNCHANGEDSINCE with [MODIFIED], SEARCH MODSEQ, and MODSEQ in the
// untagged FETCH that tells a session of another client's flag change (Python imaplib).
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import nodemailer from "nodemailer";
import { makeDataDir, removeDataDir, run, startTernNode, uniqueCluster, type TernNode } from "../support/tern-node.ts";
import { openRaw, type RawConversation } from "../support/raw-socket.ts";

let node: TernNode;
let dataDir: string;

const send = async (subject: string) => {
  const transport = nodemailer.createTransport({ host: "127.0.0.1", port: node.ports.smtp, secure: false, ignoreTLS: true });
  const raw = `From: s@elsewhere.test\r\nTo: carol@example.test\r\nSubject: ${subject}\r\n\r\nbody of ${subject}\r\n`;
  const info = await transport.sendMail({ envelope: { from: "s@elsewhere.test", to: "carol@example.test" }, raw });
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
    users: [{ address: "carol@example.test", password: "carol-pw" }],
  });
  await send("one");
  await send("two");
});

after(async () => {
  await node.kill("SIGTERM");
  await removeDataDir(dataDir);
});

/** Sends one tagged command; resolves with everything the server said up to its tagged answer. */
const command = async (raw: RawConversation, tag: string, line: string): Promise<string> => {
  const from = raw.received().length;
  raw.send(`${tag} ${line}\r\n`);
  const all = await raw.waitFor(new RegExp(`(^|\\r\\n)${tag} (OK|NO|BAD)[^\\r]*\\r\\n`));
  return all.slice(from);
};

test("CONDSTORE: MODSEQ per message, HIGHESTMODSEQ, CHANGEDSINCE, UNCHANGEDSINCE, SEARCH MODSEQ", { timeout: 60_000 }, async () => {
  const raw = await openRaw(node.ports.imap);
  await raw.waitFor(/^\* OK .*\r\n/);
  assert.match(await command(raw, "c0", "CAPABILITY"), /\* CAPABILITY [^\r]* CONDSTORE/);
  assert.match(await command(raw, "c1", "LOGIN carol@example.test carol-pw"), /c1 OK/);
  // Two deliveries: MODSEQ 2 and 3 (a new folder starts at 1).
  assert.match(await command(raw, "c2", "STATUS INBOX (MESSAGES HIGHESTMODSEQ)"), /\* STATUS INBOX \(MESSAGES 2 HIGHESTMODSEQ 3\)\r\nc2 OK/);
  const selected = await command(raw, "c3", "SELECT INBOX (CONDSTORE)");
  assert.match(selected, /\* OK \[HIGHESTMODSEQ 3\]/);
  assert.match(selected, /c3 OK \[READ-WRITE\]/);
  assert.match(await command(raw, "c4", "FETCH 1:* (MODSEQ)"), /\* 1 FETCH \(MODSEQ \(2\)\)\r\n\* 2 FETCH \(MODSEQ \(3\)\)\r\nc4 OK/);

  // A flag change takes the next MODSEQ; with CONDSTORE on, the answer carries UID and MODSEQ.
  // Both messages are \Recent to this session (the first SELECT since they arrived), not to later ones.
  assert.match(await command(raw, "c5", "STORE 1 +FLAGS (\\Seen)"), /\* 1 FETCH \(UID 1 FLAGS \(\\Seen \\Recent\) MODSEQ \(4\)\)\r\nc5 OK/);
  // CHANGEDSINCE 3: only message 1 changed after 3; MODSEQ is implied.
  const changed = await command(raw, "c6", "UID FETCH 1:* (FLAGS) (CHANGEDSINCE 3)");
  assert.match(changed, /^\* 1 FETCH \(UID 1 FLAGS \(\\Seen \\Recent\) MODSEQ \(4\)\)\r\nc6 OK/);

  // UNCHANGEDSINCE 3: message 1 (MODSEQ 4) fails the test and is named in [MODIFIED]; message 2 is flagged.
  const conditional = await command(raw, "c7", "STORE 1:2 (UNCHANGEDSINCE 3) +FLAGS (\\Flagged)");
  assert.match(conditional, /\* 2 FETCH \(UID 2 FLAGS \(\\Flagged \\Recent\) MODSEQ \(5\)\)\r\n/);
  assert.doesNotMatch(conditional, /\* 1 FETCH/);
  assert.match(conditional, /c7 OK \[MODIFIED 1\]/);
  assert.match(await command(raw, "c8", "UID STORE 1:2 (UNCHANGEDSINCE 0) +FLAGS.SILENT (\\Answered)"), /c8 OK \[MODIFIED 1:2\]/);

  assert.match(await command(raw, "c9", "SEARCH MODSEQ 4"), /\* SEARCH 1 2 \(MODSEQ 5\)\r\n/);
  assert.match(await command(raw, "c10", "SEARCH MODSEQ 5"), /\* SEARCH 2 \(MODSEQ 5\)\r\n/);
  assert.match(await command(raw, "c11", "SEARCH MODSEQ 6"), /\* SEARCH\r\n/);

  // Another client (imaplib) flags message 2 and expunges nothing: this session hears it with the MODSEQ.
  const other = await run("python3", [
    "-c",
    `
import imaplib
m = imaplib.IMAP4("127.0.0.1", ${node.ports.imap})
m.login("carol@example.test", "carol-pw")
m.select("INBOX")
typ, data = m.uid("FETCH", "1:*", "(FLAGS) (CHANGEDSINCE 4)")
print(typ, [d.decode() for d in data])
typ, data = m.store("2", "-FLAGS", "(\\\\Flagged)")
print(typ, [d.decode() for d in data])
m.logout()
`,
  ]);
  assert.equal(other.code, 0, other.stderr);
  assert.match(other.stdout, /^OK \['2 \(UID 2 FLAGS \(\\\\Flagged\) MODSEQ \(5\)\)'\]/);
  assert.match(other.stdout, /\nOK \['2 \(UID 2 FLAGS \(\) MODSEQ \(6\)\)'\]/);
  assert.match(await command(raw, "c12", "NOOP"), /\* 2 FETCH \(UID 2 FLAGS \(\\Recent\) MODSEQ \(6\)\)\r\nc12 OK/);
  assert.match(await command(raw, "c13", "STATUS INBOX (HIGHESTMODSEQ)"), /HIGHESTMODSEQ 6/);

  // ENABLE CONDSTORE (RFC 5161) says it is on.
  assert.match(await command(raw, "c14", "ENABLE CONDSTORE"), /\* ENABLED CONDSTORE\r\nc14 OK/);
  assert.match(await command(raw, "c15", "LOGOUT"), /c15 OK/);
  raw.close();
});
