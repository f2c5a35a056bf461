// kill -9 one of three nodes under steady load (issue 13, failure): the two others keep
// answering 250 within seconds and keep sending remote mail; mail they accept for users
// homed on the dead node stays queued (deferred, never bounced) and POP3 for those users
// answers [SYS/TEMP]; after a restart on the same data the dead node's own queue resumes
// and the deferred mail drains to it. Every message that got a 250 arrives exactly once
// (duplicates, which a kill -9 may cause, are counted and reported), none is lost.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import nodemailer from "nodemailer";
import { startDnsmasq, type RunningDnsmasq } from "../support/dnsmasq.ts";
import { startScriptedSmtp, type ScriptedServer } from "../support/scripted-smtp.ts";
import { poplibFetch } from "../support/pop3.ts";
import { eventually, makeDataDir, readMetric, removeDataDir, sleep, startTernNode, uniqueCluster, type TernNode } from "../support/tern-node.ts";

const NODES = ["a", "b", "c"] as const;
type NodeId = (typeof NODES)[number];
const RATE_PER_SEC = 20;
const LOAD_MS = 12_000;
const KILL_AT_MS = 5_000;
/** How long A and B may go without a 250 around C's death. */
const MAX_GAP_MS = 3_000;

const cluster = uniqueCluster();
const users = NODES.map((home) => ({ address: `user-${home}@example.test`, password: `pw-${home}`, home }));

let dns: RunningDnsmasq;
let sink: ScriptedServer;
const dirs = {} as Record<NodeId, string>;
const nodes = {} as Record<NodeId, TernNode>;
/** Every process C ran as: its first life's log still counts (no bounce, no DSN). */
const lives: TernNode[] = [];

const configOf = (id: NodeId) => ({
  nodeId: id,
  cluster,
  dataDir: dirs[id],
  localDomains: ["example.test"],
  users,
  dns: { servers: [`${dns.host}:${dns.port}`], timeoutMs: 1000, tries: 2, allowedTargetNetworks: ["127.0.0.0/8"] },
  delivery: { remotePort: sink.port, retryBaseMs: 200, retryMaxMs: 1000, pollMs: 50, connectTimeoutMs: 2000, holdMs: 200 },
});

const start = async (id: NodeId) => {
  nodes[id] = await startTernNode(configOf(id));
  lives.push(nodes[id]);
};

before(async () => {
  // A host that takes its time over each message: C dies with deliveries in flight and mail queued.
  sink = await startScriptedSmtp({ dataReplyDelayMs: 300 });
  dns = await startDnsmasq({ mx: [{ domain: "remote.test", host: "mx.remote.test", preference: 10 }], hosts: [{ name: "mx.remote.test", address: "127.0.0.1" }] });
  for (const id of NODES) dirs[id] = await makeDataDir();
  await Promise.all(NODES.map(start));
});

after(async () => {
  await Promise.all(lives.map((node) => node.kill("SIGKILL")));
  await sink?.close();
  await Promise.all([dns?.stop(), ...Object.values(dirs).map(removeDataDir)]);
});

type Recipient = { kind: "remote"; address: string } | { kind: "local"; home: NodeId; address: string };

interface Attempt {
  readonly n: number;
  readonly node: NodeId;
  readonly rcpt: Recipient;
  readonly startedAt: number;
  finishedAt?: number;
  /** Queue id from the 250, or undefined if the send failed. */
  id?: string;
  error?: string;
}

/** Round-robin over the nodes; recipients cycle remote, user-a, user-b, user-c (4 and 3 are coprime: every pair occurs). */
const recipientOf = (n: number): Recipient => {
  const slot = n % 4;
  if (slot === 0) return { kind: "remote", address: `r${n}@remote.test` };
  const home = NODES[slot - 1]!;
  return { kind: "local", home, address: `user-${home}@example.test` };
};

const tagOf = (n: number) => `load-${n}`;
const tagIn = (text: string) => /Subject: (load-\d+)/.exec(text)?.[1];

const send = async (attempt: Attempt): Promise<void> => {
  const transport = nodemailer.createTransport({
    host: "127.0.0.1",
    port: nodes[attempt.node].ports.smtp,
    secure: false,
    ignoreTLS: true,
    connectionTimeout: 10_000,
    greetingTimeout: 10_000,
    socketTimeout: 10_000,
  });
  try {
    const raw = `Subject: ${tagOf(attempt.n)}\r\nFrom: load@elsewhere.test\r\nTo: ${attempt.rcpt.address}\r\n\r\nmessage ${attempt.n} via ${attempt.node}\r\n`;
    const info = await transport.sendMail({ envelope: { from: "load@elsewhere.test", to: [attempt.rcpt.address] }, raw });
    attempt.id = /queued as ([0-9A-Za-z]+)/.exec(info.response)?.[1];
    if (!attempt.id) attempt.error = `no queue id in ${info.response}`;
  } catch (error) {
    attempt.error = String(error);
  } finally {
    attempt.finishedAt = Date.now();
    transport.close();
  }
};

