// The cluster plane locked down as the README's "Securing a cluster" says: a real
// nats-server with the documented users and permissions, two nodes logged in as the
// node user, and every attack that used to work from an anonymous client tried again,
// as anonymous, as an application and as an operator. Each attack has a control: the
// same request made with node credentials is answered, so a refusal proves the
// permissions, not a wrong subject.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { Effect } from "effect";
import { Kvm } from "@nats-io/kv";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { callEndpoint } from "../../actors/runtime/remote.ts";
import { mailboxEndpoints } from "../../protocol/mailbox.ts";
import { siteBudgetEndpoint } from "../../nodes/services/site-budgets.ts";
import { makeSubjects } from "../../protocol/subjects.ts";
import { encodeBlobFrame, encodeFrame } from "../../protocol/wire.ts";
import { eventually, makeDataDir, projectRoot, removeDataDir, run, startTernNode, uniqueCluster, type TernNode, ternCli } from "../support/tern-node.ts";
import { startSecureNats, type SecureNats } from "../support/secure-nats.ts";

const cluster = uniqueCluster();
const subjects = makeSubjects(cluster);
const users = [
  { address: "alice@example.test", password: "alice-pw", home: "a" },
  { address: "bob@example.test", password: "bob-pw", home: "b" },
];

let nats: SecureNats;
let nodeA: TernNode | undefined;
let nodeB: TernNode | undefined;
const dirs: string[] = [];
const clients: NatsConnection[] = [];

const nodeConfig = async (nodeId: string) => {
  const dataDir = await makeDataDir();
  dirs.push(dataDir);
  const node = nats.credentials("node");
  return {
    nodeId,
    cluster,
    dataDir,
    localDomains: ["example.test"],
    users,
    nats: { servers: [nats.url], embedded: false, user: node.user, passwordFile: node.passwordFile },
  };
};

const as = async (role: "node" | "operator" | "application") => {
  const credentials = nats.credentials(role);
  // A node's replies come back on the node inbox: it may not subscribe to _INBOX.
  const nc = await connect({
    servers: [nats.url],
    user: credentials.user,
    pass: credentials.password,
    ...(role === "node" ? { inboxPrefix: subjects.nodeInbox("probe") } : {}),
  });
  clients.push(nc);
  return nc;
};

const popList = async (user: string, password: string, node: TernNode) =>
  (await run("curl", ["-s", "--max-time", "10", `pop3://${encodeURIComponent(user)}:${password}@127.0.0.1:${node.ports.pop3}/`])).stdout;

