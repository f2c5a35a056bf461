// A login flood from one address against an account that is already slowed: forty AUTH
// PLAIN attempts at once over implicit TLS, each client hanging up instead of waiting out
// the account's delay. Attempts count as failed when admitted, so the per-IP limit holds
// however many are in flight, and a client that hangs up costs no password check.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { openRaw } from "../support/raw-socket.ts";
import { eventually, makeDataDir, readMetric, removeDataDir, sleep, startTernNode, uniqueCluster, type TernNode } from "../support/tern-node.ts";

let node: TernNode;
let dataDir: string;

const DELAY_MS = 3_000;
const MAX_FAILURES_PER_IP = 10;

before(async () => {
  dataDir = await makeDataDir();
  node = await startTernNode({
    nodeId: "flood",
    cluster: uniqueCluster(),
    dataDir,
    localDomains: ["local.test"],
    users: [{ address: "alice@local.test", password: "alice-secret" }],
    // The per-IP limit is the one under test: the per-(account, IP) limit is set out of its way.
    smtp: { maxConnectionsPerIp: 100, maxAuthFailuresPerIp: MAX_FAILURES_PER_IP, maxAuthFailuresPerUserAndIp: 100 },
    logins: { accountDelayAfterFailures: 1, accountDelayMs: DELAY_MS, accountMaxDelayMs: DELAY_MS },
  });
});

after(async () => {
  await node.kill("SIGTERM");
  await removeDataDir(dataDir);
});

const authPlain = (user: string, password: string) => `AUTH PLAIN ${Buffer.from(`\0${user}\0${password}`).toString("base64")}\r\n`;

/** One AUTH over implicit TLS from `source`; the reply, or undefined if none came within `waitMs` (then the client hangs up). */
const authThenHangUp = async (source: string, password: string, waitMs: number): Promise<string | undefined> => {
  const client = await openRaw(node.ports.smtps, { tls: true, localAddress: source });
  try {
    await client.waitFor(/^220 /m);
    client.send("EHLO flood.test\r\n");
    await client.waitFor(/^250 /m);
    const before = client.received().length;
    client.send(authPlain("alice@local.test", password));
    // The first reply line after EHLO's that is not a 250 (235, 4xx or 5xx) answers AUTH.
    const reply = await client.waitFor(/^(235|[45]\d\d) [^\r\n]*\r\n/m, waitMs).then(
      (text) => text.slice(before).trim(),
      () => undefined,
    );
    return reply;
  } finally {
    client.close();
  }
};

test("forty parallel AUTH attempts from one IP that hang up: only the per-IP limit's worth are admitted, and none gets a password check", async () => {
  // One failure from elsewhere: every further attempt for alice waits DELAY_MS.
  assert.match((await authThenHangUp("127.0.0.2", "first-guess", 20_000)) ?? "", /^535 5\.7\.8 /);
  const failedBefore = await readMetric(node, "tern_smtp_rejections_total", 'reason="auth-failed"');
  assert.equal(failedBefore, 1);

  const replies = await Promise.all(Array.from({ length: 40 }, (_, n) => authThenHangUp("127.0.0.3", `guess-${n}`, 1_500)));
  const refused = replies.filter((reply) => reply?.startsWith("454 4.7.0 Too many failed authentication attempts"));
  const unanswered = replies.filter((reply) => reply === undefined);
  assert.equal(refused.length, 40 - MAX_FAILURES_PER_IP, `replies: ${JSON.stringify(replies)}`);
  assert.equal(unanswered.length, MAX_FAILURES_PER_IP, "the admitted ones were still waiting out the delay");

  // Each admitted attempt ends when its client hangs up...
  await eventually(() => (node.events("auth.abandoned").length >= MAX_FAILURES_PER_IP ? true : undefined), 10_000, "abandoned attempts");
  assert.equal(node.events("auth.delayed").filter((line) => line.user === "alice@local.test").length, MAX_FAILURES_PER_IP);
  // ...and no password is checked for it, even after its delay would have passed.
  await sleep(DELAY_MS + 500);
  assert.equal(await readMetric(node, "tern_smtp_rejections_total", 'reason="auth-failed"'), failedBefore, "no scrypt ran for a client that left");
  assert.equal(await readMetric(node, "tern_smtp_rejections_total", 'reason="auth-abandoned"'), MAX_FAILURES_PER_IP);

  // The abandoned attempts count as failures: the address is at its limit, even for the right password.
  assert.match((await authThenHangUp("127.0.0.3", "alice-secret", 20_000)) ?? "", /^454 4\.7\.0 /);
  // Elsewhere alice still gets in, after the delay.
  assert.match((await authThenHangUp("127.0.0.4", "alice-secret", 20_000)) ?? "", /^235 /);
});
