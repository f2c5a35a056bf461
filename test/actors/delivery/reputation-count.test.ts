// Counts for the node that sent a message (actors/delivery/reputation-count.ts), on the real
// NATS at 127.0.0.1:4222: a complaint and a bounce sent to a node are counted in its
// figures under the keys given, a source address or provider it does not know is left out
// (its labels stay bounded), and a node that does not answer fails the send, typed.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { Effect } from "effect";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { starterProviders } from "../../../actors/delivery/providers.ts";
import { sendReputationCount, serveReputationCounts } from "../../../actors/delivery/reputation-count.ts";
import { makeReputation, type Reputation } from "../../../actors/delivery/reputation.ts";
import { makeSubjects } from "../../../protocol/subjects.ts";

const subjects = makeSubjects(`t${randomBytes(5).toString("hex")}`);
let nc: NatsConnection;

before(async () => {
  nc = await connect({ servers: ["nats://127.0.0.1:4222"], name: "tern-test-reputation-count" });
});

after(async () => {
  await nc.drain();
});

const figuresOf = (reputation: Reputation) => reputation.figures("1h").map(({ dimension, key, counts }) => [dimension, key, counts.complained, counts.bounced] as const);

test("a node counts what another node's intake sends it; keys it does not know are left out; a node that does not answer fails the send", () =>
  Effect.runPromise(
    Effect.scoped(
      Effect.gen(function* () {
        const reputation = yield* makeReputation({ maxSenderDomains: 10, thresholds: [], providers: starterProviders, gapMs: 1_000 });
        yield* serveReputationCounts(nc, subjects, { nodeId: "a", reputation, known: { sources: new Set(["198.51.100.1"]), providers: starterProviders } });

        yield* sendReputationCount(nc, subjects, "a", { senderDomain: "shop.example", source: "198.51.100.1", provider: "gmail" }, { _tag: "complained" }, 2_000);
        yield* sendReputationCount(nc, subjects, "a", { senderDomain: "shop.example", source: "203.0.113.9", provider: "nosuchprovider" }, { _tag: "bounced", category: "bad-mailbox" }, 2_000);
        yield* sendReputationCount(nc, subjects, "a", { senderDomain: "shop.example", source: "default", provider: "other" }, { _tag: "bounced", category: "quota" }, 2_000);

        assert.deepEqual(figuresOf(reputation), [
          ["source", "198.51.100.1", 1, 0],
          ["source", "default", 0, 1],
          ["sender_domain", "shop.example", 1, 2],
          ["provider", "gmail", 1, 0],
          ["provider", "other", 0, 1],
        ]);
        assert.deepEqual(reputation.figures("24h", "sender_domain")[0]!.counts.bounces, { "bad-mailbox": 1, quota: 1 });

        const away = yield* Effect.flip(sendReputationCount(nc, subjects, "z", { senderDomain: "shop.example" }, { _tag: "complained" }, 500));
        assert.equal(away._tag, "RemoteUnavailable");
      }),
    ),
  ));
