// Gathering the answers of every node to one request, over the real NATS at 127.0.0.1:4222:
// the gathering ends once each member answered, or, without a member list (or with a
// member that stays silent), once answers stop coming for the quiet period.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { gatherAnswers } from "../../../actors/runtime/gather.ts";

const QUIET_MS = 4_000;
let nc: NatsConnection;
const subject = `t.${randomBytes(5).toString("hex")}.ask`;

before(async () => {
  nc = await connect({ servers: ["nats://127.0.0.1:4222"], name: "tern-test-gather" });
  // Three nodes answer with their names; b a little later.
  for (const node of ["a", "b", "c"]) {
    nc.subscribe(subject, { callback: (_error, msg) => void setTimeout(() => msg.respond(node), node === "b" ? 200 : 0) });
  }
  await nc.flush();
});

after(() => nc.drain());

const gather = async (members?: Promise<ReadonlySet<string> | undefined>) => {
  const started = Date.now();
  const answers = await gatherAnswers(nc, subject, new Uint8Array(), (data) => new TextDecoder().decode(data), (node) => node, { timeoutMs: 20_000, quietMs: QUIET_MS, members });
  return { nodes: [...answers].sort(), tookMs: Date.now() - started };
};

test("once every member answered, the gathering ends without waiting for the quiet period", async () => {
  const { nodes, tookMs } = await gather(Promise.resolve(new Set(["a", "b", "c"])));
  assert.deepEqual(nodes, ["a", "b", "c"]);
  assert.ok(tookMs < QUIET_MS / 2, `took ${tookMs} ms`);
});

test("a member list that arrives after the answers ends the gathering when it arrives", async () => {
  const late = new Promise<ReadonlySet<string>>((resolve) => setTimeout(() => resolve(new Set(["a", "b", "c"])), 600));
  const { nodes, tookMs } = await gather(late);
  assert.deepEqual(nodes, ["a", "b", "c"]);
  assert.ok(tookMs >= 600 && tookMs < QUIET_MS / 2, `took ${tookMs} ms`);
});

test("without a member list, or with a member that stays silent, the quiet period ends it", async () => {
  for (const members of [undefined, Promise.resolve(undefined), Promise.resolve(new Set(["a", "b", "c", "gone"]))]) {
    const { nodes, tookMs } = await gather(members);
    assert.deepEqual(nodes, ["a", "b", "c"]);
    assert.ok(tookMs >= QUIET_MS, `took ${tookMs} ms`);
  }
});
