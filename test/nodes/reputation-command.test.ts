// `tern reputation` on its own: two nodes' figures summed per key (rates from the sums),
// holds listed per node, the table people read, and bad usage refused before connecting.
import { test } from "node:test";
import assert from "node:assert/strict";
import { reputationCommand, render, summarize } from "../../nodes/reputation-command.ts";
import type { ReputationReply } from "../../protocol/reputation.ts";

const at = Date.UTC(2026, 0, 1, 12);

const a: ReputationReply = {
  node: "a",
  at,
  window: "1h",
  figures: [
    { dimension: "source", key: "192.0.2.10", delivered: 30, bounced: 10, deferred: 10, complained: 0, bounces: { "bad-mailbox": 8, policy: 2 } },
    { dimension: "sender_domain", key: "news.example", delivered: 30, bounced: 10, deferred: 10, complained: 1, bounces: { "bad-mailbox": 8, policy: 2 } },
    { dimension: "provider", key: "gmail", delivered: 30, bounced: 10, deferred: 10, complained: 0, bounces: { "bad-mailbox": 8, policy: 2 } },
  ],
  actions: [{ dimension: "sender_domain", key: "news.example", rule: "domain-bounces", window: "1h", action: "pause", since: at - 60_000, pausedUntil: at + 1_740_000, kind: "bounce", rate: 0.25, limit: 0.2, messages: 40 }],
};
const b: ReputationReply = {
  node: "b",
  at,
  window: "1h",
  figures: [
    { dimension: "sender_domain", key: "news.example", delivered: 50, bounced: 0, deferred: 0, complained: 0, bounces: {} },
    { dimension: "provider", key: "gmail", delivered: 50, bounced: 0, deferred: 0, complained: 0, bounces: {} },
    { dimension: "provider", key: "other", delivered: 1, bounced: 1, deferred: 0, complained: 0, bounces: { quota: 1 } },
  ],
  actions: [],
};

test("figures are summed per key over the nodes, and the rates come from the sums", () => {
  const summary = summarize("1h", [b, a]);
  assert.deepEqual(summary.nodes, ["a", "b"]);
  assert.deepEqual(
    summary.figures.map((f) => [f.dimension, f.key, f.messages, f.delivered, f.bounced, f.deferred, f.complained, f.bounceRate, f.complaintRate, f.deferralRate]),
    [
      ["source", "192.0.2.10", 40, 30, 10, 10, 0, 0.25, 0, 0.2],
      ["sender_domain", "news.example", 90, 80, 10, 10, 1, 1 / 9, 1 / 80, 0.1],
      ["provider", "gmail", 90, 80, 10, 10, 0, 1 / 9, 0, 0.1],
      ["provider", "other", 2, 1, 1, 0, 0, 0.5, 0, 0],
    ],
  );
  assert.deepEqual(summary.figures[1]!.bounces, { "bad-mailbox": 8, policy: 2 });
  assert.deepEqual(summary.actions.map((x) => [x.node, x.key, x.action]), [["a", "news.example", "pause"]]);
});

test("the table: one block per dimension, bounces by category under each key, holds per node", () => {
  const text = render(summarize("1h", [a, b]));
  assert.equal(
    text,
    [
      "last 1h, summed over 2 nodes (a, b)",
      "  source address  messages  delivered  bounced  deferred  complaints  bounce  complaint  deferral",
      "  192.0.2.10            40         30       10        10           0   25.0%      0.00%     20.0%",
      "      bounced: bad-mailbox 8, policy 2",
      "  sender domain  messages  delivered  bounced  deferred  complaints  bounce  complaint  deferral",
      "  news.example         90         80       10        10           1   11.1%      1.25%     10.0%",
      "      bounced: bad-mailbox 8, policy 2",
      "  provider  messages  delivered  bounced  deferred  complaints  bounce  complaint  deferral",
      "  gmail           90         80       10        10           0   11.1%      0.00%     10.0%",
      "      bounced: bad-mailbox 8, policy 2",
      "  other            2          1        1         0           0   50.0%      0.00%      0.0%",
      "      bounced: quota 1",
      "held now:",
      "  node a: sender domain news.example paused until 2026-01-01T12:29:00Z since 2026-01-01T11:59:00Z by domain-bounces (bounce rate 25.0% ≥ 20.0% over 40 messages in 1h)",
    ].join("\n"),
  );
  assert.match(render(summarize("24h", [b]), "source"), /^last 24h, summed over 1 node \(b\)\n {2}source address: nothing sent\nheld now: nothing$/);
});

test("bad usage is refused before connecting (exit 2)", async () => {
  for (const args of [["--window", "7d"], ["--by", "tenant"], ["--timeout", "soon"], ["extra"]]) {
    let err = "";
    const code = await reputationCommand(args, { out: () => undefined, err: (t) => (err += t) });
    assert.equal(code, 2, args.join(" "));
    assert.match(err, /^tern: .*\nusage: tern reputation/);
  }
});
