// IMAP on a real node with clients nobody here wrote: Python's imaplib through the usual
// mail-client commands, curl imap://, and bad input over a raw socket.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import nodemailer from "nodemailer";
import { makeDataDir, removeDataDir, run, startTernNode, uniqueCluster, type TernNode } from "../support/tern-node.ts";
import { openRaw } from "../support/raw-socket.ts";

let node: TernNode;
let dataDir: string;

const send = async (subject: string, body: string) => {
  const transport = nodemailer.createTransport({ host: "127.0.0.1", port: node.ports.smtp, secure: false, ignoreTLS: true });
  const raw = `From: Sender <s@elsewhere.test>\r\nTo: alice@example.test\r\nSubject: ${subject}\r\nMessage-ID: <${subject}@elsewhere.test>\r\n\r\n${body}\r\n`;
  const info = await transport.sendMail({ envelope: { from: "s@elsewhere.test", to: "alice@example.test" }, raw });
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
    users: [{ address: "alice@example.test", password: "alice-pw" }],
    imap: { failedLoginDelayMs: 0 },
  });
  await send("first", "hello world");
  await send("second", "another body");
});

after(async () => {
  await node.kill("SIGTERM");
  await removeDataDir(dataDir);
});

const python = (script: string) => run("python3", ["-c", script]);

