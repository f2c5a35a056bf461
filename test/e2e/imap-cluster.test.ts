// IMAP across two node processes: alice's mailbox lives on A; an imapflow client on B
// sits in IDLE and hears of mail delivered over SMTP through A within a second of the 250,
// of flag changes and expunges made by a Python imaplib session on A, and of a POP3
// DELE + QUIT; a non-idling session on A gets the EXPUNGE on its next command; a message
// appended after that gets a higher UID than the one removed (UIDs are never reused).
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { performance } from "node:perf_hooks";
import nodemailer from "nodemailer";
import { ImapFlow } from "imapflow";
import { eventually, makeDataDir, removeDataDir, run, startTernNode, uniqueCluster, type TernNode } from "../support/tern-node.ts";
import { connectPop3, loginPop3 } from "../support/pop3.ts";
import { openRaw } from "../support/raw-socket.ts";

const cluster = uniqueCluster();
const USER = "alice@example.test";
const PASSWORD = "alice-pw";
const common = { cluster, localDomains: ["example.test"], users: [{ address: USER, password: PASSWORD, home: "a" }], imap: { failedLoginDelayMs: 0 } };

let dirA: string;
let dirB: string;
let nodeA: TernNode | undefined;
let nodeB: TernNode | undefined;
let client: ImapFlow | undefined;

/** What the imapflow client heard, with the time it heard it. */
interface Heard {
  readonly event: "exists" | "flags" | "expunge";
  readonly at: number;
  readonly data: Record<string, unknown>;
}
const heard: Heard[] = [];

const waitHeard = (match: (h: Heard) => boolean, after: number, what: string, timeoutMs = 10_000) =>
  eventually(() => heard.find((h) => h.at >= after && match(h)), timeoutMs, what);

before(async () => {
  [dirA, dirB] = await Promise.all([makeDataDir(), makeDataDir()]);
  [nodeA, nodeB] = await Promise.all([
    startTernNode({ ...common, nodeId: "a", dataDir: dirA }),
    startTernNode({ ...common, nodeId: "b", dataDir: dirB }),
  ]);
  // B routes alice's asks to A once it has learnt where her mailbox lives.
  client = await eventually(async () => {
    const candidate = new ImapFlow({
      host: "127.0.0.1",
      port: nodeB!.ports.imap,
      secure: false,
      doSTARTTLS: false,
      auth: { user: USER, pass: PASSWORD },
      logger: false,
      // Real clients wait longer before IDLE; the test only needs it soon.
      autoIdleDelay: 100,
    });
    candidate.on("error", () => undefined);
    try {
      await candidate.connect();
      await candidate.mailboxOpen("INBOX");
      return candidate;
    } catch {
      await candidate.logout().catch(() => candidate.close());
      return undefined;
    }
  }, 20_000, "an IMAP session on B with INBOX selected");
  for (const event of ["exists", "flags", "expunge"] as const)
    client.on(event, (data: Record<string, unknown>) => heard.push({ event, at: performance.now(), data }));
});

after(async () => {
  await client?.logout().catch(() => client?.close());
  await Promise.all([nodeA?.kill("SIGTERM"), nodeB?.kill("SIGTERM")]);
  await Promise.all([removeDataDir(dirA), removeDataDir(dirB)]);
});

/** Sends through A's SMTP; resolves with the time the 250 to DATA arrived. */
const sendThroughA = async (subject: string): Promise<number> => {
  const transport = nodemailer.createTransport({ host: "127.0.0.1", port: nodeA!.ports.smtp, secure: false, ignoreTLS: true });
  try {
    const raw = `From: s@elsewhere.test\r\nTo: ${USER}\r\nSubject: ${subject}\r\nMessage-ID: <${subject}@elsewhere.test>\r\n\r\nbody of ${subject}\r\n`;
    const info = await transport.sendMail({ envelope: { from: "s@elsewhere.test", to: USER }, raw });
    const at = performance.now();
    assert.match(info.response, /^250 /);
    return at;
  } finally {
    transport.close();
  }
};

const idling = () => eventually(() => (client!.idling ? true : undefined), 5_000, "imapflow in IDLE");

const imaplibOnA = (steps: string) =>
  run("python3", [
    "-c",
    `
import imaplib, json
m = imaplib.IMAP4("127.0.0.1", ${nodeA!.ports.imap})
m.login(${JSON.stringify(USER)}, ${JSON.stringify(PASSWORD)})
m.select("INBOX")
out = {}
${steps}
m.logout()
print(json.dumps(out))
`,
  ]);

const latencies: number[] = [];

