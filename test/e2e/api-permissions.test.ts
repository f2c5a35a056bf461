// The application role on a locked-down nats-server: an application user bound to tenant
// A submits on A's subjects and discovers the API with $SRV, and is refused by the server
// itself on tenant B's subjects; nodes serve the API under the node permissions.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import type { NatsConnection } from "@nats-io/transport-node";
import { connectTern } from "../../cluster/client.ts";
import { makeSubjects } from "../../protocol/subjects.ts";
import { startSecureNats, type SecureNats } from "../support/secure-nats.ts";
import { makeDataDir, removeDataDir, startTernNode, uniqueCluster, type TernNode } from "../support/tern-node.ts";

const cluster = uniqueCluster();
const subjects = makeSubjects(cluster);
let nats: SecureNats;
let node: TernNode | undefined;
let dataDir: string;
const clients: NatsConnection[] = [];

before(async () => {
  nats = await startSecureNats(cluster, { tenants: ["alpha", "beta"] });
  dataDir = await makeDataDir();
  const credentials = nats.credentials("node");
  node = await startTernNode({
    nodeId: "n1",
    cluster,
    dataDir,
    localDomains: ["example.test"],
    users: [{ address: "alice@example.test", password: "pw" }],
    api: { tenants: [{ name: "alpha", senderDomains: ["alpha.test"] }, { name: "beta", senderDomains: ["beta.test"] }] },
    nats: { servers: [nats.url], embedded: false, user: credentials.user, passwordFile: credentials.passwordFile },
  });
});

after(async () => {
  await Promise.all(clients.map((nc) => nc.close().catch(() => undefined)));
  await node?.kill("SIGTERM");
  await nats?.stop();
  await removeDataDir(dataDir);
});

const appOf = async (tenant: string) => {
  const nc = await nats.connectAs("application", tenant);
  clients.push(nc);
  return nc;
};

test("an application user of tenant alpha submits on alpha's subjects and finds the API with $SRV.PING", async () => {
  const nc = await appOf("alpha");
  const tern = await connectTern({ cluster, tenant: "alpha", nc });
  const reply = await tern.submitRaw("Subject: alpha\r\n\r\nhi\r\n", { from: "news@alpha.test", to: ["alice@example.test"] });
  assert.equal(reply.tenant, "alpha");
  // A keyed submit: the node claims the key in its cluster's KV bucket, within its permissions.
  const keyed = await tern.submitRaw("Subject: keyed\r\n\r\nhi\r\n", { from: "news@alpha.test", to: ["alice@example.test"] }, { idempotencyKey: "alpha-1" });
  const retried = await tern.submitRaw("Subject: keyed\r\n\r\nhi\r\n", { from: "news@alpha.test", to: ["alice@example.test"] }, { idempotencyKey: "alpha-1" });
  assert.deepEqual([retried.messageId, retried.duplicate], [keyed.messageId, true]);
  const pings = [];
  for await (const msg of await nc.requestMany(`$SRV.PING.${subjects.apiService}`, "", { maxWait: 1_000 })) pings.push(msg.json<{ id: string }>().id);
  assert.deepEqual(pings, ["n1"]);
  assert.equal(node!.logs().includes("Permissions Violation"), false, node!.logs().slice(-2000));
});

test("an application user of tenant alpha is refused by the server on beta's subjects", async () => {
  const nc = await appOf("alpha");
  const refused = await nc
    .request(subjects.api("beta", "submit"), JSON.stringify({ raw: "SGk=", envelope: { from: "news@beta.test", to: ["alice@example.test"] } }), { timeout: 2_000 })
    .then(() => "answered", (error: Error) => String(error));
  assert.match(refused, /Permissions Violation/i);
  // The control: beta's own user is answered on the same subject.
  const beta = await connectTern({ cluster, tenant: "beta", nc: await appOf("beta") });
  const reply = await beta.submitRaw("Subject: beta\r\n\r\nhi\r\n", { from: "news@beta.test", to: ["alice@example.test"] });
  assert.equal(reply.tenant, "beta");
});
