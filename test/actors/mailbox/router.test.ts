// The mailbox router on its own, over the real NATS at 127.0.0.1:4222 with real LMDB
// stores: two routers stand for two nodes of one cluster (unique per run). Mail for a
// mailbox goes to the node that owns it, locally or over NATS (large bodies on the chunked
// path); an owner that is unknown or down is a typed, temporary MailboxUnavailable.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Kvm } from "@nats-io/kv";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { Effect, Exit, Scope } from "effect";
import { open, type RootDatabase } from "lmdb";
import { openMailboxOwners, type MailboxOwners } from "../../../cluster/ownership.ts";
import { makeLocalMailboxes } from "../../../actors/mailbox/actor.ts";
import { openHoldings } from "../../../actors/mailbox/holdings.ts";
import { makePlacement } from "../../../actors/mailbox/placement.ts";
import { makeMailboxRouter, UNOWNED_LOCK, type MailboxRouter } from "../../../actors/mailbox/router.ts";
import { INBOX, openMailboxStore, type MailboxStore } from "../../../actors/mailbox/store.ts";
import { makeBlobTransport, type BlobTransport } from "../../../actors/runtime/blobs.ts";
import { makePullBudget, type PullLimits } from "../../../actors/runtime/pull-budget.ts";
import { callChunkedEndpoint, type Endpoint } from "../../../actors/runtime/remote.ts";
import { makeSupervisor } from "../../../actors/runtime/supervisor.ts";
import { mailboxEndpoints, type MailboxError, type RequestOf, type ResponseOf } from "../../../protocol/mailbox.ts";
import { makeSubjects } from "../../../protocol/subjects.ts";
import { eventually } from "../../support/tern-node.ts";

const cluster = `t${randomBytes(5).toString("hex")}`;
const subjects = makeSubjects(cluster);

interface TestNode {
  readonly id: string;
  readonly nc: NatsConnection;
  readonly transport: BlobTransport;
  readonly store: MailboxStore;
  readonly router: MailboxRouter;
  readonly root: RootDatabase;
  readonly dir: string;
  readonly scope: Scope.Closeable;
}

/** Where each user's mailbox is configured to live (none: whichever node first gets mail claims it). */
const homes: Record<string, string> = { "alice@x": "n1", "bob@x": "n2", "dora@x": "n3" };

let owners: MailboxOwners;
let n1: TestNode;
let n2: TestNode;

const roomy: PullLimits = { maxBytes: 128 * 1024 * 1024, maxBytesPerPeer: 64 * 1024 * 1024, maxConcurrent: 8 };

const startNode = async (id: string, limits: PullLimits = roomy): Promise<TestNode> => {
  const nc = await connect({ servers: ["nats://127.0.0.1:4222"], name: `tern-test-router-${id}` });
  const dir = await mkdtemp(join(tmpdir(), `tern-router-${id}-`));
  const root = open({ path: join(dir, "db"), maxDbs: 16 });
  const store = openMailboxStore(root);
  const scope = Scope.makeUnsafe();
  const transport = makeBlobTransport(nc, subjects, id, makePullBudget(limits));
  const router = await Effect.runPromise(
    Effect.gen(function* () {
      const local = yield* makeLocalMailboxes({
        store,
        supervisor: makeSupervisor(),
        knows: (user) => user.endsWith("@x"),
        quotaOf: () => undefined,
        idleMs: 60_000,
        askTimeoutMs: 5_000,
        stopGraceMs: 1_000,
      });
      const holdings = yield* openHoldings(root, 0);
      const placement = makePlacement({ nodeId: id, nc, subjects, owners, holdings, homeOf: (user) => homes[user], log: () => undefined });
      const router = makeMailboxRouter({ nodeId: id, transport, subjects, placement, local, timeoutMs: 5_000 });
      yield* router.serve();
      return router;
    }).pipe(Scope.provide(scope)),
  );
  return { id, nc, transport, store, router, root, dir, scope };
};

const stopNode = async (node: TestNode) => {
  await Effect.runPromise(Scope.close(node.scope, Exit.void));
  await node.nc.drain();
  await node.root.close();
  await rm(node.dir, { recursive: true, force: true });
};

let ownersConnection: NatsConnection;

before(async () => {
  ownersConnection = await connect({ servers: ["nats://127.0.0.1:4222"], name: "tern-test-router-owners" });
  owners = await Effect.runPromise(openMailboxOwners(ownersConnection, subjects.mailboxOwnersBucket));
  for (const [user, node] of [["alice@x", "n1"], ["bob@x", "n2"], ["carol@x", "n9"]] as const) await Effect.runPromise(owners.claim(user, node)); // n9 is down
  [n1, n2] = await Promise.all([startNode("n1"), startNode("n2")]);
});

after(async () => {
  await Promise.all([stopNode(n1), stopNode(n2)]);
  await (await new Kvm(ownersConnection).open(subjects.mailboxOwnersBucket)).destroy();
  await ownersConnection.close();
});

