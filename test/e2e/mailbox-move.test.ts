// `tern mailbox move`: bob's mailbox moves from A to B (the real CLI) while a loop keeps
// sending him mail over SMTP through both nodes. Afterwards every message sent is in the
// mailbox exactly once, the UIDLs of the messages from before the move are unchanged, the
// IMAP subscriptions came along, B holds the mailbox and A serves POP3 for it through B. Refusals: an unknown user, a
// node that does not answer, a move to the node that already holds the mailbox.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import nodemailer from "nodemailer";
import { eventually, makeDataDir, projectRoot, removeDataDir, run, sleep, startTernNode, uniqueCluster, type TernNode, ternCli } from "../support/tern-node.ts";
import { poplibFetch, type PoppedMessage } from "../support/pop3.ts";

const cluster = uniqueCluster();
const users = [{ address: "bob@example.test", password: "bob-pw", home: "a" }];
const common = {
  cluster,
  localDomains: ["example.test"],
  users,
  mailbox: { askTimeoutMs: 5_000 },
  delivery: { retryBaseMs: 200, retryMaxMs: 1_000, pollMs: 50 },
};

let dirA: string;
let dirB: string;
let nodeA: TernNode | undefined;
let nodeB: TernNode | undefined;

before(async () => {
  [dirA, dirB] = await Promise.all([makeDataDir(), makeDataDir()]);
  [nodeA, nodeB] = await Promise.all([
    startTernNode({ ...common, nodeId: "a", dataDir: dirA }),
    startTernNode({ ...common, nodeId: "b", dataDir: dirB }),
  ]);
});

after(async () => {
  await Promise.all([nodeA?.kill("SIGTERM"), nodeB?.kill("SIGTERM")]);
  await Promise.all([removeDataDir(dirA), removeDataDir(dirB)]);
});

/** The real CLI, as an operator runs it, with node A's config file. */
const tern = (...args: string[]) =>
  run(process.execPath, [...ternCli, ...args.slice(0, 2), "--config", join(dirA, "config-a.json"), ...args.slice(2)]);

const send = async (node: TernNode, tag: string) => {
  const transport = nodemailer.createTransport({ host: "127.0.0.1", port: node.ports.smtp, secure: false, ignoreTLS: true });
  try {
    await transport.sendMail({
      envelope: { from: "sender@elsewhere.test", to: "bob@example.test" },
      raw: `From: sender@elsewhere.test\r\nTo: bob@example.test\r\nSubject: ${tag}\r\nMessage-ID: <${tag}@elsewhere.test>\r\n\r\nbody of ${tag}\r\n`,
    });
  } finally {
    transport.close();
  }
};

const fetchAll = async (node: TernNode): Promise<PoppedMessage[]> => {
  const result = await poplibFetch(node.ports.pop3, "bob@example.test", "bob-pw");
  if (!("messages" in result)) throw new Error(`POP3 login on node failed: ${result.error}`);
  return result.messages;
};

/** Python imaplib on `node`: runs `body` with `m` logged in as bob; prints what it returns. */
const imaplib = async (node: TernNode, body: string) => {
  const script = `import imaplib\nm = imaplib.IMAP4("127.0.0.1", ${node.ports.imap})\nm.login("bob@example.test", "bob-pw")\n${body}\nm.logout()\n`;
  const result = await run("python3", ["-c", script]);
  assert.equal(result.code, 0, result.stderr);
  return result.stdout.trim();
};
const LSUB = `print(sorted(d.decode() for d in m.lsub()[1]))`;

const subjectOf = (message: PoppedMessage) => /Subject: (\S+)/.exec(message.head)?.[1] ?? "?";

/** Every message in the mailbox once `expected` are there (fewer: still arriving; errors: the mailbox is settling). */
const waitForAll = (node: TernNode, expected: number) =>
  eventually(async () => {
    const messages = await fetchAll(node).catch(() => undefined);
    return messages !== undefined && messages.length >= expected ? messages : undefined;
  }, 90_000, `${expected} messages on POP3`);

