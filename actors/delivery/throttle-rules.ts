// Throttle rules: which replies of a receiving site mean "slow down" or "you have a
// reputation problem", and what the site (for the source address that got the reply) does
// then: `slow` steps it down one level, `pause` holds it for a while (actors/delivery/throttle.ts).
//
// A rule matches on the reply code, the enhanced status code (RFC 3463) and/or a regular
// expression over the whole reply on one line (codes included), every part it gives.
// The starter table covers the large providers' documented replies; the operator's rules
// file (`delivery.throttleRulesFile`) extends it: a rule with a starter's name changes that
// starter (the fields it gives replace the starter's), any other rule is tried before the
// starters. `ignore` says a matching reply is no throttling at all (greylisting, one
// recipient receiving too fast), so no later rule reads it.
import { readFile } from "node:fs/promises";
import { Cause, Effect, Exit, Schema } from "effect";
import { replyLine, type Reply } from "../../protocol/delivery.ts";

export type ThrottleAction = { readonly _tag: "slow" } | { readonly _tag: "pause"; readonly ms: number } | { readonly _tag: "ignore" };

export interface ThrottleRule {
  /** Names the rule in events, logs and the `tern_throttle_replies_total{rule}` counter. */
  readonly name: string;
  readonly code?: number | undefined;
  /** "4.7.28": the reply's enhanced code exactly. */
  readonly enhanced?: string | undefined;
  readonly pattern?: RegExp | undefined;
  readonly action: ThrottleAction;
}

/** A pause for this long when a rule of the file says `pause` without `pauseMs`. */
export const DEFAULT_PAUSE_MS = 15 * 60_000;

const slow = { _tag: "slow" } as const;
const ignore = { _tag: "ignore" } as const;
const pause = (minutes: number) => ({ _tag: "pause", ms: minutes * 60_000 }) as const;

/**
 * Replies the large providers document, most specific first. Pauses are for reputation
 * ("your IP is rate limited due to its reputation", complaints); plain rate limits slow.
 */
export const starterThrottleRules: ReadonlyArray<ThrottleRule> = [
  // Not the site: greylisting is per sender and recipient, and Gmail's 4.2.1 is one mailbox receiving too fast.
  { name: "greylisting", pattern: /gr[ae]y-?list/i, action: ignore },
  { name: "recipient-rate", enhanced: "4.2.1", action: ignore },
  // Gmail: "421-4.7.28 ... Our system has detected an unusual rate of unsolicited mail originating from your IP address".
  { name: "gmail-unusual-rate", enhanced: "4.7.28", action: pause(15) },
  // Gmail: "421-4.7.0 ... this message is suspicious due to the very low reputation of the sending IP address".
  { name: "gmail-low-reputation", enhanced: "4.7.0", pattern: /low reputation/i, action: pause(30) },
  // Gmail: "421-4.7.0 ... has been temporarily rate limited", "450-4.2.1"-free rate limits.
  { name: "gmail-rate-limited", enhanced: "4.7.0", pattern: /rate.?limit/i, action: slow },
  // Microsoft: "451 4.7.650 The mail server [IP] has been temporarily rate limited due to IP reputation".
  { name: "microsoft-ip-reputation", enhanced: "4.7.650", action: pause(30) },
  // Microsoft: "451 4.7.500 Server busy. Please try again later from [IP]. (S77719)".
  { name: "microsoft-server-busy", enhanced: "4.7.500", action: slow },
  // Yahoo: "421 4.7.0 [TSS04] Messages from IP temporarily deferred due to unexpected volume or user complaints".
  { name: "yahoo-tss04", pattern: /\[TSS04\]/, action: pause(30) },
  // Yahoo: "[TS01]"/"[TS02]" deferred for complaints; "[TS03]" all messages deferred, retrying will not succeed soon.
  { name: "yahoo-ts01", pattern: /\[TS0[12]\]/, action: pause(60) },
  { name: "yahoo-ts03", pattern: /\[TS03\]/, action: pause(240) },
  // Any site: "421 4.7.0 Too many connections from your IP", "421 4.4.5 Too many concurrent SMTP connections".
  { name: "too-many-connections", pattern: /^4\d\d .*(too many (concurrent )?(smtp )?connections|connection (limit|rate))/i, action: slow },
  { name: "rate-limited", pattern: /^4\d\d .*(rate.?limit|too many messages|sending rate|slow down|throttl|unusual rate)/i, action: slow },
  // "451 4.7.1 Please try again later" (after the greylisting rule: that says "try again later" too).
  { name: "try-again-later", enhanced: "4.7.1", pattern: /try (again )?later/i, action: slow },
];

