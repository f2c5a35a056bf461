// Reading events on a locked-down NATS (the documented permissions): a node creates the
// events stream and publishes to it under the node user; an application user of tenant
// acme reads acme's events and nothing else, whatever filter it asks for or forges; the
// operator reads every tenant's. A tenant's application never needs STREAM.INFO (whose
// per-subject counts would name other tenants) and is refused it, yet reads its events
// from a sequence, from a time and as they come, with `followEvents` and `tern events --app`.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { followEvents, type FollowOptions } from "../../cluster/events-client.ts";
import { makeSubjects } from "../../protocol/subjects.ts";
import { makeDataDir, projectRoot, removeDataDir, run, startTernNode, uniqueCluster, type TernNode, ternCli } from "../support/tern-node.ts";
import { startSecureNats, type SecureNats } from "../support/secure-nats.ts";

const cluster = uniqueCluster();
const subjects = makeSubjects(cluster);
let nats: SecureNats;
let node: TernNode | undefined;
let dataDir: string;
const clients: NatsConnection[] = [];
const sent: Record<string, string> = {};

const read = async (nc: NatsConnection, tenant?: string, options: Partial<FollowOptions> = {}) => {
  const found: Array<{ seq: number; tenant: string; msg: string; type: string }> = [];
  for await (const { seq, event } of followEvents(nc, { cluster, tenant, timeoutMs: 2_000, ...options })) found.push({ seq, tenant: event.tenant, msg: event.msg ?? "", type: event.type });
  return found;
};

const sendFrom = async (from: string) => {
  const out = await run("swaks", ["--server", `127.0.0.1:${node!.ports.smtp}`, "--from", from, "--to", "bob@example.test", "--silent", "2"]);
  assert.equal(out.code, 0, out.stderr);
  const msg = String((await node!.waitForEvent("message.accepted", { sender: from })).queueId);
  await node!.waitForEvent("recipient.delivered", { queueId: msg });
  return msg;
};

before(async () => {
  nats = await startSecureNats(cluster, { tenants: ["acme"] });
  dataDir = await makeDataDir();
  const credentials = nats.credentials("node");
  node = await startTernNode({
    nodeId: "p",
    cluster,
    dataDir,
    nats: { servers: [nats.url], embedded: false, user: credentials.user, passwordFile: credentials.passwordFile },
    localDomains: ["example.test"],
    users: [{ address: "bob@example.test", password: "pw" }],
    api: { tenants: [{ name: "acme", senderDomains: ["acme.test"] }] },
  });
  for (const from of ["news@acme.test", "someone@other.test"]) sent[from] = await sendFrom(from);
});

after(async () => {
  await Promise.all(clients.map((nc) => nc.close().catch(() => undefined)));
  await node?.kill("SIGTERM");
  await nats.stop();
  await removeDataDir(dataDir);
});

const as = async (role: "application", tenant?: string) => {
  const nc = await nats.connectAs(role, tenant);
  clients.push(nc);
  return nc;
};

test("the node publishes its events under the node permissions; the operator reads every tenant's", async () => {
  assert.equal(node!.logs().includes("Permissions Violation"), false, node!.logs().slice(-2000));
  // As `tern events` connects: replies on the operator inbox.
  const credentials = nats.credentials("operator");
  const nc = await connect({ servers: [nats.url], user: credentials.user, pass: credentials.password, inboxPrefix: subjects.operatorInbox });
  clients.push(nc);
  await eventually4(async () => {
    const events = await read(nc);
    return new Set(events.map((e) => e.tenant)).size === 2 && events.length >= 4 ? true : undefined;
  });
});

test("an application of tenant acme reads acme's events only", async () => {
  const app = await as("application", "acme");
  const events = await eventually4(async () => {
    const found = await read(app, "acme");
    return found.length >= 2 ? found : undefined;
  });
  assert.deepEqual(new Set(events.map((e) => e.msg)), new Set([sent["news@acme.test"]]));
  assert.ok(events.every((e) => e.tenant === "acme"));
  await assert.rejects(read(app, "default"), /Permissions Violation/, "another tenant's events are refused");
  await assert.rejects(read(app), /Permissions Violation/, "every tenant's events are refused");
});

test("a consumer whose request subject names acme but whose body filters another tenant is refused", async () => {
  const app = await as("application", "acme");
  const name = `forged${Date.now()}`;
  const reply = await app.request(
    `$JS.API.CONSUMER.CREATE.${subjects.eventsStream}.${name}.${subjects.eventFilter({ tenant: "acme" })}`,
    JSON.stringify({ stream_name: subjects.eventsStream, config: { name, filter_subject: subjects.eventFilter({ tenant: "default" }), ack_policy: "none", deliver_policy: "all" } }),
    { timeout: 2_000 },
  );
  const answer = reply.json<{ error?: { code: number; description: string } }>();
  // JSConsumerCreateFilterSubjectMismatchErr: the server checks the body against the subject.
  assert.equal(answer.error?.code, 400, JSON.stringify(answer));
  assert.match(answer.error?.description ?? "", /filter/i);
});

