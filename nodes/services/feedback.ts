// Bounces and complaints that come back (actors/feedback/): the token key read at start,
// and what outbound mail gets from it (VERP return paths, X-Tern-Id, per-recipient
// entries). The intake reports go to is in ./feedback-intake.ts.
import { readFile } from "node:fs/promises";
import { Context, Effect, Layer } from "effect";
import { outboundMarks, type OutboundMarks } from "../../actors/feedback/marks.ts";
import { envelopeSenderOf, makeFeedbackTokens, type FeedbackTokens } from "../../actors/feedback/token.ts";
import type { QueueEntry } from "../../actors/queue/entry.ts";
import type { SecretSource } from "../../cluster/nats-auth.ts";
import { ConfigError } from "../config.ts";
import { Config, Log, starting } from "./core.ts";

export interface FeedbackShape {
  readonly tokens: FeedbackTokens;
  readonly marks: OutboundMarks;
  /** The envelope sender of a remote attempt (a VERP address when `feedback.verp` is on). */
  readonly envelopeSender: (entry: QueueEntry) => string;
}

/** A key shorter than this is refused: the mac is only as good as the key. */
const MIN_KEY_LENGTH = 16;

/** The keys in `source`, one per line (blank lines skipped), the first signing; ConfigError when unreadable or short. Never logged. */
const readKeys = async (source: SecretSource, env: NodeJS.ProcessEnv): Promise<ReadonlyArray<Uint8Array>> => {
  const where = "file" in source ? `file ${source.file}` : `environment variable ${source.env}`;
  const text =
    "file" in source
      ? await readFile(source.file, "utf8").catch((error: Error) => {
          throw new ConfigError(`invalid config: cannot read the feedback key from ${where}: ${error.message}`);
        })
      : (env[source.env] ?? "");
  const keys = text.split(/\r?\n/).map((line) => line.trim()).filter(Boolean);
  if (keys.length === 0) throw new ConfigError(`invalid config: the feedback key in ${where} is empty`);
  if (keys.some((key) => key.length < MIN_KEY_LENGTH)) throw new ConfigError(`invalid config: a feedback key in ${where} is shorter than ${MIN_KEY_LENGTH} characters`);
  return keys.map((key) => new TextEncoder().encode(key));
};

/** Undefined when feedback is off (no bounce domain, no feedback-loop address). */
export class Feedback extends Context.Service<Feedback, FeedbackShape | undefined>()("tern/Feedback") {
  static readonly layer = Layer.effect(
    Feedback,
    Effect.gen(function* () {
      const { feedback } = yield* Config;
      const log = yield* Log;
      if (feedback.key === undefined) return undefined;
      const source = feedback.key;
      const keys = yield* starting("feedback key", () => readKeys(source, process.env));
      const tokens = makeFeedbackTokens(keys);
      log("feedback.configured", { verp: feedback.verp, bounceDomain: feedback.bounceDomain, fblAddresses: feedback.fblAddresses, keys: keys.length });
      const bounceDomain = feedback.bounceDomain;
      return {
        tokens,
        marks: outboundMarks(tokens, feedback.verp),
        envelopeSender: (entry) => (bounceDomain === undefined ? entry.sender : envelopeSenderOf(tokens, feedback.verp, bounceDomain, entry)),
      } satisfies FeedbackShape;
    }),
  );
}
