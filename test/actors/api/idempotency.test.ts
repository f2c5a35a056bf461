// The claim protocol of idempotency keys over an in-memory bucket with the KV's semantics
// (create if absent, compare-and-set on a revision): who commits, who answers with the
// first reply, and when a node must refuse rather than risk a second copy.
import { test } from "node:test";
import assert from "node:assert/strict";
import { Effect } from "effect";
import { KeysUnavailable, type ApiKeys, type KeyEntry } from "../../../cluster/api-keys.ts";
import { makeIdempotency, OwnerUnreachable, type IdempotencyDeps } from "../../../actors/api/idempotency.ts";
import type { SubmitReply } from "../../../protocol/api.ts";

const memoryKeys = () => {
  const entries = new Map<string, KeyEntry>();
  let revision = 0;
  let down = false;
  const guard = <A>(f: () => A) => (down ? Effect.fail(new KeysUnavailable({ detail: "no responders" })) : Effect.sync(f));
  const write = (key: string, owner: string) => void entries.set(key, { owner, revision: ++revision });
  const keys: ApiKeys = {
    create: (key, owner) => guard(() => !entries.has(key) && (write(key, owner), true)),
    read: (key) => guard(() => entries.get(key)),
    update: (key, owner, expected) => guard(() => entries.get(key)?.revision === expected && (write(key, owner), true)),
  };
  return { keys, entries, setDown: (value: boolean) => void (down = value) };
};

const replyOf = (node: string): SubmitReply => ({ messageId: `M${node}`, node, tenant: "default", accepted: ["x@remote.test"], refused: [], dueAt: 1, duplicate: false });

const claimOn = (nodeId: string, keys: ApiKeys, askOwner: IdempotencyDeps["askOwner"]) =>
  Effect.runPromise(
    makeIdempotency({ nodeId, keys, askOwner }).claim("default", "k").pipe(
      Effect.match({ onSuccess: (claim) => ({ claim }), onFailure: (error) => ({ error: { code: error.code, message: error.message } }) }),
    ),
  );

test("the first node to claim a key commits; another gets the owner's recorded reply", async () => {
  const { keys, entries } = memoryKeys();
  const never: IdempotencyDeps["askOwner"] = () => Effect.die("not asked");
  assert.deepEqual(await claimOn("a", keys, never), { claim: { _tag: "Mine" } });
  const asked: string[] = [];
  const b = await claimOn("b", keys, (owner) => (asked.push(owner), Effect.succeed(replyOf(owner))));
  assert.deepEqual(b, { claim: { _tag: "Answered", reply: replyOf("a") } });
  assert.deepEqual(asked, ["a"]);
  assert.equal([...entries.values()][0]!.owner, "a", "the claim is unchanged");
});

test("an owner that recorded nothing is taken over; one that does not answer makes the submit Unavailable", async () => {
  const { keys, entries } = memoryKeys();
  await claimOn("a", keys, () => Effect.die("not asked"));
  assert.deepEqual(await claimOn("b", keys, () => Effect.succeed(undefined)), { claim: { _tag: "Mine" } });
  assert.equal([...entries.values()][0]!.owner, "b");
  const c = await claimOn("c", keys, (owner) => Effect.fail(new OwnerUnreachable({ owner, detail: "no responders" })));
  assert.equal("error" in c && c.error.code, "Unavailable");
  assert.equal([...entries.values()][0]!.owner, "b", "nothing taken over from a node that may hold the message");
});

test("two nodes taking over one claim at once: only the one whose compare-and-set lands commits", async () => {
  const { keys } = memoryKeys();
  await claimOn("a", keys, () => Effect.die("not asked"));
  // B's ask of A is slow; meanwhile C takes the key over and commits. B's write over the
  // revision it read is refused, so it reads again and asks C, which has the reply.
  let bAsks = 0;
  let cDone!: () => void;
  const cCommitted = new Promise<void>((resolve) => (cDone = resolve));
  const b = claimOn("b", keys, (owner) =>
    owner === "a" ? Effect.andThen(Effect.promise(() => cCommitted), () => (bAsks++, Effect.succeed(undefined))) : (bAsks++, Effect.succeed(replyOf(owner))));
  const c = claimOn("c", keys, () => Effect.succeed(undefined));
  await c;
  cDone();
  assert.deepEqual(await c, { claim: { _tag: "Mine" } });
  assert.deepEqual(await b, { claim: { _tag: "Answered", reply: replyOf("c") } });
  assert.equal(bAsks, 2);
});

test("a claim this node left earlier (no record, no commit under way here) is written again and committed", async () => {
  const { keys, entries } = memoryKeys();
  await claimOn("a", keys, () => Effect.die("not asked"));
  const before = [...entries.values()][0]!.revision;
  assert.deepEqual(await claimOn("a", keys, () => Effect.die("a does not ask itself")), { claim: { _tag: "Mine" } });
  assert.ok([...entries.values()][0]!.revision > before, "the revision others read moved on");
});

test("while the bucket does not answer, a keyed submit is Unavailable", async () => {
  const { keys, setDown } = memoryKeys();
  setDown(true);
  const a = await claimOn("a", keys, () => Effect.die("not asked"));
  assert.equal("error" in a && a.error.code, "Unavailable");
  assert.match("error" in a ? a.error.message : "", /idempotency keys cannot be checked now/);
});