/** The rule a reply matches first, or undefined. Rules never match a 2xx or 3xx reply. */
export type ThrottleMatcher = (reply: Reply) => ThrottleRule | undefined;

const matches = (rule: ThrottleRule, reply: Reply, line: string) =>
  (rule.code === undefined || rule.code === reply.code) &&
  (rule.enhanced === undefined || rule.enhanced === reply.enhanced) &&
  (rule.pattern === undefined || rule.pattern.test(line));

export const makeThrottleMatcher = (rules: ReadonlyArray<ThrottleRule>): ThrottleMatcher => (reply) => {
  if (reply.code < 400) return undefined;
  const line = replyLine(reply);
  return rules.find((rule) => matches(rule, reply, line));
};

// ---- the rules file ----

const Positive = Schema.Int.check(Schema.isGreaterThanOrEqualTo(1));

/** One rule of the file: `{"name": "acme-slow", "code": 421, "match": "slow down", "action": "slow"}`. */
const RuleEntry = Schema.Struct({
  name: Schema.String.check(Schema.makeFilter((s: string) => /^[A-Za-z0-9_-]+$/.test(s) || "letters, digits, '-' and '_' only")),
  code: Schema.optional(Schema.Int.check(Schema.isBetween({ minimum: 400, maximum: 599 }))),
  enhanced: Schema.optional(Schema.String.check(Schema.makeFilter((s: string) => /^[45]\.\d{1,3}\.\d{1,3}$/.test(s) || "expected an enhanced status code such as 4.7.28"))),
  /** A JavaScript regular expression over the reply on one line, codes included. */
  match: Schema.optional(Schema.String),
  /** Regular expression flags; default "i". */
  flags: Schema.optional(Schema.String),
  action: Schema.optional(Schema.Literals(["slow", "pause", "ignore"])),
  pauseMs: Schema.optional(Positive),
});
type RuleEntry = typeof RuleEntry.Type;

const RuleFile = Schema.Array(RuleEntry);

/** The rules file could not be read or parsed, or a rule is wrong; `detail` names the rule and field. */
export class ThrottleRulesError extends Schema.TaggedError<ThrottleRulesError>()("ThrottleRulesError", {
  path: Schema.String,
  detail: Schema.String,
}) {}

