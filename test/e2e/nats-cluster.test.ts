// A node on a three-server NATS cluster of the test's own, with everything it creates in
// JetStream on 3 replicas: under steady SMTP load (relay through dnsmasq to a sink, and
// local mailbox delivery) the NATS server the node is connected to is killed with SIGKILL.
// Every message that got 250 arrives (at the sink, or in the mailbox over POP3), every
// accepted and delivered event is in the stream afterwards, and the longest pause in
// accepted and in delivered traffic is measured and bounded.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import nodemailer from "nodemailer";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { AckPolicy, DeliverPolicy, jetstream, jetstreamManager } from "@nats-io/jetstream";
import { makeSubjects } from "../../protocol/subjects.ts";
import { startDnsmasq, type RunningDnsmasq } from "../support/dnsmasq.ts";
import { startNatsCluster, type TestNatsCluster } from "../support/nats-cluster.ts";
import { startSink, type Sink } from "../support/sink.ts";
import { eventually, makeDataDir, removeDataDir, run, sleep, startTernNode, uniqueCluster, type TernNode } from "../support/tern-node.ts";

const cluster = uniqueCluster();
const subjects = makeSubjects(cluster);
/** Messages sent in all, by SENDERS connections at once, one every PACE_MS on each. */
const MESSAGES = 300;
const SENDERS = 4;
const PACE_MS = 100;
/** The NATS server goes down once this many messages were accepted. */
const KILL_AFTER = 100;
/** "Stalls traffic at most a few seconds", with room for a loaded 2-core machine. */
const MAX_STALL_MS = 15_000;

let nats: TestNatsCluster;
let dns: RunningDnsmasq;
let sink: Sink;
let node: TernNode;
let dataDir: string;
let observer: NatsConnection;

before(async () => {
  [nats, dns, sink, dataDir] = await Promise.all([
    startNatsCluster(),
    startDnsmasq({ mx: [{ domain: "relay.test", host: "mx.relay.test", preference: 10 }], hosts: [{ name: "mx.relay.test", address: "127.0.0.1" }] }),
    startSink(),
    makeDataDir(),
  ]);
  node = await startTernNode({
    nodeId: "n1",
    cluster,
    dataDir,
    nats: { servers: nats.urls, embedded: false, replicas: 3 },
    localDomains: ["example.test"],
    users: [{ address: "bob@example.test", password: "pw" }],
    trustedNetworks: ["127.0.0.0/8"],
    dns: { servers: [`${dns.host}:${dns.port}`], timeoutMs: 1000, tries: 2, allowedTargetNetworks: ["127.0.0.0/8"] },
    delivery: { remotePort: sink.port, retryBaseMs: 200, retryMaxMs: 1000, pollMs: 50, connectTimeoutMs: 2000 },
    mailbox: { askTimeoutMs: 2_000 },
  });
  observer = await connect({ servers: [...nats.urls] });
});

after(async () => {
  await node?.kill("SIGTERM");
  await observer?.close();
  await Promise.all([nats?.dispose(), dns?.stop(), sink?.close()]);
  if (dataDir) await removeDataDir(dataDir);
});

type Sent = { readonly queueId: string; readonly to: string; readonly at: number };

/** Sends MESSAGES messages, half to the sink and half to bob's mailbox; calls `onAccepted` after each 250. */
const sendLoad = async (onAccepted: (count: number) => void) => {
  const accepted: Sent[] = [];
  const refused: string[] = [];
  let next = 0;
  const sender = async () => {
    const transport = nodemailer.createTransport({ host: "127.0.0.1", port: node.ports.smtp, secure: false, ignoreTLS: true, pool: true, maxConnections: 1 });
    try {
      for (let n = next++; n < MESSAGES; n = next++) {
        const to = n % 2 === 0 ? `r${n}@relay.test` : "bob@example.test";
        const raw = `From: load@elsewhere.test\r\nTo: ${to}\r\nSubject: load ${n}\r\n\r\nmessage ${n}\r\n`;
        const sentAt = Date.now();
        try {
          const info = await transport.sendMail({ envelope: { from: "load@elsewhere.test", to: [to] }, raw });
          const queueId = /queued as ([0-9A-Z]+)/.exec(info.response)?.[1];
          assert.ok(queueId, `no queue id in ${info.response}`);
          accepted.push({ queueId, to, at: Date.now() });
          onAccepted(accepted.length);
        } catch (error) {
          // A refusal (4xx) is allowed: the client keeps the message. Only a 250 is a promise.
          refused.push(`${n}: ${error instanceof Error ? error.message : String(error)}`);
        }
        await sleep(Math.max(0, PACE_MS - (Date.now() - sentAt)));
      }
    } finally {
      transport.close();
    }
  };
  await Promise.all(Array.from({ length: SENDERS }, sender));
  return { accepted, refused };
};