const failureOf = async <A>(effect: Effect.Effect<A, MailboxError>): Promise<MailboxError> => {
  const exit = await Effect.runPromiseExit(effect);
  assert.ok(Exit.isFailure(exit), "expected a failure");
  const reason = exit.cause.reasons.find((r) => r._tag === "Fail");
  assert.ok(reason?._tag === "Fail", "expected a typed failure");
  return reason.error;
};

const inboxOf = (node: TestNode, user: string) => node.store.list(user, INBOX).map((m) => m.entryId);

test("mail for a mailbox this node owns is stored here, without crossing to the other node", async () => {
  const uid = await Effect.runPromise(n1.router.deliver("alice@x", "E-local.1", Buffer.from("Subject: local\r\n\r\nhi\r\n")));
  assert.match(uid, /^\d+\.1$/);
  assert.deepEqual(inboxOf(n1, "alice@x"), ["E-local.1"]);
  assert.deepEqual(inboxOf(n2, "alice@x"), [], "nothing on the node that does not own it");
});

test("mail for a mailbox another node owns is stored on that node, and reads back from either", async () => {
  const body = Buffer.from("Subject: remote\r\n\r\nover NATS\r\n");
  const uid = await Effect.runPromise(n1.router.deliver("bob@x", "E-remote.1", body));
  assert.deepEqual(inboxOf(n2, "bob@x"), ["E-remote.1"]);
  assert.deepEqual(inboxOf(n1, "bob@x"), []);
  // A redelivery (the ack was lost) is answered with the first copy, not stored twice.
  assert.equal(await Effect.runPromise(n1.router.deliver("bob@x", "E-remote.1", body)), uid);
  assert.deepEqual(inboxOf(n2, "bob@x"), ["E-remote.1"]);

  for (const node of [n1, n2]) {
    const read = await Effect.runPromise(node.router.call("retrieve", { user: "bob@x", uid }));
    assert.ok(Buffer.from(read.attachment!).equals(body), `retrieved through ${node.id}`);
  }
});

test("a body over NATS's max payload crosses on the chunked path, both ways, byte for byte", async () => {
  const body = randomBytes(3 * 1024 * 1024 + 5);
  const uid = await Effect.runPromise(n1.router.deliver("bob@x", "E-large.1", body));
  const stored = n2.store.list("bob@x", INBOX).find((m) => m.entryId === "E-large.1");
  assert.equal(stored?.size, body.length);
  const read = await Effect.runPromise(n1.router.call("retrieve", { user: "bob@x", uid }));
  assert.equal(read.value.size, body.length);
  assert.ok(Buffer.from(read.attachment!).equals(body), "the reply came back whole over the chunked path");
});

test("an owner node that is down gives MailboxUnavailable: temporary, so the mail stays queued", async () => {
  const failure = await failureOf(n1.router.deliver("carol@x", "E-down.1", Buffer.from("m\r\n")));
  assert.equal(failure._tag, "MailboxUnavailable");
  assert.match(failure._tag === "MailboxUnavailable" ? failure.detail : "", /n9/);
  assert.equal((await failureOf(n2.router.call("retrieve", { user: "carol@x", uid: "1.1" })))._tag, "MailboxUnavailable");
});

test("a mailbox whose home node has not claimed it yet is not claimed by another: MailboxUnavailable", async () => {
  const failure = await failureOf(n1.router.deliver("dora@x", "E-home.1", Buffer.from("m\r\n")));
  assert.equal(failure._tag, "MailboxUnavailable");
  assert.equal(await Effect.runPromise(owners.ownerOf("dora@x")), undefined, "still waiting for its home node");
  // Reading it meanwhile is an empty maildrop, not an error.
  assert.deepEqual((await Effect.runPromise(n1.router.call("list", { user: "dora@x" }))).value.messages, []);
  assert.equal((await Effect.runPromise(n1.router.call("open", { user: "dora@x", holder: "t", leaseMs: 1_000 }))).value.lock, UNOWNED_LOCK);
});

test("a mailbox with no home is claimed by the node that first gets mail for it", async () => {
  await Effect.runPromise(n2.router.deliver("erin@x", "E-claim.1", Buffer.from("m\r\n")));
  assert.equal(await Effect.runPromise(owners.ownerOf("erin@x")), "n2");
  assert.deepEqual(inboxOf(n2, "erin@x"), ["E-claim.1"]);
  await Effect.runPromise(n1.router.deliver("erin@x", "E-claim.2", Buffer.from("m\r\n")));
  assert.deepEqual(inboxOf(n2, "erin@x"), ["E-claim.1", "E-claim.2"], "later mail follows the claim");
});

