// Login abuse seen by real clients (python3 smtplib and poplib): a user's local part and
// full address count as one account, and failures from many addresses, over SMTP AUTH and
// POP3 together, slow the account's logins by a growing delay without locking it out.
import { after, before, test } from "node:test";
import { popLoginFrom, smtpAuthFrom } from "../support/python-logins.ts";
import assert from "node:assert/strict";
import { makeDataDir, removeDataDir, startTernNode, uniqueCluster, type TernNode } from "../support/tern-node.ts";

let node: TernNode;
let dataDir: string;

// Generous, so that an attempt that was not delayed (its scrypt included) is told apart from
// one that was by comparing with the delay itself, even on a slow, loaded machine.
const DELAY_MS = 2_000;

before(async () => {
  dataDir = await makeDataDir();
  node = await startTernNode({
    nodeId: "logins",
    cluster: uniqueCluster(),
    dataDir,
    localDomains: ["local.test"],
    users: [
      { address: "alice@local.test", password: "alice-secret" },
      { address: "carol@local.test", password: "carol-secret" },
      { address: "dave@local.test", password: "dave-secret" },
    ],
    smtp: { maxAuthFailuresPerUserAndIp: 5, maxAuthFailuresPerIp: 20 },
    pop3: { maxFailedLoginsPerUserAndIp: 5, failedLoginDelayMs: 0 },
    // Past 6 failures of one account (more than the pair limit of 5, so the first tests see no delay).
    logins: { accountDelayAfterFailures: 6, accountDelayMs: DELAY_MS, accountMaxDelayMs: 2 * DELAY_MS },
  });
});

after(async () => {
  await node.kill("SIGTERM");
  await removeDataDir(dataDir);
});

/** One SMTP AUTH PLAIN attempt after STARTTLS, from `source`; the reply code and text, and how long AUTH took. */
const smtpAuth = (user: string, password: string, source: string) => smtpAuthFrom(node.ports.smtp, user, password, source);

/** One POP3 USER/PASS attempt with poplib from `source`; the PASS reply, and how long it took. */
const popLogin = (user: string, password: string, source: string) => popLoginFrom(node.ports.pop3, user, password, source);

test("SMTP AUTH: failures as `alice` and as `alice@local.test` count together", async () => {
  const replies: string[] = [];
  for (let n = 0; n < 5; n++) replies.push((await smtpAuth(n % 2 === 0 ? "alice" : "alice@local.test", "wrong", "127.0.0.1")).reply.slice(0, 3));
  assert.deepEqual(replies, ["535", "535", "535", "535", "535"]);
  // Counted apart, each spelling would still have two or three tries left.
  assert.match((await smtpAuth("alice", "alice-secret", "127.0.0.1")).reply, /^454 4\.7\.0 Too many failed authentication attempts/);
  assert.match((await smtpAuth("alice@local.test", "alice-secret", "127.0.0.1")).reply, /^454 4\.7\.0 /);
  assert.match((await smtpAuth("ALICE", "alice-secret", "127.0.0.1")).reply, /^454 4\.7\.0 /);
  assert.match((await smtpAuth("alice", "alice-secret", "127.0.0.2")).reply, /^235 /, "from another address alice still gets in");
});

test("POP3: failures as `carol` and as `carol@local.test` count together", async () => {
  const replies: string[] = [];
  for (let n = 0; n < 5; n++) replies.push((await popLogin(n % 2 === 0 ? "carol" : "carol@local.test", "wrong", "127.0.0.1")).reply);
  assert.deepEqual(replies, Array(5).fill("-ERR [AUTH] invalid user name or password"));
  assert.equal((await popLogin("carol", "carol-secret", "127.0.0.1")).reply, "-ERR [AUTH] too many failed logins, try again later");
  assert.equal((await popLogin("carol@local.test", "carol-secret", "127.0.0.1")).reply, "-ERR [AUTH] too many failed logins, try again later");
  assert.match((await popLogin("carol", "carol-secret", "127.0.0.2")).reply, /^\+OK /, "from another address carol still gets in");
});

test("failures from many addresses over both protocols slow the account by a growing delay, but the right password still gets in", async () => {
  assert.match((await smtpAuth("dave", "dave-secret", "127.0.0.30")).reply, /^235 /, "dave's usual address");
  // Six guesses, each from its own address (far under every per-IP limit), half over SMTP, half over POP3.
  for (let n = 0; n < 6; n++) {
    const source = `127.0.1.${n + 1}`;
    const attempt = n % 2 === 0 ? await smtpAuth("dave", "guess", source) : await popLogin("dave@local.test", "guess", source);
    assert.ok(attempt.ms < DELAY_MS, `guess ${n + 1} was not slowed yet: ${Math.round(attempt.ms)} ms, under the ${DELAY_MS} ms delay`);
  }
  const seventh = await smtpAuth("dave@local.test", "guess", "127.0.1.7");
  assert.match(seventh.reply, /^535 /);
  assert.ok(seventh.ms >= DELAY_MS, `the seventh guess waited ${Math.round(seventh.ms)} ms`);
  const real = await popLogin("dave", "dave-secret", "127.0.1.8");
  assert.match(real.reply, /^\+OK /, "the right password succeeds: slowed, not locked out");
  assert.ok(real.ms >= 2 * DELAY_MS, `and waited the doubled delay (${Math.round(real.ms)} ms)`);
  const usual = await smtpAuth("dave", "dave-secret", "127.0.0.30");
  assert.match(usual.reply, /^235 /);
  assert.ok(usual.ms < DELAY_MS, `dave's usual address is not slowed: ${Math.round(usual.ms)} ms, under the ${DELAY_MS} ms delay`);
  assert.ok(node.events("auth.delayed").some((line) => line.user === "dave@local.test"), "the delay is logged by account");
});
