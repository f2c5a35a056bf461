import { test } from "node:test";
import assert from "node:assert/strict";
import { membershipChanges, type MemberRecord } from "../../protocol/membership.ts";

const member = (node: string, startedAt = 1): MemberRecord => ({
  node,
  version: "0.1.0",
  startedAt,
  heartbeatAt: startedAt,
  ready: true,
  problems: [],
  queueDepth: 0,
  outboundConnections: 0,
  host: "127.0.0.1",
  ports: { smtp: 1, smtps: 2, pop3: 3, http: 4 },
});

const byNode = (...members: MemberRecord[]) => new Map(members.map((m) => [m.node, m]));
const summary = (changes: ReturnType<typeof membershipChanges>) =>
  changes.map((c) => (c._tag === "Joined" ? `+${c.member.node}` : `-${c.member.node}:${c.reason}`));

test("a new key is a join; nothing changes for members still there", () => {
  assert.deepEqual(summary(membershipChanges(byNode(member("a")), byNode(member("a"), member("b")), new Set())), ["+b"]);
});

test("a key deleted is a graceful leave; a key gone without a marker expired", () => {
  const before = byNode(member("a"), member("b"), member("c"));
  assert.deepEqual(summary(membershipChanges(before, byNode(member("a")), new Set(["b"]))), ["-b:left", "-c:expired"]);
});

test("a node that restarted under the same id within the TTL left (expired) and joined again", () => {
  assert.deepEqual(summary(membershipChanges(byNode(member("a", 1)), byNode(member("a", 2)), new Set())), ["-a:expired", "+a"]);
});
