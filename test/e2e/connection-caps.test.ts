// Overall connection caps on a real node: with each listener full (from loopback, real
// sockets), the next client is refused cleanly with a temporary reply and disconnected,
// the count is in /metrics, the node stays ready, and when one client leaves a new one
// is served. The SMTP listeners each have their own cap; IMAP and IMAPS share one.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import * as net from "node:net";
import { promisify } from "node:util";
import { connectPop3, loginPop3, type RawPop3 } from "../support/pop3.ts";
import { openRaw, type RawConversation } from "../support/raw-socket.ts";
import { eventually, makeDataDir, removeDataDir, startTernNode, uniqueCluster, type TernNode } from "../support/tern-node.ts";

let node: TernNode;
let dataDir: string;
const CAP = 5;

before(async () => {
  dataDir = await makeDataDir();
  node = await startTernNode({
    nodeId: "caps",
    cluster: uniqueCluster(),
    hostname: "caps.test",
    dataDir,
    localDomains: ["caps.test"],
    users: [{ address: "alice@caps.test", password: "alice-pw" }],
    smtp: { maxConnections: CAP, maxSmtpsConnections: 2 },
    pop3: { maxConnections: CAP },
    imap: { maxConnections: CAP },
  });
});

after(async () => {
  await node.kill("SIGTERM");
  await removeDataDir(dataDir);
});

/** The value of one series in /metrics (0 when absent). */
const metric = async (name: string, labels: string): Promise<number> => {
  const text = await (await fetch(`http://127.0.0.1:${node.ports.http}/metrics`)).text();
  const line = text.split("\n").find((l) => l.startsWith(`${name}{`) && l.includes(labels));
  return line === undefined ? 0 : Number(line.slice(line.lastIndexOf(" ") + 1));
};

const readyz = async () => (await fetch(`http://127.0.0.1:${node.ports.http}/readyz`)).status;

const openSmtp = async (port: number, tls = false): Promise<RawConversation> => {
  const client = await openRaw(port, { tls });
  await client.waitFor(/^220 /);
  return client;
};

const waitClosed = (client: RawConversation) => eventually(() => (client.closed() ? true : undefined), 10_000, "the server to close");

test("SMTP: the client over the cap gets 421 4.7.0 and is disconnected; when one leaves a new one is served", async () => {
  const open = await Promise.all(Array.from({ length: CAP }, () => openSmtp(node.ports.smtp)));

  const over = await openRaw(node.ports.smtp);
  const transcript = await over.waitFor(/\r\n/);
  assert.equal(transcript, "421 4.7.0 caps.test too many connections, try again later\r\n");
  await waitClosed(over);

  assert.equal(await metric("tern_smtp_connections", 'listener="smtp"'), CAP);
  assert.equal(await metric("tern_smtp_connections_refused_total", 'listener="smtp",reason="cap"'), 1);
  assert.equal(await readyz(), 200, "a full listener does not make the node unready");

  // The implicit-TLS listener counts its own sessions: submission still gets in.
  const submission = await openSmtp(node.ports.smtps, true);
  submission.close();

  open[0]!.close();
  await eventually(async () => ((await metric("tern_smtp_connections", 'listener="smtp"')) === CAP - 1 ? true : undefined), 10_000, "the count to drop");
  const next = await openSmtp(node.ports.smtp);
  next.send("EHLO client.test\r\n");
  await next.waitFor(/250 /);
  [...open.slice(1), next].forEach((client) => client.close());
});

test("SMTPS: its own cap refuses over TLS with the same reply", async () => {
  await eventually(async () => ((await metric("tern_smtp_connections", 'listener="smtps"')) === 0 ? true : undefined), 10_000, "smtps to be empty");
  const open = await Promise.all([1, 2].map(() => openSmtp(node.ports.smtps, true)));
  const over = await openRaw(node.ports.smtps, { tls: true });
  assert.equal(await over.waitFor(/\r\n/), "421 4.7.0 caps.test too many connections, try again later\r\n");
  await waitClosed(over);
  assert.equal(await metric("tern_smtp_connections_refused_total", 'listener="smtps",reason="cap"'), 1);
  open.forEach((client) => client.close());
});