/** Runs the tern CLI with extra environment; resolves with its exit code and output. */
const tern = (args: string[], env: Record<string, string>) =>
  new Promise<{ code: number; out: string }>((resolve) => {
    const child = spawn(process.execPath, [...ternCli, ...args], {
      cwd: projectRoot,
      env: { ...process.env, ...env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    child.stdout.on("data", (c: Buffer) => (out += c.toString()));
    child.stderr.on("data", (c: Buffer) => (out += c.toString()));
    child.once("exit", (code) => resolve({ code: code ?? -1, out }));
  });

/** The 250 reply to the first message sent in `before`. */
let firstQueueReply = "";

const sendTo = async (node: TernNode, to: string, body: string) => {
  // swaks reads a body naming a file from that file (a large one does not fit in argv).
  const bodyFile = join(dirs[0]!, `body-${Math.random().toString(36).slice(2)}.txt`);
  await writeFile(bodyFile, body);
  // --suppress-data keeps the body out of the transcript; the replies stay in it.
  const sent = await run("swaks", ["--server", `127.0.0.1:${node.ports.smtp}`, "--to", to, "--from", "sender@elsewhere.test", "--body", bodyFile, "--suppress-data"]);
  assert.equal(sent.code, 0, sent.stdout + sent.stderr);
  return sent.stdout;
};

/** Resolves with the error a subscription ended with (a permissions violation closes it). */
const subscriptionRefusal = async (nc: NatsConnection, subject: string) => {
  const sub = nc.subscribe(subject);
  const closed = await Promise.race([sub.closed.then((error) => error ?? "closed without error"), new Promise((r) => setTimeout(() => r(undefined), 2_000))]);
  return closed === undefined ? undefined : String(closed);
};

const callMailbox = (nc: NatsConnection, node: string, op: "list" | "deliver" | "open" | "commit" | "renew" | "release" | "retrieve", request: unknown) =>
  Effect.runPromise(
    Effect.result(callEndpoint(nc, subjects.mailbox(node, op), mailboxEndpoints[op] as never, request as never, { timeoutMs: 3_000 })),
  );

before(async () => {
  nats = await startSecureNats(cluster);
  [nodeA, nodeB] = await Promise.all([startTernNode(await nodeConfig("a")), startTernNode(await nodeConfig("b"))]);
  firstQueueReply = await sendTo(nodeA, "bob@example.test", "first message for bob");
  await nodeA.waitForEvent("recipient.delivered", { recipient: "bob@example.test" });
});

after(async () => {
  await Promise.all(clients.map((nc) => nc.close().catch(() => undefined)));
  await Promise.all([nodeA?.kill("SIGTERM"), nodeB?.kill("SIGTERM")]);
  await nats.stop();
  await Promise.all(dirs.map(removeDataDir));
});

test("anonymous clients and wrong passwords are refused by the server", async () => {
  await assert.rejects(connect({ servers: [nats.url], reconnect: false }), /Authorization Violation/);
  await assert.rejects(connect({ servers: [nats.url], user: "node-user", pass: "guess", reconnect: false }), /Authorization Violation/);
});

test("nodes work under the node permissions: mail crosses nodes, also a body larger than NATS's max payload", async () => {
  const big = `large body ${"x".repeat(76)}\n`.repeat(20_000); // ≈ 1.8 MB, over the 1 MB max payload
  await sendTo(nodeA!, "bob@example.test", big);
  await eventually(async () => ((await popList("bob@example.test", "bob-pw", nodeA!)).trim().split("\n").length === 2 ? true : undefined), 20_000, "two messages for bob");
  assert.equal(nodeA!.logs().includes("Permissions Violation"), false, nodeA!.logs().slice(-2000));
  assert.equal(nodeB!.logs().includes("Permissions Violation"), false, nodeB!.logs().slice(-2000));
});

test("an application or an operator cannot read, forge, lock or delete mail in a mailbox", async () => {
  const node = await as("node");
  const control = await callMailbox(node, "b", "list", { user: "bob@example.test" });
  assert.equal(control._tag, "Success", "a node may list bob's mailbox (the subject is right)");

  for (const role of ["application", "operator"] as const) {
    const intruder = await as(role);
    const attempts = {
      list: { user: "bob@example.test" },
      retrieve: { user: "bob@example.test", uid: "1" },
      deliver: { user: "bob@example.test", entryId: "forged" },
      open: { user: "bob@example.test", holder: "intruder", leaseMs: 3_600_000 },
      renew: { user: "bob@example.test", lock: "x" },
      commit: { user: "bob@example.test", lock: "x", remove: [], seen: [] },
      release: { user: "bob@example.test", lock: "x" },
    } as const;
    for (const [op, request] of Object.entries(attempts)) {
      const result = await callMailbox(intruder, "b", op as keyof typeof attempts, request);
      assert.equal(result._tag, "Failure", `${role} ${op} was answered`);
    }
  }
  // Nothing was locked: bob still reads his mail at once.
  assert.match(await popList("bob@example.test", "bob-pw", nodeB!), /^1 \d+/m);
});

test("an application cannot administer queues, nor read the answers; an operator can, with tern queue, tern pools, tern reputation and tern status", async () => {
  const app = await as("application");
  await assert.rejects(app.request(subjects.queueAdmin, encodeFrame({ _tag: "List", limit: 10 }), { timeout: 2_000 }));
  await assert.rejects(app.request(subjects.poolsStatus, encodeFrame({ _tag: "Pools" }), { timeout: 2_000 }));
  await assert.rejects(app.request(subjects.reputationStatus, encodeFrame({ _tag: "Reputation", window: "1h" }), { timeout: 2_000 }));
  const overheard: string[] = [];
  const listening = app.subscribe("_INBOX.>", { callback: (_error, msg) => void overheard.push(msg.subject) });

  const operator = nats.credentials("operator");
  const configFile = join(dirs[0]!, "operator.json");
  await writeFile(configFile, JSON.stringify({ cluster, nats: { servers: [nats.url], embedded: false } }));
  const outcome = await tern(["queue", "--config", configFile, "shape"], { TERN_NATS_USER: operator.user, TERN_NATS_PASSWORD: operator.password });
  assert.equal(outcome.code, 0, outcome.out);
  const pools = await tern(["pools", "--config", configFile], { TERN_NATS_USER: operator.user, TERN_NATS_PASSWORD: operator.password });
  assert.equal(pools.code, 0, pools.out);
  assert.match(pools.out, /no IP pools/);
  const reputation = await tern(["reputation", "--config", configFile, "--window", "24h"], { TERN_NATS_USER: operator.user, TERN_NATS_PASSWORD: operator.password });
  assert.equal(reputation.code, 0, reputation.out);
  assert.match(reputation.out, /^last 24h, summed over 2 nodes \(a, b\)/m);

  // tern status too: found on the node that holds the message, asked through any node.
  const queueId = /queued as ([0-9A-Za-z]+)/.exec(firstQueueReply)?.[1];
  assert.ok(queueId, firstQueueReply);
  const status = await tern(["status", "--config", configFile, queueId], { TERN_NATS_USER: operator.user, TERN_NATS_PASSWORD: operator.password });
  assert.equal(status.code, 0, status.out);
  assert.match(status.out, /bob@example\.test/);
  listening.unsubscribe();
  assert.deepEqual(overheard, [], "the operator's replies travel outside _INBOX");
});

test("an application cannot rewrite mailbox ownership in KV", async () => {
  const app = await as("application");
  await assert.rejects(async () => {
    const kv = await new Kvm(app).open(subjects.mailboxOwnersBucket);
    await kv.put(Buffer.from("bob@example.test").toString("base64url"), "evil");
  });
  const node = await as("node");
  const kv = await new Kvm(node).open(subjects.mailboxOwnersBucket);
  assert.equal((await kv.get(Buffer.from("bob@example.test").toString("base64url")))?.string(), "b");
});

test("an application or operator cannot answer resolver requests or listen to internal traffic", async () => {
  for (const role of ["application", "operator"] as const) {
    const intruder = await as(role);
    assert.match((await subscriptionRefusal(intruder, subjects.resolve)) ?? "accepted", /Permissions Violation/, `${role} resolver`);
    assert.match((await subscriptionRefusal(intruder, "tern.>")) ?? "accepted", /Permissions Violation/, `${role} tern.>`);
    assert.match((await subscriptionRefusal(intruder, `${subjects.nodeInboxes}.>`)) ?? "accepted", /Permissions Violation/, `${role} inboxes`);
  }
  const node = await as("node");
  assert.equal(await subscriptionRefusal(node, subjects.resolve), undefined, "a node may serve the resolver");
});

test("replies and blobs between nodes never pass through _INBOX, where applications may listen", async () => {
  const app = await as("application");
  const seen: string[] = [];
  const sub = app.subscribe("_INBOX.>", { callback: (_error, msg) => void seen.push(msg.subject) });
  await sendTo(nodeA!, "bob@example.test", `third ${"y".repeat(80)}\n`.repeat(15_000));
  await eventually(async () => ((await popList("bob@example.test", "bob-pw", nodeA!)).trim().split("\n").length === 3 ? true : undefined), 20_000, "three messages for bob");
  sub.unsubscribe();
  assert.deepEqual(seen, []);
});

test("an application cannot make a node pull a large blob from a subject it names", async () => {
  const app = await as("application");
  const offer = "_INBOX.bait";
  const chunkRequests: string[] = [];
  const bait = app.subscribe(offer, { callback: (_error, msg) => void chunkRequests.push(msg.subject) });
  const ref = { subject: offer, size: 200 * 1024 * 1024, chunkSize: 1024 * 1024 - 4096, sha256: "0".repeat(64) };
  for (const node of ["a", "b"]) {
    await assert.rejects(app.request(subjects.mailbox(node, "deliver"), encodeBlobFrame(ref), { timeout: 2_000 }));
  }
  await new Promise((resolve) => setTimeout(resolve, 1_000));
  bait.unsubscribe();
  assert.deepEqual(chunkRequests, []);
});

test("membership works under the node permissions, and an operator lists it with tern cluster status", async () => {
  const operator = nats.credentials("operator");
  const configFile = join(dirs[0]!, "operator-members.json");
  await writeFile(configFile, JSON.stringify({ cluster, nats: { servers: [nats.url], embedded: false } }));
  const listed = await eventually(async () => {
    const status = await tern(["cluster", "status", "--config", configFile, "--json"], { TERN_NATS_USER: operator.user, TERN_NATS_PASSWORD: operator.password });
    assert.equal(status.code, 0, status.out);
    const nodes = (JSON.parse(status.out) as { members: Array<{ node: string }> }).members.map((m) => m.node);
    return nodes.length === 2 ? nodes : undefined;
  }, 15_000, "both nodes listed");
  assert.deepEqual(listed, ["a", "b"]);
});

test("only nodes may ask for a lease on a site budget (a forged ask could starve the nodes of a site's connections)", async () => {
  const ask = { budget: "mx.example.net", holder: "intruder", limits: { connections: 6 }, wantConnections: 6, heldConnections: 0, openConnections: 0, wantMessages: 0, unusedMessages: 0 };
  const call = (nc: NatsConnection, owner: string) =>
    Effect.runPromise(Effect.result(callEndpoint(nc, subjects.siteBudgetOf(owner), siteBudgetEndpoint, { ...ask, holder: `probe-${owner}` }, { timeoutMs: 2_000 })));
  const node = await as("node");
  // Each node answers: with a lease if it owns the budget, else naming the owner.
  for (const owner of ["a", "b"]) {
    const answered = await call(node, owner);
    assert.ok(answered._tag === "Success" || answered.failure._tag === "NotBudgetOwner", `node ${owner}: ${JSON.stringify(answered)}`);
  }
  for (const role of ["application", "operator"] as const) {
    const intruder = await as(role);
    for (const owner of ["a", "b"]) {
      const refused = await call(intruder, owner);
      assert.equal(refused._tag, "Failure", `${role} got a lease from ${owner}`);
      assert.equal(refused.failure._tag, "RemoteUnavailable");
    }
  }
});

test("the suppression list under the permissions: nodes watch its bucket, the operator manages it with tern suppress, an application neither writes the bucket nor reaches the operator's subject", async () => {
  for (const node of [nodeA!, nodeB!]) await node.waitForEvent("suppression.loaded", {}, 10_000);
  const operator = nats.credentials("operator");
  const configFile = join(dirs[0]!, "operator-suppress.json");
  await writeFile(configFile, JSON.stringify({ cluster, nats: { servers: [nats.url], embedded: false } }));
  const env = { TERN_NATS_USER: operator.user, TERN_NATS_PASSWORD: operator.password };
  const added = await tern(["suppress", "--config", configFile, "add", "blocked@remote.test"], env);
  assert.equal(added.code, 0, added.out);
  assert.match(added.out, /added 1/);
  // Both nodes' views have it (the one that wrote it, and the other through its watch): alice may not submit to it.
  for (const node of [nodeA!, nodeB!]) {
    const refused = await eventually(async () => {
      const sent = await run("swaks", [
        "--server", "127.0.0.1", "--port", String(node.ports.smtp), "--tls", "--auth", "PLAIN", "--auth-user", "alice@example.test", "--auth-password", "alice-pw",
        "--from", "alice@example.test", "--to", "blocked@remote.test", "--hide-informational", "--quit-after", "RCPT",
      ]);
      return /550 5\.7\.1 Recipient address is on the suppression list \(manual, scope global\)/.test(sent.stdout) ? sent : undefined;
    }, 10_000, "the refusal");
    assert.ok(refused);
  }
  const listed = await tern(["suppress", "--config", configFile, "list", "--json"], env);
  assert.equal(listed.code, 0, listed.out);
  assert.match(listed.out, /"address":"blocked@remote\.test","scope":"global","reason":"manual"/);

  const app = await as("application");
  await assert.rejects(app.request(subjects.suppressionAdmin, encodeFrame({ _tag: "List" }), { timeout: 2_000 }));
  await assert.rejects(async () => {
    const kv = await new Kvm(app).open(subjects.suppressionsBucket);
    await kv.put("global.forged", JSON.stringify({ address: "x@remote.test", scope: "global", reason: "manual", at: 0 }));
  });
  for (const node of [nodeA!, nodeB!]) {
    assert.equal(node.logs().includes("Permissions Violation"), false, node.logs().slice(-2000));
    assert.equal(node.events("suppression.watch.failed").length, 0, node.logs().slice(-2000));
  }
});
