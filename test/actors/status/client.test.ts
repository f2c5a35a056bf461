// The asker's side of the status lookup, on the real NATS at 127.0.0.1:4222, against nodes
// that answer by hand: a message is NotFound only when every node that answered said it
// does not hold it; when one failed to say (its reply was too large, it broke), the lookup
// is Unavailable with why, since that node may hold the message.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { Effect } from "effect";
import { connect, type NatsConnection, type Subscription } from "@nats-io/transport-node";
import { lookupStatus } from "../../../actors/status/client.ts";
import { makeSubjects } from "../../../protocol/subjects.ts";
import { encodeFrame } from "../../../protocol/wire.ts";

let nc: NatsConnection;
const subscriptions: Subscription[] = [];

before(async () => {
  nc = await connect({ servers: ["nats://127.0.0.1:4222"], name: "tern-test-status-client" });
});

after(async () => {
  for (const subscription of subscriptions) subscription.unsubscribe();
  await nc.drain();
});

/** A node of the cluster that answers every lookup with `frame`. */
const node = async (subject: string, frame: unknown) => {
  subscriptions.push(nc.subscribe(subject, { callback: (_error, msg) => void msg.respond(encodeFrame(frame)) }));
  await nc.flush();
};

const lookup = (subjects: ReturnType<typeof makeSubjects>) =>
  Effect.runPromise(Effect.flip(lookupStatus(nc, subjects, { messageId: "0MISSING" }, { timeoutMs: 3_000, stallMs: 300 })));

test("every node says it does not hold the message: NotFound, with how many said so", async () => {
  const subjects = makeSubjects(`t${randomBytes(5).toString("hex")}`);
  await node(subjects.statusLookup, { ok: true, value: { _tag: "NotHere", node: "a" } });
  await node(subjects.statusLookup, { ok: true, value: { _tag: "NotHere", node: "b" } });
  const error = await lookup(subjects);
  assert.equal(error._tag, "NotFound");
  assert.equal(error._tag === "NotFound" && error.nodesAsked, 2);
});

test("one node failed to answer while the others do not hold it: Unavailable with its reason, not NotFound", async () => {
  const subjects = makeSubjects(`t${randomBytes(5).toString("hex")}`);
  await node(subjects.statusLookup, { ok: true, value: { _tag: "NotHere", node: "a" } });
  await node(subjects.statusLookup, { ok: false, internal: "the reply of 2000000 bytes is larger than NATS takes (1044480)" });
  const error = await lookup(subjects);
  assert.equal(error._tag, "Unavailable");
  assert.match(error._tag === "Unavailable" ? error.detail : "", /larger than NATS takes/);
});