/** The longest time `node` went without completing a 250, from the kill to the end of the load. */
const longestGap = (attempts: Attempt[], node: NodeId, from: number, to: number): number => {
  const times = attempts.filter((a) => a.node === node && a.id).map((a) => a.finishedAt!).filter((t) => t >= from).sort((x, y) => x - y);
  let previous = from;
  let gap = 0;
  for (const t of [...times, to]) {
    gap = Math.max(gap, t - previous);
    previous = t;
  }
  return gap;
};

const mailboxTags = async (via: NodeId, home: NodeId): Promise<string[]> => {
  const result = await poplibFetch(nodes[via].ports.pop3, `user-${home}@example.test`, `pw-${home}`);
  assert.ok("messages" in result, `POP3 for user-${home} on ${via}: ${JSON.stringify(result)}`);
  return result.messages.map((m) => tagIn(m.head) ?? "?");
};

const countsOf = (tags: Iterable<string>) => {
  const counts = new Map<string, number>();
  for (const tag of tags) counts.set(tag, (counts.get(tag) ?? 0) + 1);
  return counts;
};

test("kill -9 of one node of three under load: the others keep going, its mail waits, nothing is lost", { timeout: 120_000 }, async (t) => {
  // Steady load: one new SMTP transaction every 1000/RATE ms, not waiting for earlier ones,
  // so a stalled node shows as latency rather than slowing the load.
  const attempts: Attempt[] = [];
  const pending: Promise<void>[] = [];
  const loadStart = Date.now();
  let killedAt = 0;
  // Midway, C dies right after a 250 for remote mail: that message is in its queue (the
  // sink takes 300 ms over each), perhaps with others in flight.
  let killing: Promise<void> | undefined;
  const killAfter = (attempt: Attempt) => {
    if (killing || attempt.node !== "c" || attempt.rcpt.kind !== "remote" || !attempt.id || Date.now() - loadStart < KILL_AT_MS) return;
    killedAt = Date.now();
    killing = nodes.c.kill("SIGKILL");
  };
  for (let n = 0; Date.now() - loadStart < LOAD_MS; n++) {
    const attempt: Attempt = { n, node: NODES[n % 3]!, rcpt: recipientOf(n), startedAt: Date.now() };
    attempts.push(attempt);
    pending.push(send(attempt).then(() => killAfter(attempt)));
    await sleep(loadStart + ((n + 1) * 1000) / RATE_PER_SEC - Date.now());
  }
  await Promise.all(pending);
  assert.ok(killing, "C was never killed");
  await killing;
  const loadEnd = Date.now();

  const accepted = attempts.filter((a) => a.id !== undefined);
  const onSurvivors = attempts.filter((a) => a.node !== "c");
  const failedOnSurvivors = onSurvivors.filter((a) => a.id === undefined);
  assert.deepEqual(failedOnSurvivors.map((a) => `${a.n}@${a.node}: ${a.error}`), [], "A and B must answer 250 to every message");
  const gaps = { a: longestGap(attempts, "a", killedAt, loadEnd), b: longestGap(attempts, "b", killedAt, loadEnd) };
  const slowest = Math.max(...onSurvivors.map((a) => a.finishedAt! - a.startedAt));
  t.diagnostic(`${attempts.length} sends, ${accepted.length} got 250; C got ${accepted.filter((a) => a.node === "c").length} before its death`);
  t.diagnostic(`longest gap without a 250 after the kill: A ${gaps.a} ms, B ${gaps.b} ms; slowest transaction on A/B ${slowest} ms`);
  assert.ok(gaps.a < MAX_GAP_MS && gaps.b < MAX_GAP_MS, `gap ${JSON.stringify(gaps)} ms`);
  assert.ok(slowest < MAX_GAP_MS, `a transaction on A/B took ${slowest} ms`);
  assert.ok(attempts.some((a) => a.node === "c" && a.startedAt > killedAt + 100 && a.id === undefined), "C was really dead");

  // While C is down: remote mail A and B accepted after the kill reaches the sink.
  const sinkTags = () => countsOf(sink.accepted.map((m) => tagIn(m.body.toString("latin1")) ?? "?"));
  const remoteAfterKill = accepted.filter((a) => a.node !== "c" && a.rcpt.kind === "remote" && a.startedAt > killedAt);
  assert.ok(remoteAfterKill.length > 10);
  await eventually(() => (remoteAfterKill.every((a) => sinkTags().has(tagOf(a.n))) ? true : undefined), 15_000, "remote mail accepted by A/B after the kill at the sink");

  // Mail for user-c accepted by A/B after the kill is deferred (never failed), not delivered.
  const forCAfterKill = accepted.filter((a) => a.node !== "c" && a.rcpt.kind === "local" && a.rcpt.home === "c" && a.startedAt > killedAt);
  assert.ok(forCAfterKill.length > 5);
  for (const a of forCAfterKill) {
    const deferred = await nodes[a.node].waitForEvent("recipient.deferred", { queueId: a.id }, 10_000);
    assert.match(String(deferred.reply), /^4\.\d\.\d /);
    assert.equal(nodes[a.node].events("recipient.delivered").filter((e) => e.queueId === a.id).length, 0, `${a.id} delivered while C is down`);
  }
  // The mail others hold for C waits; mailboxes homed elsewhere stay readable.
  for (const via of ["a", "b"] as const) {
    const reply = await poplibFetch(nodes[via].ports.pop3, "user-c@example.test", "pw-c");
    assert.ok("error" in reply, `POP3 for user-c on ${via} succeeded with C down`);
    assert.match(reply.error, /^-ERR \[SYS\/TEMP\] /);
    await mailboxTags(via, via);
  }

  // What C had accepted but not yet delivered when it died: its queue, waiting for it.
  const firstLife = nodes.c;
  const deliveredByC = new Set(firstLife.events("recipient.delivered").map((e) => e.queueId));
  const queuedAtDeath = accepted.filter((a) => a.node === "c" && !deliveredByC.has(a.id));
  assert.ok(queuedAtDeath.length > 0, "C died with an empty queue: the test proves nothing about its resumption");

  // Restart C on the same data: its queue resumes, the deferred mail drains to it.
  const restartedAt = Date.now();
  await start("c");
  for (const a of queuedAtDeath) await nodes.c.waitForEvent("recipient.delivered", { queueId: a.id }, 20_000);
  const expectedAt = (a: Attempt): "sink" | NodeId => (a.rcpt.kind === "remote" ? "sink" : a.rcpt.home);
  const arrivals = async () => {
    const at = { sink: sinkTags() } as Record<"sink" | NodeId, Map<string, number>>;
    for (const home of NODES) at[home] = countsOf(await mailboxTags(home, home));
    return at;
  };
  const final = await eventually(async () => {
    const at = await arrivals();
    return accepted.every((a) => at[expectedAt(a)].has(tagOf(a.n))) ? at : undefined;
  }, 30_000, "every accepted message delivered");
  t.diagnostic(`C died with ${queuedAtDeath.length} messages queued; everything delivered ${Date.now() - restartedAt} ms after C's restart began`);

  // Exactly once where it belongs, nowhere else; duplicates counted.
  const acceptedTags = new Set(accepted.map((a) => tagOf(a.n)));
  let duplicates = 0;
  for (const a of accepted) {
    const where = expectedAt(a);
    duplicates += final[where].get(tagOf(a.n))! - 1;
    for (const other of ["sink", ...NODES] as const) {
      if (other !== where) assert.ok(!final[other].has(tagOf(a.n)), `${tagOf(a.n)} for ${a.rcpt.address} also arrived at ${other}`);
    }
  }
  const strays = [...Object.values(final)].flatMap((counts) => [...counts.keys()].filter((tag) => !acceptedTags.has(tag)));
  t.diagnostic(`${accepted.length} accepted, 0 lost, ${duplicates} duplicate deliveries, ${strays.length} deliveries of messages that got no 250`);
  // A kill -9 may repeat only what was in flight at C when it died.
  assert.ok(duplicates <= 5, `${duplicates} duplicates`);

  // Nothing bounced, no DSN, on any node in any life; every queue drained.
  for (const node of lives) {
    assert.deepEqual(node.events("recipient.failed"), []);
    assert.deepEqual(node.events("recipient.expired"), []);
    assert.deepEqual(node.events("dsn.queued"), []);
  }
  for (const id of NODES) {
    await eventually(async () => ((await readMetric(nodes[id], "tern_queue_depth")) === 0 ? true : undefined), 10_000, `${id}'s queue to drain`);
  }
});