/** The server the node is connected to now: the last of its nats.connected / nats.reconnected lines. */
const currentServer = () => {
  const lines = [...node.events("nats.connected"), ...node.events("nats.reconnected")].sort((a, b) => String(a.time).localeCompare(String(b.time)));
  const server = nats.serverAt(String(lines.at(-1)?.server));
  assert.ok(server, `no NATS server of the cluster in the node's log: ${JSON.stringify(lines)}`);
  return server;
};

/** The longest pause between consecutive times (ms) inside [from, to]. */
const longestGap = (times: ReadonlyArray<number>, from: number, to: number) => {
  const sorted = [from, ...times.filter((t) => t >= from && t <= to), to].sort((a, b) => a - b);
  return Math.max(...sorted.slice(1).map((t, i) => t - sorted[i]!));
};

/** The queue ids in bob's mailbox, read over POP3 (the Received header names each). */
const mailboxQueueIds = async () => {
  const script = `
import poplib, json, re
p = poplib.POP3("127.0.0.1", ${node.ports.pop3}, timeout=20)
p.user("bob@example.test"); p.pass_("pw")
count, size = p.stat()
ids = []
for n in range(1, count + 1):
    resp, lines, octets = p.top(n, 0)
    m = re.search(r"\\(Tern\\) with ESMTP id ([0-9A-Z]+)", " ".join(l.decode("latin-1") for l in lines))
    ids.append(m.group(1) if m else "")
print(json.dumps(ids))
p.quit()
`;
  const result = await run("python3", ["-c", script]);
  assert.equal(result.code, 0, result.stderr);
  return JSON.parse(result.stdout) as string[];
};

/** Every event in the cluster's stream, read with a consumer of the test's own. */
const streamEvents = async () => {
  const jsm = await jetstreamManager(observer);
  const { state } = await jsm.streams.info(subjects.eventsStream);
  const name = `check-${Date.now()}`;
  await jsm.consumers.add(subjects.eventsStream, { name, ack_policy: AckPolicy.None, deliver_policy: DeliverPolicy.All, inactive_threshold: 60_000_000_000 });
  const consumer = await jetstream(observer).consumers.get(subjects.eventsStream, name);
  const events: Array<{ id: string; type: string; msg: string }> = [];
  while (events.length < state.messages) {
    const batch = await consumer.fetch({ max_messages: 500, expires: 2_000 });
    let got = 0;
    for await (const message of batch) {
      events.push(message.json());
      got++;
    }
    if (got === 0) break;
  }
  return events;
};

test("the node's KV bucket and events stream are created with 3 replicas", async () => {
  const jsm = await jetstreamManager(observer);
  for (const stream of [`KV_${subjects.mailboxOwnersBucket}`, subjects.eventsStream]) {
    // A new replicated stream elects its leader in a moment.
    const info = await eventually(async () => {
      const found = await jsm.streams.info(stream).catch(() => undefined);
      return found?.cluster?.leader ? found : undefined;
    }, 10_000, `${stream} with a leader`);
    assert.equal(info.config.num_replicas, 3, stream);
    assert.equal(new Set([info.cluster?.leader, ...(info.cluster?.replicas ?? []).map((peer) => peer.name)]).size, 3, `${stream} is on three servers`);
  }
});

/**
 * Moves the stream's leader to `server` (a step-down elects a random follower; repeated
 * until it lands there): the kill then takes the node's link and the leaders at once.
 */
const leadOn = async (stream: string, server: string) => {
  const jsm = await jetstreamManager(observer);
  for (let tries = 0; tries < 20; tries++) {
    const leader = (await jsm.streams.info(stream)).cluster?.leader;
    if (leader === server) return;
    // The old leader may step down before its reply is sent: the change of leader is what counts.
    await observer.request(`$JS.API.STREAM.LEADER.STEPDOWN.${stream}`, "", { timeout: 2_000 }).catch(() => undefined);
    await eventually(async () => {
      const now = (await jsm.streams.info(stream).catch(() => undefined))?.cluster?.leader;
      return now !== undefined && now !== leader ? true : undefined;
    }, 10_000, `a new leader of ${stream}`);
  }
  assert.fail(`the leader of ${stream} never moved to ${server}`);
};

