// A mailbox move cut short by kill -9 (TERN_FAULT_KILL_IN_MOVE, actors/mailbox/faults.ts),
// with mail arriving all along: the restarted node settles the move (on to the end after
// the target's commit, back to the source before it), and every message sent is in the
// mailbox exactly once, on the one node that holds it.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import nodemailer from "nodemailer";
import { eventually, makeDataDir, projectRoot, removeDataDir, run, sleep, startTernNode, uniqueCluster, type TernNode, ternCli } from "../support/tern-node.ts";
import { poplibFetch, type PoppedMessage } from "../support/pop3.ts";

const cluster = uniqueCluster();
const addresses = ["carol", "dave", "erin"].map((name) => `${name}@example.test`);
const common = {
  cluster,
  localDomains: ["example.test"],
  users: addresses.map((address) => ({ address, password: "pw", home: "a" })),
  mailbox: { askTimeoutMs: 5_000, moveStepTimeoutMs: 8_000 },
  delivery: { retryBaseMs: 200, retryMaxMs: 1_000, pollMs: 50 },
};

let dirA: string;
let dirB: string;
let nodeA: TernNode | undefined;
let nodeB: TernNode | undefined;

/** Starts (or restarts) a node, killing itself at `crashAt` of a move if given. */
const start = async (id: "a" | "b", crashAt?: string) => {
  if (crashAt) process.env.TERN_FAULT_KILL_IN_MOVE = crashAt;
  try {
    return await startTernNode({ ...common, nodeId: id, dataDir: id === "a" ? dirA : dirB });
  } finally {
    delete process.env.TERN_FAULT_KILL_IN_MOVE;
  }
};

before(async () => {
  [dirA, dirB] = await Promise.all([makeDataDir(), makeDataDir()]);
  [nodeA, nodeB] = await Promise.all([start("a"), start("b")]);
});

after(async () => {
  await Promise.all([nodeA?.kill("SIGTERM"), nodeB?.kill("SIGTERM")]);
  await Promise.all([removeDataDir(dirA), removeDataDir(dirB)]);
});

const moveTo = (user: string, node: string, timeoutMs = 15_000) =>
  run(process.execPath, [...ternCli, "mailbox", "move", "--config", join(dirA, "config-a.json"), "--timeout", String(timeoutMs), user, node]);

const send = async (node: TernNode, user: string, tag: string) => {
  const transport = nodemailer.createTransport({ host: "127.0.0.1", port: node.ports.smtp, secure: false, ignoreTLS: true });
  try {
    await transport.sendMail({
      envelope: { from: "sender@elsewhere.test", to: user },
      raw: `From: sender@elsewhere.test\r\nTo: ${user}\r\nSubject: ${tag}\r\n\r\nbody of ${tag}\r\n`,
    });
  } finally {
    transport.close();
  }
};

/** Sends to `user` through `via()` every 50 ms until stopped; returns the subjects sent. */
const keepSending = (user: string, via: () => TernNode) => {
  const sent: string[] = [];
  let sending = true;
  const loop = (async () => {
    for (let n = 0; sending; n++) {
      const tag = `${user.split("@")[0]}-${n}`;
      await send(via(), user, tag);
      sent.push(tag);
      await sleep(50);
    }
  })();
  return async () => {
    sending = false;
    await loop;
    return sent;
  };
};

const subjectOf = (message: PoppedMessage) => /Subject: (\S+)/.exec(message.head)?.[1] ?? "?";

/** The mailbox as POP3 on `node` shows it once it has `expected` messages. */
const mailbox = (node: TernNode, user: string, expected: number) =>
  eventually(async () => {
    const result = await poplibFetch(node.ports.pop3, user, "pw").catch(() => undefined);
    return result && "messages" in result && result.messages.length >= expected ? result.messages : undefined;
  }, 90_000, `${expected} messages for ${user}`);

const assertExactlyOnce = (messages: ReadonlyArray<PoppedMessage>, sent: ReadonlyArray<string>) =>
  assert.deepEqual(messages.map(subjectOf).sort(), [...sent].sort(), "every message sent is in the mailbox exactly once");

test("target killed right after its commit: restarted, it finishes the move; nothing lost or doubled", { timeout: 180_000 }, async () => {
  const user = addresses[0]!;
  for (let n = 0; n < 5; n++) await send(nodeA!, user, `carol-pre-${n}`);
  const before = await mailbox(nodeA!, user, 5);
  nodeB = await (nodeB!.kill("SIGTERM").then(() => start("b", "target-committed")));

  const stop = keepSending(user, () => nodeA!);
  await sleep(300);
  const moved = await moveTo(user, "b");
  assert.notEqual(moved.code, 0, "the target died before answering");
  await sleep(1_000);
  nodeB = await start("b");
  await nodeA!.waitForEvent("mailbox.move.released", { user, peer: "b" }, 60_000);
  const sent = [...(await stop()), ...before.map(subjectOf)];

  const onB = await mailbox(nodeB, user, sent.length);
  assertExactlyOnce(onB, sent);
  const uidls = new Map(onB.map((m) => [subjectOf(m), m.uidl]));
  for (const message of before) assert.equal(uidls.get(subjectOf(message)), message.uidl);
});

test("target killed after the source froze, before its commit: the move rolls back to the source, then succeeds", { timeout: 180_000 }, async () => {
  const user = addresses[1]!;
  for (let n = 0; n < 5; n++) await send(nodeA!, user, `dave-pre-${n}`);
  const before = await mailbox(nodeA!, user, 5);
  nodeB = await (nodeB!.kill("SIGTERM").then(() => start("b", "target-frozen")));

  const stop = keepSending(user, () => nodeA!);
  await sleep(300);
  assert.notEqual((await moveTo(user, "b")).code, 0);
  await sleep(1_000);
  nodeB = await start("b");
  await nodeA!.waitForEvent("mailbox.move.thawed", { user, peer: "b" }, 60_000);
  await nodeB.waitForEvent("mailbox.move.rolled-back", { user, peer: "a" }, 60_000);
  const sent = [...(await stop()), ...before.map(subjectOf)];
  assertExactlyOnce(await mailbox(nodeA!, user, sent.length), sent);

  // Nothing half-done is left behind: the same move now goes through.
  const again = await moveTo(user, "b");
  assert.equal(again.code, 0, again.stderr);
  assertExactlyOnce(await mailbox(nodeB, user, sent.length), sent);
});

test("source killed after it froze: the target gives up, and the restarted source serves the mailbox again", { timeout: 180_000 }, async () => {
  const user = addresses[2]!;
  for (let n = 0; n < 5; n++) await send(nodeA!, user, `erin-pre-${n}`);
  const before = await mailbox(nodeA!, user, 5);
  nodeA = await (nodeA!.kill("SIGTERM").then(() => start("a", "source-frozen")));

  const stop = keepSending(user, () => nodeB!);
  await sleep(300);
  // The freeze request dies with the source: the target waits out its step timeout (30 s), then gives up.
  const moved = await moveTo(user, "b", 90_000);
  assert.equal(moved.code, 1, moved.stderr);
  assert.match(moved.stderr, /not moved \(unavailable\)/);
  nodeA = await start("a");
  await nodeA.waitForEvent("mailbox.move.thawed", { user, peer: "b" }, 60_000);
  const sent = [...(await stop()), ...before.map(subjectOf)];
  const onA = await mailbox(nodeA, user, sent.length);
  assertExactlyOnce(onA, sent);
  const uidls = new Map(onA.map((m) => [subjectOf(m), m.uidl]));
  for (const message of before) assert.equal(uidls.get(subjectOf(message)), message.uidl);
});
