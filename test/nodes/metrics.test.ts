// What a Prometheus server scrapes from a real node: `promtool check metrics` finds nothing
// to say about the whole output, before and after mail flowed; no series carries a `node`
// label; the counters dashboards and alerts read are there at zero from the start; the
// queue gauge stays bounded to the largest destinations; and the HTTP endpoint can listen
// on an address of its own.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { destinationOf, topDestinations } from "../../nodes/metrics.ts";
import { eventually, makeDataDir, removeDataDir, run, startTernNode, uniqueCluster, type TernNode } from "../support/tern-node.ts";

// The HTTP endpoint on an address of its own (http.listen), apart from the mail listeners on 127.0.0.1.
const HTTP_HOST = "127.0.0.2";

let node: TernNode;
let dataDir: string;

before(async () => {
  dataDir = await makeDataDir();
  node = await startTernNode({
    nodeId: "metrics",
    cluster: uniqueCluster(),
    dataDir,
    localDomains: ["example.test"],
    users: [{ address: "alice@example.test", password: "alice-pw" }],
    trustedNetworks: ["192.0.2.0/24"], // loopback may not relay: one rejection to count
    http: { listen: `${HTTP_HOST}:0` },
  });
});

after(async () => {
  await node?.kill("SIGTERM");
  await removeDataDir(dataDir);
});

const scrape = async () => {
  const response = await fetch(`http://${HTTP_HOST}:${node.ports.http}/metrics`);
  assert.equal(response.status, 200);
  return response.text();
};

/** The value of the series written exactly so (name and labels as the node prints them). */
const value = (text: string, series: string): number | undefined => {
  const line = text.split("\n").find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
};

const promtoolCheck = async (text: string) => {
  const result = await run("promtool", ["check", "metrics"], text);
  assert.deepEqual({ code: result.code, output: result.stdout + result.stderr }, { code: 0, output: "" }, "promtool check metrics found problems");
};

test("the HTTP endpoint listens on http.listen, not on the mail listeners' address", async () => {
  assert.equal((await fetch(`http://${HTTP_HOST}:${node.ports.http}/healthz`)).status, 200);
  await assert.rejects(fetch(`http://127.0.0.1:${node.ports.http}/healthz`), "nothing answers on listen.host at that port");
});

test("at start: promtool finds the output clean, no series names the node, and the counters are there at zero", async () => {
  const text = await scrape();
  await promtoolCheck(text);
  assert.doesNotMatch(text, /[{,]node="/, "no hand-made node label (Prometheus adds instance)");
  assert.match(text, /^tern_build_info\{version="\d+\.\d+\.\d+[^"]*",commit="[^"]+",node_version="\d+\.\d+\.\d+",tern_node="metrics"\} 1$/m);
  for (const series of [
    "tern_messages_accepted_total",
    'tern_recipients_delivered_total{route="remote"}',
    'tern_recipients_deferred_total{route="remote",category="other"}',
    'tern_recipients_failed_total{route="remote",category="other"}',
    'tern_smtp_connections_opened_total{listener="smtp"}',
    'tern_smtp_connections_refused_total{listener="smtps",reason="cap"}',
    'tern_pop3_connections_opened_total{listener="pop3"}',
    'tern_imap_connections{listener="imap"}',
    "tern_message_size_bytes_count",
    'tern_delivery_duration_seconds_count{outcome="deferred"}',
    'tern_spool_commit_duration_seconds_count{operation="accept"}',
    'tern_queue_depth{destination="other"}',
    "tern_queue_oldest_age_seconds",
    "tern_events_outbox_entries",
  ]) {
    assert.equal(value(text, series), 0, `${series} is 0 from the start`);
  }
  assert.ok((value(text, "tern_spool_disk_free_bytes") ?? 0) > 0);
  assert.ok((value(text, "tern_spool_disk_size_bytes") ?? 0) >= (value(text, "tern_spool_disk_free_bytes") ?? 0));
});

test("after mail flowed: the new series are counted and promtool still finds nothing", async () => {
  const swaks = (args: string[]) => run("swaks", ["--server", `127.0.0.1:${node.ports.smtp}`, "--hide-informational", "--from", "sender@elsewhere.test", ...args]);
  const sent = await swaks(["--to", "alice@example.test", "--body", `${"x".repeat(70)}\n`.repeat(75)]); // over 5,000 bytes
  assert.equal(sent.code, 0, sent.stdout + sent.stderr);
  const queueId = /queued as ([0-9A-Z]+)/.exec(sent.stdout)![1]!;
  assert.equal((await swaks(["--to", "someone@elsewhere.test", "--quit-after", "RCPT"])).code, 24, "relay refused");
  await node.waitForEvent("recipient.delivered", { queueId });

  const text = await eventually(async () => {
    const current = await scrape();
    return value(current, 'tern_delivery_duration_seconds_count{outcome="delivered"}') === 1 ? current : undefined;
  }, 10_000, "the attempt observed");
  await promtoolCheck(text);
  assert.equal(value(text, "tern_messages_accepted_total"), 1);
  assert.equal(value(text, "tern_message_size_bytes_count"), 1);
  assert.equal(value(text, 'tern_message_size_bytes_bucket{le="4096"}'), 0, "over 5,000 bytes");
  assert.equal(value(text, 'tern_message_size_bytes_bucket{le="16384"}'), 1);
  assert.equal(value(text, 'tern_recipients_delivered_total{route="local"}'), 1);
  assert.equal(value(text, 'tern_smtp_rejections_total{reason="relay-denied"}'), 1);
  assert.equal(value(text, 'tern_smtp_connections_opened_total{listener="smtp"}'), 2);
  assert.ok((value(text, 'tern_spool_commit_duration_seconds_count{operation="accept"}') ?? 0) >= 1);
  assert.ok((value(text, 'tern_spool_commit_duration_seconds_count{operation="settle"}') ?? 0) >= 1);
  assert.equal(value(text, 'tern_queue_depth{destination="other"}'), 0);
  assert.doesNotMatch(text, /[{,]node="/);
});

test("queue depth by destination: the largest by name, the mailboxes as one, the rest summed as other", () => {
  assert.equal(destinationOf("example.com"), "example.com");
  assert.equal(destinationOf("local:alice@example.test"), "local");
  const depths: Array<[string, number]> = [
    ["small.test", 1],
    ["big.test", 50],
    ["local:alice@example.test", 7],
    ["local:bob@example.test", 8],
    ["mid-b.test", 10],
    ["mid-a.test", 10],
    ["tiny.test", 2],
  ];
  assert.deepEqual(topDestinations(depths, 3), {
    top: [["big.test", 50], ["local", 15], ["mid-a.test", 10]],
    other: 10 + 2 + 1,
  });
  assert.deepEqual(topDestinations(depths, 10).top.length, 6);
  assert.deepEqual(topDestinations(depths, 10).other, 0);
  assert.deepEqual(topDestinations([], 10), { top: [], other: 0 });
  // A million entries over many domains costs one pass, whatever the order.
  const many = Array.from({ length: 20_000 }, (_, n): [string, number] => [`d${n}.test`, n % 997]);
  const { top, other } = topDestinations(many, 10);
  assert.equal(top.length, 10);
  assert.deepEqual(top.map(([, entries]) => entries), Array(10).fill(996));
  assert.equal(other + top.reduce((sum, [, entries]) => sum + entries, 0), many.reduce((sum, [, entries]) => sum + entries, 0));
});