test("imaplib: LOGIN, SELECT, SEARCH, FETCH, STORE, COPY, MOVE, EXPUNGE, APPEND and UID forms", { timeout: 60_000 }, async () => {
  const script = `
import imaplib, json, sys
out = {}
m = imaplib.IMAP4("127.0.0.1", ${node.ports.imap})
out["login"] = m.login("alice@example.test", "alice-pw")[0]
typ, data = m.select("INBOX")
out["exists"] = int(data[0])
out["search_all"] = m.search(None, "ALL")[1][0].decode()
out["search_subject"] = m.search(None, '(SUBJECT "second")')[1][0].decode()
out["search_unseen"] = m.search(None, "UNSEEN")[1][0].decode()
typ, data = m.fetch("1", "(UID FLAGS RFC822.SIZE BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
out["fetch_header"] = data[0][1].decode()
typ, data = m.fetch("1", "(BODY[TEXT])")
out["fetch_text"] = data[0][1].decode()
out["seen_after"] = m.search(None, "SEEN")[1][0].decode()
typ, data = m.fetch("1:2", "(ENVELOPE BODYSTRUCTURE)")
out["envelope"] = data[0].decode()
out["store"] = [d.decode() for d in m.store("2", "+FLAGS", "(\\\\Flagged)")[1]]
out["flagged"] = m.search(None, "FLAGGED")[1][0].decode()
out["create"] = m.create("Archive")[0]
out["copy"] = m.copy("1", "Archive")[0]
typ, data = m.uid("SEARCH", None, "ALL")
uids = data[0].decode().split()
out["uid_fetch"] = m.uid("FETCH", uids[-1], "(FLAGS)")[1][0].decode()
out["uid_move"] = m.uid("MOVE", uids[-1], "Archive")[0]
out["after_move"] = m.search(None, "ALL")[1][0].decode()
out["append"] = m.append("INBOX", "(\\\\Draft)", None, b"Subject: drafted\\r\\n\\r\\ntext\\r\\n")[1][0].decode()
out["store_deleted"] = m.store("1", "+FLAGS.SILENT", "(\\\\Deleted)")[0]
typ, data = m.expunge()
out["expunge"] = [d.decode() if d else None for d in data]
out["status"] = m.status("Archive", "(MESSAGES UIDNEXT UNSEEN)")[1][0].decode()
out["list"] = sorted(d.decode() for d in m.list()[1])
m.select("Archive", readonly=True)
out["archive"] = m.search(None, "ALL")[1][0].decode()
typ, data = m.store("1", "+FLAGS", "(\\\\Seen)")
out["readonly_store"] = typ + " " + data[0].decode()
out["logout"] = m.logout()[0]
print(json.dumps(out))
`;
  const result = await python(script);
  assert.equal(result.code, 0, result.stderr);
  const out = JSON.parse(result.stdout);
  assert.equal(out.login, "OK");
  assert.equal(out.exists, 2);
  assert.equal(out.search_all, "1 2");
  assert.equal(out.search_subject, "2");
  assert.equal(out.search_unseen, "1 2");
  assert.match(out.fetch_header, /^Subject: first\r\n\r\n$/);
  assert.equal(out.fetch_text, "hello world\r\n");
  assert.equal(out.seen_after, "1", "BODY[TEXT] (not PEEK) marks \\Seen");
  assert.match(out.envelope, /ENVELOPE \(NIL "first" \(\("Sender" NIL "s" "elsewhere.test"\)\)/);
  assert.match(out.envelope, /BODYSTRUCTURE \("TEXT" "PLAIN" \("CHARSET" "us-ascii"\) NIL NIL "7BIT" 13 1 /);
  // Both messages are \Recent to this session: the first to SELECT INBOX since they arrived.
  assert.match(out.store[0], /FLAGS \(\\Flagged \\Recent\)/);
  assert.equal(out.flagged, "2");
  assert.equal(out.create, "OK");
  assert.equal(out.copy, "OK");
  assert.match(out.uid_fetch, /UID \d+ FLAGS \(\\Flagged \\Recent\)/);
  assert.equal(out.uid_move, "OK");
  assert.equal(out.after_move, "1");
  assert.match(out.append, /APPENDUID \d+ \d+/);
  // imaplib keeps untagged EXPUNGEs until asked: the MOVE's (2) and the EXPUNGE's (1).
  assert.deepEqual(out.expunge, ["2", "1"]);
  assert.match(out.status, /Archive \(MESSAGES 2 UIDNEXT 3 UNSEEN 1\)/);
  assert.ok(out.list.some((line: string) => /"\/" INBOX$/.test(line)), JSON.stringify(out.list));
  assert.ok(out.list.some((line: string) => /"\/" Archive$/.test(line)) && out.list.some((line: string) => /\\Archive/.test(line)), JSON.stringify(out.list));
  assert.equal(out.archive, "1 2");
  assert.match(out.readonly_store, /^NO \[READ-ONLY\]/);
  assert.equal(out.logout, "BYE");
});

test("curl imap:// lists the mailbox and fetches a message by UID", { timeout: 60_000 }, async () => {
  const base = ["--silent", "--show-error", "--max-time", "10", "--user", "alice@example.test:alice-pw"];
  const listing = await run("curl", [...base, `imap://127.0.0.1:${node.ports.imap}/`]);
  assert.equal(listing.code, 0, listing.stderr);
  assert.match(listing.stdout, /INBOX/);
  const search = await run("curl", [...base, `imap://127.0.0.1:${node.ports.imap}/INBOX`, "-X", "UID SEARCH ALL"]);
  assert.equal(search.code, 0, search.stderr);
  const uid = /SEARCH (\d+)/.exec(search.stdout)![1];
  const message = await run("curl", [...base, `imap://127.0.0.1:${node.ports.imap}/INBOX;UID=${uid}`]);
  assert.equal(message.code, 0, message.stderr);
  assert.match(message.stdout, /Subject: drafted/);
  const tls = await run("curl", [...base, "--ssl-reqd", "--insecure", `imap://127.0.0.1:${node.ports.imap}/`]);
  assert.equal(tls.code, 0, `STARTTLS: ${tls.stderr}`);
  const imaps = await run("curl", [...base, "--insecure", `imaps://127.0.0.1:${node.ports.imaps}/`]);
  assert.equal(imaps.code, 0, `IMAPS: ${imaps.stderr}`);
  assert.match(imaps.stdout, /INBOX/);
});

test("bad input: BAD with a reason, wrong-state commands refused, literals never read as commands", { timeout: 60_000 }, async () => {
  const raw = await openRaw(node.ports.imap);
  await raw.waitFor(/^\* OK .*\r\n/);
  raw.send("\r\n");
  await raw.waitFor(/\* BAD missing or invalid tag\r\n/);
  raw.send("a1 FROBNICATE\r\n");
  await raw.waitFor(/a1 BAD unknown command FROBNICATE\r\n/);
  raw.send("a2 SELECT INBOX\r\n");
  await raw.waitFor(/a2 BAD SELECT not allowed before login\r\n/);
  raw.send("a3 FETCH 0:x FLAGS\r\n");
  await raw.waitFor(/a3 BAD /);
  raw.send('a4 LOGIN alice@example.test "unterminated\r\n');
  await raw.waitFor(/a4 BAD LOGIN: expected a closing quote/);
  // A synchronizing literal over the limit: refused at once, no continuation (the client then sends nothing).
  raw.send(`a5 APPEND INBOX {999999999}\r\n`);
  await raw.waitFor(/a5 BAD literal of 999999999 octets is over the limit/);
  raw.send("a6 LOGIN {18}\r\n");
  await raw.waitFor(/\+ go ahead\r\n/);
  raw.send("alice@example.test {8}\r\n");
  await raw.waitFor(/\+ go ahead\r\n[^]*\+ go ahead\r\n/);
  raw.send("alice-pw\r\n");
  await raw.waitFor(/a6 OK /);
  raw.send("a7 FETCH 1 FLAGS\r\n");
  await raw.waitFor(/a7 BAD no mailbox selected\r\n/);
  raw.send("a8 SELECT INBOX\r\na9 FETCH 1:* (FLAGS\r\n");
  await raw.waitFor(/a9 BAD FETCH: expected/);
  // Literal bytes inside a command that fails are still that command's: "a11 LOGOUT" is not run.
  raw.send("a10 SEARCH HEADER {10}\r\n");
  await raw.waitFor(/a10[^]*\+ go ahead\r\n$|(\+ go ahead\r\n[^]*){3}/);
  raw.send("a11 LOGOUT BOGUS\r\n");
  await raw.waitFor(/a10 OK SEARCH completed\r\n/);
  assert.doesNotMatch(raw.received(), /BYE/);
  raw.send("a12 NOOP\r\n");
  await raw.waitFor(/a12 OK NOOP completed\r\n/);
  raw.send("a13 LOGOUT\r\n");
  await raw.waitFor(/a13 OK LOGOUT completed\r\n/);
  raw.close();
});

test("LIST with a pattern of 5,000 wildcards answers promptly (no backtracking) and other sessions stay served", { timeout: 60_000 }, async () => {
  const raw = await openRaw(node.ports.imap);
  await raw.waitFor(/^\* OK .*\r\n/);
  raw.send("l1 LOGIN alice@example.test alice-pw\r\n");
  await raw.waitFor(/l1 OK /);
  const started = Date.now();
  raw.send(`l2 LIST "" "${"*".repeat(5_000)}x"\r\nl3 LIST "" "${"%*".repeat(2_500)}"\r\n`);
  await raw.waitFor(/l3 OK LIST completed\r\n/, 5_000);
  assert.doesNotMatch(raw.received(), /\* LIST [^\r]*"?INBOX"?\r\n[^]*l2 OK/, "INBOX does not end in x");
  assert.match(raw.received(), /l2 OK LIST completed\r\n[^]*\* LIST \([^)]*\) "\/" "?INBOX"?\r\n[^]*l3 OK/);
  assert.ok(Date.now() - started < 5_000);
  const other = await openRaw(node.ports.imap);
  await other.waitFor(/^\* OK .*\r\n/, 2_000);
  other.close();
  raw.close();
});

test("before login only small commands are taken: a 50 MB literal gets no go-ahead, a big non-synchronizing one is dropped; after login APPEND takes large messages", { timeout: 60_000 }, async () => {
  const raw = await openRaw(node.ports.imap);
  await raw.waitFor(/^\* OK .*\r\n/);
  raw.send("p1 LOGIN {52428800}\r\n");
  await raw.waitFor(/p1 BAD literal of 52428800 octets is over the limit/);
  assert.doesNotMatch(raw.received(), /\+ go ahead/);
  // LITERAL+: the client sends the bytes regardless; they are read and dropped, never run as commands.
  raw.send(`p2 LOGIN {20000+}\r\n${"p9 LOGOUT\r\n".repeat(1_818)}xx\r\np3 NOOP\r\n`);
  await raw.waitFor(/p3 OK NOOP completed\r\n/);
  assert.match(raw.received(), /p2 BAD literal of 20000 octets is over the limit/);
  assert.doesNotMatch(raw.received(), /BYE|p9/);
  raw.send("p4 LOGIN alice@example.test alice-pw\r\n");
  await raw.waitFor(/p4 OK /);
  const message = `Subject: big\r\n\r\n${"0123456789abcdef".repeat(8_192)}\r\n`;
  raw.send(`p5 APPEND Trash {${message.length}}\r\n`);
  await raw.waitFor(/p5 (NO|BAD) |\+ go ahead\r\n/);
  raw.send(`${message}\r\n`);
  await raw.waitFor(/p5 (OK|NO|BAD) [^\r]*\r\n/);
  assert.match(raw.received(), /p5 (OK \[APPENDUID|NO \[TRYCREATE\])/);
  raw.send("p6 LOGOUT\r\n");
  await raw.waitFor(/p6 OK/);
  raw.close();
});