test("a mailbox moves from A to B while mail keeps arriving through both: each message once, UIDLs kept", { timeout: 240_000 }, async () => {
  const sent: string[] = [];
  for (let n = 0; n < 10; n++) {
    const tag = `before-${n}`;
    await send(n % 2 === 0 ? nodeA! : nodeB!, tag);
    sent.push(tag);
  }
  const beforeMove = await waitForAll(nodeA!, sent.length);
  const uidlBefore = new Map(beforeMove.map((m) => [subjectOf(m), m.uidl]));
  const lsubBefore = await imaplib(nodeA!, `m.create("Projects")\nm.subscribe("Projects")\nm.create("Unsubscribed")\n${LSUB}`);
  assert.match(lsubBefore, /Projects/);
  assert.doesNotMatch(lsubBefore, /Unsubscribed/);

  // Mail keeps coming through both nodes during the whole move.
  let sending = true;
  const loop = (async () => {
    for (let n = 0; sending; n++) {
      const tag = `during-${n}`;
      await send(n % 2 === 0 ? nodeA! : nodeB!, tag);
      sent.push(tag);
      await sleep(20);
    }
  })();
  await sleep(500);
  const moved = await tern("mailbox", "move", "bob@example.test", "b");
  await sleep(500);
  sending = false;
  await loop;
  assert.equal(moved.code, 0, `tern mailbox move failed: ${moved.stderr}`);
  assert.match(moved.stdout, /^bob@example\.test: moved from node a to node b: \d+ messages/);
  for (let n = 0; n < 4; n++) {
    const tag = `after-${n}`;
    await send(n % 2 === 0 ? nodeA! : nodeB!, tag);
    sent.push(tag);
  }
  assert.ok(sent.length > 20, `only ${sent.length} messages were sent`);

  const onB = await waitForAll(nodeB!, sent.length);
  const subjects = onB.map(subjectOf).sort();
  assert.deepEqual(subjects, [...sent].sort(), "every message sent is in the mailbox exactly once");
  for (const message of onB) {
    const earlier = uidlBefore.get(subjectOf(message));
    if (earlier !== undefined) assert.equal(message.uidl, earlier, `UIDL of ${subjectOf(message)} changed`);
  }
  assert.equal(new Set(onB.map((m) => m.uidl)).size, onB.length, "UIDLs are unique");
  assert.equal(await imaplib(nodeB!, LSUB), lsubBefore, "the subscriptions moved with the mailbox");

  // A gave its copy up; POP3 on A reaches the mailbox on B.
  await nodeA!.waitForEvent("mailbox.move.released", { user: "bob@example.test", peer: "b" });
  await nodeB!.waitForEvent("mailbox.move.completed", { user: "bob@example.test", peer: "a" });
  const onA = await fetchAll(nodeA!);
  assert.deepEqual(onA.map((m) => m.uidl), onB.map((m) => m.uidl));
  assert.deepEqual(onA.map((m) => m.sha256), onB.map((m) => m.sha256));

  // Restarted, A (bob's configured home) leaves the mailbox where it is now.
  await nodeA!.kill("SIGTERM");
  nodeA = await startTernNode({ ...common, nodeId: "a", dataDir: dirA });
  await send(nodeA, "after-restart");
  sent.push("after-restart");
  const final = await waitForAll(nodeB!, sent.length);
  assert.deepEqual(final.map(subjectOf).sort(), [...sent].sort());
  assert.equal(nodeA.events("mailbox.owner.reasserted").length, 0, "A claimed the mailbox back");
});

test("refused moves: unknown user, a node that does not answer, the node that holds it already", { timeout: 60_000 }, async () => {
  const unknown = await tern("mailbox", "move", "nobody@example.test", "b");
  assert.equal(unknown.code, 1);
  assert.match(unknown.stderr, /not moved \(unknown-user\): nobody@example\.test is not a local user/);

  const noNode = await tern("mailbox", "move", "bob@example.test", "zz", "--timeout", "2000");
  assert.equal(noNode.code, 69);
  assert.match(noNode.stderr, /node zz of cluster \S+ did not answer/);

  const already = await tern("mailbox", "move", "bob@example.test", "b");
  assert.equal(already.code, 1);
  assert.match(already.stderr, /not moved \(already-there\): node b already holds the mailbox/);

  const usage = await tern("mailbox", "move", "bob@example.test");
  assert.equal(usage.code, 2);
});
