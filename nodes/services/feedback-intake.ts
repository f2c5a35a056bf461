// The intake the SMTP listener hands bounces and feedback reports to
// (actors/feedback/intake.ts): messages are looked up through the cluster-wide status
// lookup, events go to this node's outbox, and what they report counts in the reputation
// figures of the node that sent the message: this node's own Reputation, or another's over
// NATS (actors/delivery/reputation-count.ts), counted here when that one does not answer.
import { randomUUID } from "node:crypto";
import { Effect, FiberSet } from "effect";
import { Counter } from "prom-client";
import { loadRules, makeClassifier } from "../../actors/delivery/classify.ts";
import { poolAddressesOf } from "../../actors/delivery/pools.ts";
import { countLater, knownKeys, sendReputationCount, type LaterOutcome } from "../../actors/delivery/reputation-count.ts";
import type { OutcomeKeys } from "../../actors/delivery/reputation.ts";
import { makeFeedbackIntake, RecordFailed, type FeedbackIntake } from "../../actors/feedback/intake.ts";
import { ConfigError } from "../config.ts";
import { Nats } from "./cluster.ts";
import { Config, Log, Metrics } from "./core.ts";
import { Feedback } from "./feedback.ts";
import { Reputation } from "./reputation.ts";
import { MessageStatus } from "./status.ts";
import { EventOutbox } from "./storage.ts";

/**
 * How a count goes to the node that sent the message: three tries of 5 s, a second apart,
 * before this node counts it itself (about 17 s when that node is slow, 2 s when it is gone).
 */
const COUNT_SENDING = { timeoutMs: 5_000, tries: 3, pauseMs: 1_000 };

/**
 * The intake the SMTP listener hands reports to (undefined when feedback is off), counting
 * each in `tern_feedback_reports_total{kind,result}`. It classifies bounces with the same
 * rules as delivery (`delivery.bounceRulesFile`). Counts sent to other nodes are fibers of
 * the listener's scope.
 */
export const feedbackIntake = Effect.gen(function* () {
  const config = yield* Config;
  const feedback = yield* Feedback;
  if (feedback === undefined) return undefined;
  const log = yield* Log;
  const { registry } = yield* Metrics;
  const outbox = yield* EventOutbox;
  const status = yield* MessageStatus;
  const rules = config.delivery.bounceRulesFile
    ? yield* loadRules(config.delivery.bounceRulesFile).pipe(Effect.mapError((e) => new ConfigError(`delivery.bounceRulesFile ${e.path}: ${e.detail}`)))
    : [];
  const reports = new Counter<"kind" | "result">({
    name: "tern_feedback_reports_total",
    help: "Bounces and feedback reports received, by kind (bounce, complaint) and what came of them (matched, unmatched, forged, ignored, failed)",
    labelNames: ["kind", "result"],
    registers: [registry],
  });
  for (const kind of ["bounce", "complaint"]) for (const result of ["matched", "unmatched", "forged", "ignored", "failed"]) reports.inc({ kind, result }, 0);
  const reputation = yield* Reputation;
  const { nc, subjects } = yield* Nats;
  const fork = yield* FiberSet.runtime(yield* FiberSet.make())<never>();
  // Counted here (the message was ours, or its sender does not answer): only under keys this
  // node knows, as a count arriving over NATS is, so metric labels stay bounded.
  const known = { sources: poolAddressesOf(config.delivery.pools), providers: config.delivery.providers };
  const countHere = (about: OutcomeKeys, outcome: LaterOutcome) => countLater(reputation, knownKeys(about, known), outcome);
  const count = (node: string, about: OutcomeKeys, outcome: LaterOutcome) => {
    if (node === config.nodeId) return countHere(about, outcome);
    fork(
      sendReputationCount(nc, subjects, node, { id: randomUUID(), about, outcome }, COUNT_SENDING).pipe(
        Effect.catch((error) =>
          Effect.sync(() => {
            log("feedback.count.local", { level: "warn", sentBy: node, outcome: outcome._tag, error: error.detail });
            countHere(about, outcome);
          }),
        ),
      ),
    );
  };
  return makeFeedbackIntake({
    config: { bounceDomain: config.feedback.bounceDomain, fblAddresses: config.feedback.fblAddresses },
    node: config.nodeId,
    tokens: feedback.tokens,
    lookup: status.statusOf,
    keepFinishedMs: config.status.keepFinishedMs,
    classify: makeClassifier(rules),
    keySources: { poolAddresses: poolAddressesOf(config.delivery.pools), providers: config.delivery.providers },
    count,
    record: (drafts) => Effect.tryPromise({ try: () => outbox.append(drafts), catch: (error) => new RecordFailed({ detail: String(error) }) }),
    observe: (kind, result) => reports.inc({ kind, result }),
    log,
  }) satisfies FeedbackIntake;
});