/** Asks node `to` over NATS, as a misrouting (or forging) node would, to store mail for `user`; returns the error tag. */
const deliverDirectly = async (to: string, user: string, entryId: string) => {
  const deliver = mailboxEndpoints.deliver as unknown as Endpoint<RequestOf<"deliver">, ResponseOf<"deliver">, MailboxError>;
  const exit = await Effect.runPromiseExit(
    callChunkedEndpoint(n1.transport, subjects.mailbox(to, "deliver"), deliver, { user, entryId }, { timeoutMs: 5_000, attachment: Buffer.from("m\r\n") }),
  );
  assert.ok(Exit.isFailure(exit));
  const reason = exit.cause.reasons.find((r) => r._tag === "Fail");
  return reason?._tag === "Fail" ? reason.error._tag : undefined;
};

test("a node answers only for mailboxes it owns: a misrouted ask gets NotOwner, and nothing is stored", async () => {
  assert.equal(await deliverDirectly("n2", "alice@x", "E-stray.1"), "NotOwner");
  assert.deepEqual(inboxOf(n2, "alice@x"), []);
});

test("a KV entry naming another node does not move a mailbox: its holder keeps it, the node named refuses", async () => {
  await Effect.runPromise(owners.assert("alice@x", "n2")); // forged: n1 holds alice
  // n2's own record does not hold alice, and n1 says it does: n2 refuses to store her mail.
  assert.equal(await deliverDirectly("n2", "alice@x", "E-forged.0"), "NotOwner");
  // n2 routes alice's mail to the holder instead of taking the KV's word.
  await Effect.runPromise(n2.router.deliver("alice@x", "E-forged.1", Buffer.from("m\r\n")));
  assert.equal(await Effect.runPromise(owners.ownerOf("alice@x")), "n1", "the holder re-asserted its claim");
  // And n1 keeps delivering locally when the KV names n2, putting the KV right.
  await Effect.runPromise(owners.assert("alice@x", "n2"));
  await Effect.runPromise(n1.router.deliver("alice@x", "E-forged.2", Buffer.from("m\r\n")));
  // The KV is put right in the background: local mail does not wait for NATS.
  await eventually(async () => ((await Effect.runPromise(owners.ownerOf("alice@x"))) === "n1" ? true : undefined), 5_000, "n1 to re-assert alice");
  assert.deepEqual(inboxOf(n1, "alice@x"), ["E-local.1", "E-forged.1", "E-forged.2"]);
  assert.deepEqual(inboxOf(n2, "alice@x"), []);
});

test("an owner node too busy pulling bodies gives MailboxUnavailable, stores nothing, and holds no budget after", async () => {
  // A node that may pull at most 1 MB at once: a 2 MB body never fits, so it is refused before any pull.
  const n5 = await startNode("n5", { maxBytes: 1024 * 1024, maxBytesPerPeer: 1024 * 1024, maxConcurrent: 8 });
  // A node with no room at all for a pull: a body it could hold is refused as busy.
  const n6 = await startNode("n6", { ...roomy, maxConcurrent: 0 });
  try {
    await Effect.runPromise(owners.claim("fay@x", "n5"));
    await Effect.runPromise(owners.claim("gus@x", "n6"));
    const tooLarge = await failureOf(n1.router.deliver("fay@x", "E-busy.1", randomBytes(2 * 1024 * 1024)));
    assert.equal(tooLarge._tag, "MailboxUnavailable");
    const busy = await failureOf(n1.router.deliver("gus@x", "E-busy.2", randomBytes(2 * 1024 * 1024)));
    assert.equal(busy._tag, "MailboxUnavailable");
    assert.match(busy._tag === "MailboxUnavailable" ? busy.detail : "", /RemoteBusy: node n6/);
    assert.deepEqual([inboxOf(n5, "fay@x"), inboxOf(n6, "gus@x")], [[], []]);
    assert.deepEqual([n5.transport.budget.inUse(), n6.transport.budget.inUse()], [{ bytes: 0, pulls: 0 }, { bytes: 0, pulls: 0 }]);
    // Small mail needs no pull and still goes through.
    await Effect.runPromise(n1.router.deliver("gus@x", "E-busy.3", Buffer.from("m\r\n")));
    assert.deepEqual(inboxOf(n6, "gus@x"), ["E-busy.3"]);
  } finally {
    await Promise.all([stopNode(n5), stopNode(n6)]);
  }
});

test("the maildrop lock holds across nodes: a session on one node keeps another node's session out", async () => {
  const opened = await Effect.runPromise(n2.router.call("open", { user: "alice@x", holder: "n2/pop3/1", leaseMs: 30_000 }));
  assert.notEqual(opened.value.lock, UNOWNED_LOCK);
  const busy = await failureOf(n1.router.call("open", { user: "alice@x", holder: "n1/pop3/1", leaseMs: 30_000 }));
  assert.equal(busy._tag, "MaildropInUse");
  await Effect.runPromise(n2.router.call("release", { user: "alice@x", lock: opened.value.lock }));
  await Effect.runPromise(n1.router.call("open", { user: "alice@x", holder: "n1/pop3/1", leaseMs: 30_000 }));
});
