// Reading events on a locked-down NATS (the documented permissions): a node creates the
// events stream and publishes to it under the node user; an application user of tenant
// acme reads acme's events and nothing else, whatever filter it asks for or forges; the
// operator reads every tenant's.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { followEvents } from "../../cluster/events-client.ts";
import { makeSubjects } from "../../protocol/subjects.ts";
import { makeDataDir, removeDataDir, run, startTernNode, uniqueCluster, type TernNode } from "../support/tern-node.ts";
import { startSecureNats, type SecureNats } from "../support/secure-nats.ts";

const cluster = uniqueCluster();
const subjects = makeSubjects(cluster);
let nats: SecureNats;
let node: TernNode | undefined;
let dataDir: string;
const clients: NatsConnection[] = [];
const sent: Record<string, string> = {};

const read = async (nc: NatsConnection, tenant?: string) => {
  const found: Array<{ tenant: string; msg: string }> = [];
  for await (const { event } of followEvents(nc, { cluster, tenant, timeoutMs: 2_000 })) found.push({ tenant: event.tenant, msg: event.msg });
  return found;
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
  for (const from of ["news@acme.test", "someone@other.test"]) {
    const out = await run("swaks", ["--server", `127.0.0.1:${node.ports.smtp}`, "--from", from, "--to", "bob@example.test", "--silent", "2"]);
    assert.equal(out.code, 0, out.stderr);
    const msg = String((await node.waitForEvent("message.accepted", { from })).msg);
    await node.waitForEvent("recipient.delivered", { msg });
    sent[from] = msg;
  }
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

const eventually4 = async <T>(probe: () => Promise<T | undefined>): Promise<T> => {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const value = await probe().catch(() => undefined);
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error("timed out");
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
};