/** Schema issues as "[1].pauseMs = -5: Expected …", one per line. */
const describeIssues = (message: string, raw: unknown): string => {
  const lines = message.split("\n").map((l) => l.trim()).filter(Boolean);
  const described: string[] = [];
  for (let i = 0; i < lines.length; i++) {
    const problem = lines[i]!;
    const where = lines[i + 1]?.startsWith("at ") ? lines[++i]!.slice(3) : "";
    const path = [...where.matchAll(/\["([^"]*)"\]|\[(\d+)\]/g)].map((m) => m[1] ?? Number(m[2]));
    const value = path.reduce<unknown>((at, key) => (at as Record<string | number, unknown> | undefined)?.[key], raw);
    const name = path.map((k) => (typeof k === "number" ? `[${k}]` : `.${k}`)).join("");
    described.push(`${name || "(root)"} = ${JSON.stringify(value)}: ${problem}`);
  }
  return described.join("; ");
};

const actionOf = (entry: RuleEntry, inherited: ThrottleAction | undefined): ThrottleAction | undefined => {
  if (entry.action === "slow") return slow;
  if (entry.action === "ignore") return ignore;
  if (entry.action === "pause") return { _tag: "pause", ms: entry.pauseMs ?? (inherited?._tag === "pause" ? inherited.ms : DEFAULT_PAUSE_MS) };
  // No action given: a starter's, with the file's pauseMs if it gives one.
  if (inherited?._tag === "pause" && entry.pauseMs !== undefined) return { _tag: "pause", ms: entry.pauseMs };
  return inherited;
};

/** One entry as a rule, over the starter of the same name if there is one; a string says what is wrong. */
const ruleOf = (entry: RuleEntry, starter: ThrottleRule | undefined, n: number): ThrottleRule | string => {
  const at = `[${n}] (${entry.name})`;
  let pattern = starter?.pattern;
  if (entry.match !== undefined) {
    try {
      pattern = new RegExp(entry.match, entry.flags ?? "i");
    } catch (error) {
      return `${at}.match: ${(error as Error).message}`;
    }
  }
  const action = actionOf(entry, starter?.action);
  if (action === undefined) return `${at}.action: missing (slow, pause or ignore)`;
  if (entry.pauseMs !== undefined && action._tag !== "pause") return `${at}.pauseMs: only for action "pause"`;
  const rule: ThrottleRule = { name: entry.name, code: entry.code ?? starter?.code, enhanced: entry.enhanced ?? starter?.enhanced, pattern, action };
  if (rule.code === undefined && rule.enhanced === undefined && rule.pattern === undefined) return `${at}: give code, enhanced or match (a rule must not match every reply)`;
  return rule;
};

/**
 * The starter table with the file's rules: new ones first (file order), then the starters,
 * each changed by the file's rule of its name.
 */
export const parseThrottleRules = (path: string, text: string): Effect.Effect<ReadonlyArray<ThrottleRule>, ThrottleRulesError> =>
  Effect.gen(function* () {
    const failed = (detail: string) => new ThrottleRulesError({ path, detail });
    const raw = yield* Effect.try({ try: () => JSON.parse(text) as unknown, catch: (e) => failed(`not JSON: ${(e as Error).message}`) });
    const decoded = Schema.decodeUnknownExit(RuleFile, { onExcessProperty: "error", errors: "all" })(raw);
    if (Exit.isFailure(decoded)) {
      const error = Cause.findErrorOption(decoded.cause);
      return yield* Effect.fail(failed(describeIssues(error._tag === "Some" ? error.value.message : Cause.pretty(decoded.cause), raw)));
    }
    const entries = decoded.value;
    const names = entries.map((entry) => entry.name);
    const twice = names.find((name, n) => names.indexOf(name) !== n);
    if (twice !== undefined) return yield* Effect.fail(failed(`rule name ${JSON.stringify(twice)} appears twice`));
    const starters = new Map(starterThrottleRules.map((rule) => [rule.name, rule]));
    const rules = new Map<string, ThrottleRule>();
    for (const [n, entry] of entries.entries()) {
      const rule = ruleOf(entry, starters.get(entry.name), n);
      if (typeof rule === "string") return yield* Effect.fail(failed(rule));
      rules.set(entry.name, rule);
    }
    const added = entries.filter((entry) => !starters.has(entry.name)).map((entry) => rules.get(entry.name)!);
    return [...added, ...starterThrottleRules.map((starter) => rules.get(starter.name) ?? starter)];
  });

export const loadThrottleRules = (path: string): Effect.Effect<ReadonlyArray<ThrottleRule>, ThrottleRulesError> =>
  Effect.tryPromise({ try: () => readFile(path, "utf8"), catch: (e) => new ThrottleRulesError({ path, detail: (e as Error).message }) }).pipe(
    Effect.flatMap((text) => parseThrottleRules(path, text)),
  );
