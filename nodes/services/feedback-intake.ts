// The intake the SMTP listener hands bounces and feedback reports to
// (actors/feedback/intake.ts): messages are looked up through the cluster-wide status
// lookup, events go to this node's outbox.
import { Effect } from "effect";
import { Counter } from "prom-client";
import { loadRules, makeClassifier } from "../../actors/delivery/classify.ts";
import { makeFeedbackIntake, RecordFailed, type FeedbackIntake } from "../../actors/feedback/intake.ts";
import { ConfigError } from "../config.ts";
import { Config, Log, Metrics } from "./core.ts";
import { Feedback } from "./feedback.ts";
import { MessageStatus } from "./status.ts";
import { EventOutbox } from "./storage.ts";

/**
 * The intake the SMTP listener hands reports to (undefined when feedback is off), counting
 * each in `tern_feedback_reports_total{kind,result}`. It classifies bounces with the same
 * rules as delivery (`delivery.bounceRulesFile`).
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
  return makeFeedbackIntake({
    config: { bounceDomain: config.feedback.bounceDomain, fblAddresses: config.feedback.fblAddresses },
    node: config.nodeId,
    tokens: feedback.tokens,
    lookup: status.statusOf,
    keepFinishedMs: config.status.keepFinishedMs,
    classify: makeClassifier(rules),
    record: (drafts) => Effect.tryPromise({ try: () => outbox.append(drafts), catch: (error) => new RecordFailed({ detail: String(error) }) }),
    observe: (kind, result) => reports.inc({ kind, result }),
    log,
  }) satisfies FeedbackIntake;
});