test("POP3: the client over the cap gets -ERR [SYS/TEMP] and is disconnected; when one leaves a new one is served", async () => {
  const open: RawPop3[] = await Promise.all(Array.from({ length: CAP }, () => connectPop3(node.ports.pop3)));

  const over = await connectPop3(node.ports.pop3, { readGreeting: false });
  assert.deepEqual(await over.lines(1), ["-ERR [SYS/TEMP] too many connections"]);
  assert.equal(await over.closed, "");

  assert.equal(await metric("tern_pop3_connections", 'listener="pop3"'), CAP);
  assert.equal(await metric("tern_pop3_connections_refused_total", 'reason="cap"'), 1);
  assert.equal(await readyz(), 200);

  open[0]!.socket.destroy();
  await eventually(async () => ((await metric("tern_pop3_connections", 'listener="pop3"')) === CAP - 1 ? true : undefined), 10_000, "the count to drop");
  const next = await connectPop3(node.ports.pop3);
  assert.match(await loginPop3(next, "alice@caps.test", "alice-pw"), /^\+OK/);
  assert.match(await next.command("STAT"), /^\+OK 0 0/);
  [...open.slice(1), next].forEach((session) => session.socket.destroy());
});

const openImap = async (port: number, tls = false): Promise<RawConversation> => {
  const client = await openRaw(port, { tls });
  await client.waitFor(/^\* OK .*\r\n/);
  return client;
};

test("IMAP: IMAP and IMAPS share one cap; the client over it gets * BYE [UNAVAILABLE] and is disconnected; when one leaves a new one is served", async () => {
  // The cap is filled from both ports: the sessions of one count against the other.
  const open = await Promise.all([...Array.from({ length: CAP - 1 }, () => openImap(node.ports.imap)), openImap(node.ports.imaps, true)]);

  const over = await openRaw(node.ports.imap);
  assert.equal(await over.waitFor(/\r\n/), "* BYE [UNAVAILABLE] too many connections\r\n");
  await waitClosed(over);
  const overTls = await openRaw(node.ports.imaps, { tls: true });
  assert.equal(await overTls.waitFor(/\r\n/), "* BYE [UNAVAILABLE] too many connections\r\n");
  await waitClosed(overTls);

  assert.equal(await metric("tern_imap_connections", 'listener="imap"'), CAP);
  assert.equal(await metric("tern_imap_connections_refused_total", 'reason="cap"'), 2);
  assert.equal(await readyz(), 200);

  open[0]!.close();
  await eventually(async () => ((await metric("tern_imap_connections", 'listener="imap"')) === CAP - 1 ? true : undefined), 10_000, "the count to drop");
  const next = await openImap(node.ports.imap);
  next.send("n1 LOGIN alice@caps.test alice-pw\r\nn2 SELECT INBOX\r\n");
  await next.waitFor(/n2 OK /);
  [...open.slice(1), next].forEach((client) => client.close());
});

/** Opens a POP3 connection and resolves with its first line ("" when none came within 10 s). */
const firstPop3Line = (port: number, sockets: net.Socket[]) =>
  new Promise<string>((resolve) => {
    const socket = net.connect({ port, host: "127.0.0.1" });
    setTimeout(() => resolve(""), 10_000).unref();
    sockets.push(socket);
    socket.once("data", (chunk: Buffer) => resolve(chunk.toString("latin1").split("\r\n")[0]!));
    socket.on("error", () => resolve(""));
    socket.on("close", () => resolve(""));
  });

// The case: 1,100 idle POP3 clients against a node limited to 1,024 descriptors
// used to take the whole node offline, SMTP and /readyz included.
const prlimit = (...args: string[]) => promisify(execFile)("prlimit", args);
const hasPrlimit = await prlimit("--version").then(() => true, () => false);
test("1,100 idle POP3 clients under a 1,024-descriptor limit: the default cap keeps SMTP and /readyz up", { skip: !hasPrlimit && "needs prlimit" }, async () => {
  const floodDir = await makeDataDir();
  const flooded = await startTernNode({ nodeId: "flooded", cluster: uniqueCluster(), dataDir: floodDir });
  const sockets: net.Socket[] = [];
  try {
    await prlimit("--pid", String(flooded.pid), "--nofile=1024:1024");
    const lines = await Promise.all(Array.from({ length: 1_100 }, () => firstPop3Line(flooded.ports.pop3, sockets)));
    assert.equal((await fetch(`http://127.0.0.1:${flooded.ports.http}/readyz`, { signal: AbortSignal.timeout(5_000) })).status, 200);
    const smtp = await openRaw(flooded.ports.smtp);
    await smtp.waitFor(/^220 /);
    smtp.close();
    assert.equal(lines.filter((line) => line.startsWith("+OK")).length, 500);
    assert.equal(lines.filter((line) => line === "-ERR [SYS/TEMP] too many connections").length, 600);
  } finally {
    sockets.forEach((socket) => socket.destroy());
    await flooded.kill("SIGTERM");
    await removeDataDir(floodDir);
  }
});
