// Login throttles across two node processes of one cluster on the shared NATS, seen by
// real clients (python3 smtplib and poplib): failed SMTP AUTH and POP3 logins spread over
// node A and node B count as one, so limits reached through one node hold on the other,
// and SMTP and POP3 failures of one account add up across nodes to one growing delay.
import { after, before, test } from "node:test";
import { popLoginFrom, smtpAuthFrom } from "../support/python-logins.ts";
import assert from "node:assert/strict";
import { eventually, makeDataDir, readMetric, removeDataDir, startTernNode, uniqueCluster, type TernNode } from "../support/tern-node.ts";

const DELAY_MS = 2_000;
const PAIR_LIMIT = 3;
const IP_LIMIT = 4;

const cluster = uniqueCluster();
const common = {
  cluster,
  localDomains: ["local.test"],
  users: [
    { address: "alice@local.test", password: "alice-secret", home: "a" },
    { address: "carol@local.test", password: "carol-secret", home: "a" },
    { address: "dave@local.test", password: "dave-secret", home: "a" },
  ],
  smtp: { maxAuthFailuresPerUserAndIp: PAIR_LIMIT, maxAuthFailuresPerIp: IP_LIMIT },
  pop3: { maxFailedLoginsPerUserAndIp: PAIR_LIMIT, maxFailedLoginsPerIp: IP_LIMIT, failedLoginDelayMs: 0 },
  // Past 4 failures of one account (more than the pair limit, so the limit tests see no delay).
  logins: { accountDelayAfterFailures: 4, accountDelayMs: DELAY_MS, accountMaxDelayMs: 2 * DELAY_MS },
};

let dirA: string;
let dirB: string;
let nodeA: TernNode | undefined;
let nodeB: TernNode | undefined;

before(async () => {
  dirA = await makeDataDir();
  dirB = await makeDataDir();
  [nodeA, nodeB] = await Promise.all([startTernNode({ ...common, nodeId: "a", dataDir: dirA }), startTernNode({ ...common, nodeId: "b", dataDir: dirB })]);
});

after(async () => {
  await Promise.all([nodeA?.kill("SIGTERM"), nodeB?.kill("SIGTERM")]);
  await Promise.all([removeDataDir(dirA), removeDataDir(dirB)]);
});

const reports = (node: TernNode, outcome: string) => readMetric(node, "tern_login_reports_total", `outcome="${outcome}"`);

/** Waits until each node has merged every report the other published: both hold the same counts. */
const reportsSettled = () =>
  eventually(async () => {
    const [publishedA, publishedB, mergedA, mergedB] = await Promise.all([reports(nodeA!, "published"), reports(nodeB!, "published"), reports(nodeA!, "merged"), reports(nodeB!, "merged")]);
    return mergedB === publishedA && mergedA === publishedB ? true : undefined;
  }, 5_000, "login reports merged on both nodes");

/** One SMTP AUTH PLAIN attempt after STARTTLS on `node`, from `source`; the reply and how long AUTH took. */
const smtpAuth = (node: TernNode, user: string, password: string, source: string) => smtpAuthFrom(node.ports.smtp, user, password, source);

/** One POP3 USER/PASS attempt with poplib from `source`; the PASS reply, and how long it took. */
const popLogin = (node: TernNode, user: string, password: string, source: string) => popLoginFrom(node.ports.pop3, user, password, source);

const SMTP_REFUSED = /^454 4\.7\.0 Too many failed authentication attempts/;
const POP3_REFUSED = "-ERR [AUTH] too many failed logins, try again later";
const POP3_WRONG = "-ERR [AUTH] invalid user name or password";

test("SMTP AUTH: one account's failures from one address over A and B count once; past the limit both nodes refuse", async () => {
  const replies = [];
  for (const node of [nodeA!, nodeB!, nodeA!]) replies.push((await smtpAuth(node, "alice", "wrong", "127.0.0.1")).reply.slice(0, 3));
  assert.deepEqual(replies, ["535", "535", "535"]);
  await reportsSettled();
  // Counted per node, B would have seen one failure and A two: each still had tries left.
  assert.match((await smtpAuth(nodeB!, "alice@local.test", "alice-secret", "127.0.0.1")).reply, SMTP_REFUSED);
  assert.match((await smtpAuth(nodeA!, "alice", "alice-secret", "127.0.0.1")).reply, SMTP_REFUSED);
  assert.match((await smtpAuth(nodeB!, "alice", "alice-secret", "127.0.0.2")).reply, /^235 /, "from another address alice still gets in");
});