test("an application of tenant acme cannot watch another tenant's events on core NATS", async () => {
  const app = await as("application", "acme");
  const sub = app.subscribe(`tern.${cluster}.events.default.>`);
  const closed = await Promise.race([sub.closed.then((error) => String(error ?? "closed")), new Promise((r) => setTimeout(() => r(undefined), 2_000))]);
  assert.match(String(closed), /Permissions Violation/);
});

test("an application of tenant acme is refused STREAM.INFO, which would list every tenant's subjects", async () => {
  const app = await as("application", "acme");
  await assert.rejects(
    app.request(`$JS.API.STREAM.INFO.${subjects.eventsStream}`, JSON.stringify({ subjects_filter: ">" }), { timeout: 2_000 }),
    /Permissions Violation/,
  );
  // The node's own look-up answers, and does list the other tenant: what acme must not see.
  const nodeUser = await connect({ servers: [nats.url], user: nats.credentials("node").user, pass: nats.credentials("node").password, inboxPrefix: subjects.nodeInbox("probe") });
  clients.push(nodeUser);
  const info = (await nodeUser.request(`$JS.API.STREAM.INFO.${subjects.eventsStream}`, JSON.stringify({ subjects_filter: ">" }), { timeout: 2_000 })).json<{ state: { subjects?: Record<string, number> } }>();
  assert.ok(Object.keys(info.state.subjects ?? {}).some((subject) => subject.startsWith(`tern.${cluster}.events.default.`)), JSON.stringify(info));
  // Readers of every tenant's events do not need it either, and are not given it.
  const operator = await connect({ servers: [nats.url], user: nats.credentials("operator").user, pass: nats.credentials("operator").password, inboxPrefix: subjects.operatorInbox });
  clients.push(operator);
  await assert.rejects(operator.request(`$JS.API.STREAM.INFO.${subjects.eventsStream}`, "", { timeout: 2_000 }), /Permissions Violation/);
});

test("an application of tenant acme reads its events from a sequence and from a time", async () => {
  const app = await as("application", "acme");
  const all = await eventually4(async () => {
    const found = await read(app, "acme", { start: "first" });
    return found.length >= 2 ? found : undefined;
  });
  const last = all[all.length - 1]!;
  assert.deepEqual(await read(app, "acme", { start: { seq: last.seq } }), [last]);
  assert.deepEqual(await read(app, "acme", { start: { seq: last.seq + 1 } }), []);
  assert.deepEqual(await read(app, "acme", { start: { time: new Date(Date.now() - 3_600_000) } }), all);
  assert.deepEqual(await read(app, "acme", { start: { time: new Date(Date.now() + 60_000) } }), []);
});

test("an application of tenant acme follows its new events", async () => {
  const app = await as("application", "acme");
  const events = followEvents(app, { cluster, tenant: "acme", follow: true, timeoutMs: 2_000 });
  try {
    const first = events.next(); // creates the consumer at "new": nothing stored is read
    await new Promise((resolve) => setTimeout(resolve, 500));
    const msg = await sendFrom("alerts@acme.test");
    let timer: NodeJS.Timeout | undefined;
    const got = await Promise.race([first, new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error("no event followed")), 10_000)))]).finally(() => clearTimeout(timer));
    assert.equal(got.done, false);
    assert.deepEqual([got.value!.event.msg, got.value!.event.tenant, got.value!.event.type], [msg, "acme", "accepted"]);
  } finally {
    await events.return(undefined);
  }
});

test("tern events --app --tenant acme prints acme's events from a sequence", async () => {
  const credentials = nats.credentials("application", "acme");
  const config = join(dataDir, "app-cli.json");
  await writeFile(config, JSON.stringify({ cluster, nats: { servers: [nats.url], embedded: false, user: credentials.user, passwordFile: credentials.passwordFile } }));
  const app = await as("application", "acme");
  const stored = await read(app, "acme", { start: "first" });
  const tern = async (...args: string[]) => {
    const out = await run(process.execPath, [...ternCli, "events", "--config", config, "--app", "--tenant", "acme", "--json", ...args]);
    assert.equal(out.code, 0, out.stderr);
    return out.stdout.trim().split("\n").filter(Boolean).map((line) => JSON.parse(line) as { seq: number; tenant: string; msg: string });
  };
  const printed = await tern("--since", String(stored[1]!.seq));
  assert.deepEqual(printed.map((e) => e.seq), stored.slice(1).map((e) => e.seq));
  assert.ok(printed.every((e) => e.tenant === "acme"));
  const refused = await run(process.execPath, [...ternCli, "events", "--config", config, "--app", "--tenant", "default"]);
  assert.equal(refused.code, 69, refused.stdout + refused.stderr);
});

const eventually4 = async <T>(probe: () => Promise<T | undefined>): Promise<T> => {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const value = await probe().catch(() => undefined);
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error("timed out");
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
};
