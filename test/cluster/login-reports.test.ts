// Login reports over the shared NATS (a unique cluster per run): what one node's throttle
// counts reaches a peer's throttle, a node skips its own echoed reports, malformed ones
// are dropped, and with NATS away a login is not held up: the report is counted unsent.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { connect, type NatsConnection, type Subscription } from "@nats-io/transport-node";
import { Clock, Effect } from "effect";
import { followLoginReports, publishLoginEvents, type LoginReportOutcome, type LoginReportsLink } from "../../cluster/login-reports.ts";
import { defaultAccountDelay, loginAccountsOn, makeLoginThrottle, type LoginAccounts, type LoginThrottle } from "../../actors/users/login-throttle.ts";
import { makeSubjects } from "../../protocol/subjects.ts";
import { encodeFrame } from "../../protocol/wire.ts";
import { eventually, uniqueCluster } from "../support/tern-node.ts";

const subjects = makeSubjects(uniqueCluster());
const limits = { windowMs: 60_000, maxFailuresPerIp: 100, maxFailuresPerAccountAndIp: 2 };
const users: Record<string, string> = { alice: "alice@local.test" };

interface TestNode {
  readonly accounts: LoginAccounts;
  readonly smtp: LoginThrottle;
  readonly outcomes: LoginReportOutcome[];
  readonly subscription: Subscription;
  connected: boolean;
}

let nc: NatsConnection;
let a: TestNode;
let b: TestNode;

const startNode = (node: string): TestNode => {
  const clock = Effect.runSync(Clock.clockWith(Effect.succeed));
  const accounts = loginAccountsOn(clock, (login) => users[login], { ...defaultAccountDelay, afterFailures: 1 });
  const outcomes: LoginReportOutcome[] = [];
  const self = { connected: true } as TestNode & { connected: boolean };
  const link: LoginReportsLink = { nc, subject: subjects.loginReports, node, connected: () => self.connected, observe: (outcome) => outcomes.push(outcome) };
  const smtp = makeLoginThrottle(accounts, limits, { report: publishLoginEvents(link, "smtp") });
  return Object.assign(self, { accounts, smtp, outcomes, subscription: followLoginReports(link, new Map([["smtp", smtp]]), accounts) });
};

before(async () => {
  nc = await connect({ servers: ["nats://127.0.0.1:4222"], name: "tern-test-login-reports" });
  a = startNode("a");
  b = startNode("b");
});

after(async () => {
  await nc.close();
});

const count = (node: TestNode, outcome: LoginReportOutcome) => node.outcomes.filter((o) => o === outcome).length;

test("a failure counted on one node is merged on the other, and not again on the node that counted it", async () => {
  assert.equal(a.smtp.check("alice", "198.51.100.1")._tag, "Allowed");
  await eventually(() => (count(b, "merged") === 1 ? true : undefined), 5_000, "merged on b");
  await nc.flush();
  assert.equal(count(a, "merged"), 0, "its own echo is skipped");
  assert.equal(b.accounts.delayFor(b.accounts.accountOf("alice"), "203.0.113.1"), 1_000, "b slows alice after a's failure");
  assert.equal(b.smtp.check("alice", "198.51.100.1")._tag, "Allowed");
  await eventually(() => (count(a, "merged") === 1 ? true : undefined), 5_000, "merged on a");
  assert.deepEqual(a.smtp.check("alice", "198.51.100.1"), { _tag: "Refused", limit: "account-ip", account: "alice@local.test" });
});

test("a malformed report is dropped and counted", async () => {
  const before = count(b, "merged");
  nc.publish(subjects.loginReports, encodeFrame({ _tag: "LoginFailed", node: "x", protocol: "smtp", account: "alice@local.test", ip: "10.0.0.1" })); // no `exists`
  nc.publish(subjects.loginReports, new TextEncoder().encode("not a frame"));
  await eventually(() => (count(b, "malformed") === 2 ? true : undefined), 5_000, "malformed on b");
  assert.equal(count(b, "merged"), before);
});

test("without NATS the login goes on: the report is counted unsent, not buffered", async () => {
  a.connected = false;
  const published = count(a, "published");
  assert.equal(a.smtp.check("alice", "198.51.100.9")._tag, "Allowed");
  assert.equal(count(a, "unsent"), 1);
  assert.equal(count(a, "published"), published);
  a.connected = true;
});
