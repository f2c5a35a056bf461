// Counts for the node that sent a message (actors/delivery/reputation-count.ts), on the real
// NATS at 127.0.0.1:4222: a complaint and a bounce sent to a node are counted in its
// figures under the keys given, a source address or provider it does not know is left out
// (its labels stay bounded), and a node that does not answer fails the send, typed, after
// its tries; a count whose answer was lost is tried again and counted once.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { Effect } from "effect";
import { connect, type Msg, type NatsConnection } from "@nats-io/transport-node";
import { starterProviders } from "../../../actors/delivery/providers.ts";
import { sendReputationCount, serveReputationCounts, type CountForNode } from "../../../actors/delivery/reputation-count.ts";
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

let ids = 0;
const countOf = (about: CountForNode["about"], outcome: CountForNode["outcome"]): CountForNode => ({ id: `c${ids++}`, about, outcome });
const once = (timeoutMs: number) => ({ timeoutMs, tries: 1, pauseMs: 0 });

const figuresOf = (reputation: Reputation) => reputation.figures("1h").map(({ dimension, key, counts }) => [dimension, key, counts.complained, counts.bounced] as const);

test("a node counts what another node's intake sends it; keys it does not know are left out; a node that does not answer fails the send", () =>
  Effect.runPromise(
    Effect.scoped(
      Effect.gen(function* () {
        const reputation = yield* makeReputation({ maxSenderDomains: 10, thresholds: [], providers: starterProviders, gapMs: 1_000 });
        yield* serveReputationCounts(nc, subjects, { nodeId: "a", reputation, known: { sources: new Set(["198.51.100.1"]), providers: starterProviders } });

        yield* sendReputationCount(nc, subjects, "a", countOf({ senderDomain: "shop.example", source: "198.51.100.1", provider: "gmail" }, { _tag: "complained" }), once(2_000));
        yield* sendReputationCount(nc, subjects, "a", countOf({ senderDomain: "shop.example", source: "203.0.113.9", provider: "nosuchprovider" }, { _tag: "bounced", category: "bad-mailbox" }), once(2_000));
        yield* sendReputationCount(nc, subjects, "a", countOf({ senderDomain: "shop.example", source: "default", provider: "other" }, { _tag: "bounced", category: "quota" }), once(2_000));

        assert.deepEqual(figuresOf(reputation), [
          ["source", "198.51.100.1", 1, 0],
          ["source", "default", 0, 1],
          ["sender_domain", "shop.example", 1, 2],
          ["provider", "gmail", 1, 0],
          ["provider", "other", 0, 1],
        ]);
        assert.deepEqual(reputation.figures("24h", "sender_domain")[0]!.counts.bounces, { "bad-mailbox": 1, quota: 1 });

        const away = yield* Effect.flip(sendReputationCount(nc, subjects, "z", countOf({ senderDomain: "shop.example" }, { _tag: "complained" }), once(500)));
        assert.equal(away._tag, "RemoteUnavailable");
      }),
    ),
  ));

test("a count whose answer is lost is tried again with its id and counted once; a node that never answers gets every try", () =>
  Effect.runPromise(
    Effect.scoped(
      Effect.gen(function* () {
        const reputation = yield* makeReputation({ maxSenderDomains: 10, thresholds: [], providers: starterProviders, gapMs: 1_000 });
        yield* serveReputationCounts(nc, subjects, { nodeId: "b-behind", reputation, known: { sources: new Set(), providers: starterProviders } });
        // Node "b" is reached through a relay that passes each count on to the real server
        // and, the first time, throws the server's answer away: the count was made, the
        // sender heard nothing.
        let relayed = 0;
        const relay = nc.subscribe(subjects.reputationCount("b"), {
          callback: (_error, msg: Msg) => {
            const first = relayed++ === 0;
            void nc
              .request(subjects.reputationCount("b-behind"), msg.data, { timeout: 2_000 })
              .then((answer) => (first ? undefined : msg.respond(answer.data)))
              .catch(() => undefined); // the sender times out, as with any lost answer
          },
        });
        yield* Effect.addFinalizer(() => Effect.sync(() => relay.unsubscribe()));
        yield* Effect.promise(() => nc.flush());

        const sending = { timeoutMs: 300, tries: 3, pauseMs: 50 };
        yield* sendReputationCount(nc, subjects, "b", countOf({ senderDomain: "shop.example" }, { _tag: "complained" }), sending);
        assert.equal(relayed, 2, "tried again after the lost answer");
        assert.deepEqual(figuresOf(reputation), [["sender_domain", "shop.example", 1, 0]], "counted once");
        // A second count is a count of its own.
        yield* sendReputationCount(nc, subjects, "b", countOf({ senderDomain: "shop.example" }, { _tag: "complained" }), sending);
        assert.deepEqual(figuresOf(reputation), [["sender_domain", "shop.example", 2, 0]]);

        // Node "y" takes counts and never answers: each try reaches it, then the send fails.
        let heard = 0;
        const silent = nc.subscribe(subjects.reputationCount("y"), { callback: () => void heard++ });
        yield* Effect.addFinalizer(() => Effect.sync(() => silent.unsubscribe()));
        yield* Effect.promise(() => nc.flush());
        const unanswered = yield* Effect.flip(sendReputationCount(nc, subjects, "y", countOf({ senderDomain: "shop.example" }, { _tag: "complained" }), sending));
        assert.equal(unanswered._tag, "RemoteUnavailable");
        assert.equal(heard, 3);
      }),
    ),
  ));