test("SMTP AUTH: an address guessing names over A and B reaches its per-IP limit on both", async () => {
  for (let n = 0; n < IP_LIMIT; n++) assert.match((await smtpAuth(n % 2 === 0 ? nodeA! : nodeB!, `guess${n}`, "wrong", "127.0.0.3")).reply, /^535 /);
  await reportsSettled();
  assert.match((await smtpAuth(nodeB!, "guess-next", "wrong", "127.0.0.3")).reply, SMTP_REFUSED);
  assert.match((await smtpAuth(nodeA!, "guess-next", "wrong", "127.0.0.3")).reply, SMTP_REFUSED);
});

test("POP3: one account's failures from one address over A and B count once; past the limit both nodes refuse", async () => {
  const replies = [];
  for (const node of [nodeB!, nodeA!, nodeB!]) replies.push((await popLogin(node, "carol", "wrong", "127.0.0.4")).reply);
  assert.deepEqual(replies, Array(PAIR_LIMIT).fill(POP3_WRONG));
  await reportsSettled();
  assert.equal((await popLogin(nodeA!, "carol@local.test", "carol-secret", "127.0.0.4")).reply, POP3_REFUSED);
  assert.equal((await popLogin(nodeB!, "carol", "carol-secret", "127.0.0.4")).reply, POP3_REFUSED);
  assert.match((await popLogin(nodeB!, "carol", "carol-secret", "127.0.0.5")).reply, /^\+OK /, "from another address carol still gets in");
});

test("POP3: an address guessing names over A and B reaches its per-IP limit on both", async () => {
  for (let n = 0; n < IP_LIMIT; n++) assert.equal((await popLogin(n % 2 === 0 ? nodeB! : nodeA!, `guess${n}`, "wrong", "127.0.0.6")).reply, POP3_WRONG);
  await reportsSettled();
  assert.equal((await popLogin(nodeA!, "guess-next", "wrong", "127.0.0.6")).reply, POP3_REFUSED);
  assert.equal((await popLogin(nodeB!, "guess-next", "wrong", "127.0.0.6")).reply, POP3_REFUSED);
});

test("SMTP failures on A and POP3 failures on B add up to one account delay on both nodes; the right password still gets in", async () => {
  // Four guesses, each from its own address: two over SMTP on A, two over POP3 on B.
  for (let n = 0; n < 4; n++) {
    const source = `127.0.1.${n + 1}`;
    const attempt = n % 2 === 0 ? await smtpAuth(nodeA!, "dave", "guess", source) : await popLogin(nodeB!, "dave@local.test", "guess", source);
    assert.ok(attempt.ms < DELAY_MS, `guess ${n + 1} was not slowed: ${Math.round(attempt.ms)} ms`);
  }
  await reportsSettled();
  // Per node, each would have seen two failures: under the four that start the delay.
  const fifth = await smtpAuth(nodeB!, "dave", "guess", "127.0.1.5");
  assert.match(fifth.reply, /^535 /);
  assert.ok(fifth.ms >= DELAY_MS, `the fifth guess, on B over SMTP, waited ${Math.round(fifth.ms)} ms`);
  await reportsSettled();
  const real = await popLogin(nodeA!, "dave", "dave-secret", "127.0.1.6");
  assert.match(real.reply, /^\+OK /, "slowed, not locked out");
  assert.ok(real.ms >= 2 * DELAY_MS, `and waited the doubled delay on A (${Math.round(real.ms)} ms)`);
  await reportsSettled();
  const again = await smtpAuth(nodeB!, "dave", "dave-secret", "127.0.1.6");
  assert.match(again.reply, /^235 /);
  assert.ok(again.ms < DELAY_MS, `the address dave logged in from on A is known good on B: ${Math.round(again.ms)} ms`);
});