test("an IDLE client on B hears of mail delivered through A within a second of the 250", { timeout: 60_000 }, async () => {
  for (let n = 1; n <= 3; n++) {
    await idling();
    const accepted = await sendThroughA(`idle-${n}`);
    const exists = await waitHeard((h) => h.event === "exists" && h.data.count === n, accepted - 1_000, `EXISTS ${n}`);
    const latency = Math.max(0, exists.at - accepted);
    latencies.push(latency);
  }
  console.log(`IDLE notification latency (SMTP 250 on A → imapflow 'exists' on B), ms: ${latencies.map((ms) => ms.toFixed(1)).join(", ")}`);
  for (const latency of latencies) assert.ok(latency < 1_000, `EXISTS came ${latency.toFixed(0)} ms after the 250`);
  assert.equal(client!.mailbox && typeof client!.mailbox === "object" ? client!.mailbox.exists : undefined, 3);
});

test("flag changes and an expunge by an imaplib session on A reach the IDLE client on B", { timeout: 60_000 }, async () => {
  await idling();
  const started = performance.now();
  const seen = await imaplibOnA(`out["store"] = m.store("1", "+FLAGS", "(\\\\Seen)")[0]`);
  assert.equal(seen.code, 0, seen.stderr);
  const flagged = await waitHeard((h) => h.event === "flags" && h.data.seq === 1, started, "FETCH FLAGS for message 1");
  assert.ok((flagged.data.flags as Set<string>).has("\\Seen"), JSON.stringify([...(flagged.data.flags as Set<string>)]));

  await idling();
  const expungeStarted = performance.now();
  const removed = await imaplibOnA(`
out["store"] = m.store("2", "+FLAGS", "(\\\\Deleted)")[0]
out["expunge"] = [d.decode() for d in m.expunge()[1] if d]
`);
  assert.equal(removed.code, 0, removed.stderr);
  assert.deepEqual(JSON.parse(removed.stdout).expunge, ["2"]);
  const expunged = await waitHeard((h) => h.event === "expunge", expungeStarted, "EXPUNGE");
  assert.equal(expunged.data.seq, 2);
  await eventually(() => (client!.mailbox && typeof client!.mailbox === "object" && client!.mailbox.exists === 2 ? true : undefined), 5_000, "2 messages left");
  const listed = [];
  for await (const message of client!.fetch("1:*", { uid: true, flags: true, envelope: true })) listed.push({ subject: message.envelope?.subject, seen: message.flags?.has("\\Seen") });
  assert.deepEqual(listed, [{ subject: "idle-1", seen: true }, { subject: "idle-3", seen: false }]);
});

test("POP3 DELE + QUIT: IMAP sessions see the EXPUNGE (IDLE at once, others on their next command); UIDs are not reused", { timeout: 60_000 }, async () => {
  // A session on A that is not idling: it hears of the removal only when it next speaks.
  const raw = await openRaw(nodeA!.ports.imap);
  await raw.waitFor(/^\* OK .*\r\n/);
  raw.send(`r1 LOGIN ${USER} ${PASSWORD}\r\nr2 SELECT INBOX\r\n`);
  await raw.waitFor(/r2 OK /);
  assert.match(raw.received(), /\* 2 EXISTS\r\n/);
  raw.send("r3 UID SEARCH ALL\r\n");
  const uids = (/\* SEARCH ([\d ]+)\r\n/.exec(await raw.waitFor(/r3 OK /))![1]!).split(" ").map(Number);
  const removedUid = Math.max(...uids);

  await idling();
  const started = performance.now();
  const pop3 = await connectPop3(nodeB!.ports.pop3);
  assert.match(await loginPop3(pop3, USER, PASSWORD), /^\+OK/);
  assert.match(await pop3.command("STAT"), /^\+OK 2 /);
  assert.match(await pop3.command("DELE 2"), /^\+OK/);
  assert.match(await pop3.command("QUIT"), /^\+OK/);
  await pop3.closed;

  const expunged = await waitHeard((h) => h.event === "expunge", started, "EXPUNGE after POP3 QUIT");
  assert.equal(expunged.data.seq, 2);

  const before = raw.received().length;
  raw.send("r4 NOOP\r\n");
  const afterNoop = (await raw.waitFor(/r4 OK /)).slice(before);
  assert.match(afterNoop, /\* 2 EXPUNGE\r\n/);
  raw.send("r5 UID SEARCH ALL\r\n");
  await raw.waitFor(/r5 OK /);
  assert.match(raw.received(), new RegExp(`\\* SEARCH ${uids[0]}\\r\\n`));

  // An append after the expunge: a new UID above the removed one, on both sessions.
  const appended = await client!.append("INBOX", `Subject: after pop3\r\n\r\nappended\r\n`);
  assert.ok(appended && appended.uid !== undefined, "APPENDUID");
  assert.ok(appended.uid! > removedUid, `UID ${appended.uid} was given after ${removedUid} was removed`);
  raw.send("r6 NOOP\r\nr7 UID SEARCH ALL\r\n");
  await raw.waitFor(/r7 OK /);
  assert.match(raw.received(), new RegExp(`\\* SEARCH ${uids[0]} ${appended.uid}\\r\\n`));
  raw.send("r8 LOGOUT\r\n");
  await raw.waitFor(/r8 OK /);
  raw.close();
});