test("killing the NATS server the node is connected to under load loses nothing and stalls traffic a few seconds at most", async () => {
  let killedAt = 0;
  let killing: Promise<void> | undefined;
  const killed = currentServer();
  for (const stream of [`KV_${subjects.mailboxOwnersBucket}`, subjects.eventsStream]) await leadOn(stream, killed.name);
  const started = Date.now();
  const { accepted, refused } = await sendLoad((count) => {
    if (count === KILL_AFTER && killing === undefined) {
      killedAt = Date.now();
      killing = killed.kill();
    }
  });
  await killing;
  const loadEnded = Date.now();
  assert.ok(killedAt > 0, "the server was killed during the load");
  assert.notEqual(currentServer().name, killed.name, "the node moved to another NATS server");

  // Nothing that got 250 is lost: the relayed ones reach the sink, the local ones bob's mailbox.
  const relayed = accepted.filter((sent) => sent.to.endsWith("@relay.test"));
  const local = accepted.filter((sent) => sent.to === "bob@example.test");
  const carries = (queueId: string) => new RegExp(`\\(Tern\\) with ESMTP id ${queueId}[;\\r]`);
  await eventually(() => (relayed.every((sent) => sent.to && sink.received.some((m) => m.to.includes(sent.to) && carries(sent.queueId).test(m.body.toString("latin1")))) ? true : undefined), 30_000, "every relayed message at the sink");
  const inMailbox = await eventually(async () => {
    const ids = await mailboxQueueIds();
    return local.every((sent) => ids.includes(sent.queueId)) ? ids : undefined;
  }, 30_000, "every local message in bob's mailbox");

  // Every accepted message has its accepted and delivered events in the stream, none twice.
  // Events wait for the stream's new leader (seconds; longer on a loaded machine) and the
  // publisher's next retry: how long they take is logged, not bounded here.
  let lastRead = "no read of the stream succeeded";
  const events = await eventually(async () => {
    // The test's own connection may be moving off the killed server too: a failed read is tried again.
    const all = await streamEvents().catch((error: unknown) => void (lastRead = `the last read failed: ${String(error)}`));
    if (all === undefined) return undefined;
    const ofType = (type: string) => new Set(all.filter((e) => e.type === type).map((e) => e.msg));
    const [acceptedEvents, deliveredEvents] = [ofType("accepted"), ofType("delivered")];
    const missing = (events: Set<string>) => accepted.filter((sent) => !events.has(sent.queueId)).length;
    lastRead = `the last read had ${all.length} events: ${missing(acceptedEvents)} accepted and ${missing(deliveredEvents)} delivered missing`;
    return missing(acceptedEvents) + missing(deliveredEvents) === 0 ? all : undefined;
  }, 60_000, "every message's accepted and delivered events in the stream").catch((error: unknown) => {
    // Says what was missing and what the node's publisher logged (stalls, resumptions), for a run that fails.
    const publisher = [...node.events("events.publish.stalled"), ...node.events("events.publish.resumed")];
    throw new Error(`${String(error)}; ${lastRead}; the node's publisher: ${JSON.stringify(publisher)}`);
  });
  console.log(`# events complete ${Date.now() - loadEnded} ms after the load; publisher: ${JSON.stringify([...node.events("events.publish.stalled"), ...node.events("events.publish.resumed")])}`);
  assert.equal(new Set(events.map((e) => e.id)).size, events.length, "no event stored twice");

  // The longest pause in accepted and in delivered traffic, from the kill to the end of the load.
  const acceptedStall = longestGap(accepted.map((sent) => sent.at), killedAt, loadEnded);
  const deliveredTimes = node.events("recipient.delivered").map((line) => Date.parse(String(line.time)));
  const deliveredStall = longestGap(deliveredTimes, killedAt, loadEnded);
  const duplicates = inMailbox.length - new Set(inMailbox).size + sink.received.length - new Set(sink.received.map((m) => m.body.toString("latin1"))).size;
  console.log(
    `# NATS server ${killed.name} killed after ${killedAt - started} ms; ${accepted.length} accepted, ${refused.length} refused, ` +
      `longest pause: accepted ${acceptedStall} ms, delivered ${deliveredStall} ms; duplicates ${duplicates}` +
      (refused.length > 0 ? `; refusals: ${refused.slice(0, 3).join(" | ")}` : ""),
  );
  assert.ok(accepted.length >= MESSAGES * 0.9, `most messages accepted (${accepted.length}/${MESSAGES}): ${refused.slice(0, 3).join(" | ")}`);
  assert.ok(acceptedStall < MAX_STALL_MS, `accepting paused ${acceptedStall} ms`);
  assert.ok(deliveredStall < MAX_STALL_MS, `delivering paused ${deliveredStall} ms`);

  // The killed server comes back and catches up; the streams keep their 3 replicas.
  await killed.restart();
  const jsm = await jetstreamManager(observer);
  // Right after the restart the cluster may still be catching up: a timed-out read is tried again.
  const info = await eventually(() => jsm.streams.info(`KV_${subjects.mailboxOwnersBucket}`).catch(() => undefined), 15_000, "the bucket after the restart");
  assert.equal(info.config.num_replicas, 3);
});
