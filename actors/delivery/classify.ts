// Bounce classification: every failure and deferral gets one category, so operators
// (and events, and metrics) can tell a bad address from a block or a full mailbox.
//
// A tagged failure says what happened by itself (DNS, TLS, a full mailbox…). A reply from
// the next hop (also the one a host refused the connection with) is read in this order of
// evidence, most trusted first:
//   1. the operator's rules file (regular expressions over the reply's line);
//   2. a specific enhanced status code (RFC 3463), e.g. 5.1.1, 5.2.2, 5.3.4;
//   3. built-in text patterns, because generic codes (x.0.0, x.7.0, x.7.1) are used for
//      anything from "rate limited" to "listed at Spamhaus";
//   4. the generic enhanced code's subject, then "other".
import { readFile } from "node:fs/promises";
import { Effect, Schema } from "effect";
import { BounceCategory, replyLine, subjectDetail, type RecipientResult, type Reply } from "../../protocol/delivery.ts";

/** One rule of the rules file: `{"match": "mailbox is full", "category": "quota"}`. */
const RuleFile = Schema.Array(
  Schema.Struct({
    /** A JavaScript regular expression, matched against the whole reply on one line (codes included). */
    match: Schema.String,
    /** Regular expression flags; default "i". */
    flags: Schema.optional(Schema.String),
    category: BounceCategory,
    /** Only replies of this class: "4" (deferrals) or "5" (bounces); default both. */
    class: Schema.optional(Schema.Literals(["4", "5"])),
  }),
);

export interface Rule {
  readonly pattern: RegExp;
  readonly category: BounceCategory;
  readonly class?: "4" | "5" | undefined;
}

/** The rules file could not be read, parsed, or has a bad regular expression. */
export class RulesFileError extends Schema.TaggedError<RulesFileError>()("RulesFileError", {
  path: Schema.String,
  detail: Schema.String,
}) {}

export const parseRules = (path: string, text: string): Effect.Effect<ReadonlyArray<Rule>, RulesFileError> =>
  Effect.gen(function* () {
    const json = yield* Effect.try({ try: () => JSON.parse(text) as unknown, catch: (e) => new RulesFileError({ path, detail: String(e) }) });
    const rules = yield* Schema.decodeUnknownEffect(RuleFile)(json).pipe(Effect.mapError((e) => new RulesFileError({ path, detail: e.message })));
    return yield* Effect.forEach(rules, (rule, n) =>
      Effect.try({
        try: (): Rule => ({ pattern: new RegExp(rule.match, rule.flags ?? "i"), category: rule.category, class: rule.class }),
        catch: (e) => new RulesFileError({ path, detail: `rule ${n}: ${String(e)}` }),
      }),
    );
  });

export const loadRules = (path: string): Effect.Effect<ReadonlyArray<Rule>, RulesFileError> =>
  Effect.tryPromise({ try: () => readFile(path, "utf8"), catch: (e) => new RulesFileError({ path, detail: String(e) }) }).pipe(
    Effect.flatMap((text) => parseRules(path, text)),
  );

/** Enhanced codes whose subject.detail says exactly what happened. */
const SPECIFIC: Readonly<Record<string, BounceCategory>> = {
  "1.1": "bad-mailbox", // bad destination mailbox address
  "1.3": "bad-mailbox", // bad destination mailbox address syntax
  "1.6": "bad-mailbox", // destination mailbox has moved
  "2.1": "bad-mailbox", // mailbox disabled
  "1.2": "bad-domain", // bad destination system address
  "1.10": "bad-domain", // null MX (RFC 7505)
  "4.4": "bad-domain", // unable to route
  "2.2": "quota", // mailbox full
  "3.1": "quota", // mail system full
  "2.3": "too-large", // message length exceeds administrative limit
  "3.4": "too-large", // message too big for system
  "4.3": "dns", // directory server failure
  "4.5": "rate-limited", // mail system congestion
  "5.3": "rate-limited", // too many recipients
  "7.4": "tls", // security features not supported
  "7.5": "tls", // cryptographic failure
  "7.10": "tls", // encryption needed
  "7.11": "tls", // encryption required for requested authentication mechanism
  "7.28": "rate-limited", // mail flood detected (Gmail: unusual rate)
};

/**
 * Specific codes that some hosts use for something else, so their wording is read first:
 * Microsoft 365 answers an unknown recipient with 5.1.10 (RESOLVER.ADR.RecipientNotFound),
 * RFC 7505's null MX code.
 */
const AMBIGUOUS = new Set(["1.10"]);

/** What the subject alone suggests, for generic details such as 5.7.1 or 5.2.0. */
const BY_SUBJECT: Readonly<Record<string, BounceCategory>> = { "1": "bad-mailbox", "7": "policy" };

/** Phrases providers use, most specific first. */
const BUILT_IN: ReadonlyArray<Rule> = [
  { pattern: /rate.?limit|too many (messages|mails|emails|connections)|throttl|slow down|unusual rate/i, category: "rate-limited" },
  { pattern: /over ?quota|quota exceeded|(mailbox|inbox|disk|storage) (is )?full|insufficient (system )?storage|exceeded (its|the) storage/i, category: "quota" },
  { pattern: /(message|mail) (size|is too (big|large))|size (limit|exceeds)|too large/i, category: "too-large" },
  { pattern: /no such (user|mailbox|recipient)|(user|mailbox|recipient|address)( \S+)? (is )?(unknown|not found|does not exist|doesn't exist|invalid|disabled|unavailable)|unknown (user|recipient)|undeliverable address/i, category: "bad-mailbox" },
  { pattern: /spam|blocked|block ?list|blacklist|listed (at|on|in|by)|reputation|dmarc|\bspf\b|dkim|not authori[sz]ed|policy/i, category: "policy" },
  { pattern: /starttls|\btls\b|encryption|certificate/i, category: "tls" },
  { pattern: /domain (not found|does not exist)|host (or domain name )?not found|nxdomain|no mx/i, category: "bad-domain" },
];

const GENERIC_DETAILS = new Set(["0", "1"]);

export type Classifier = (result: RecipientResult) => BounceCategory;

export const makeClassifier = (rules: ReadonlyArray<Rule> = []): Classifier => {
  const classifyReply = replyClassifier(rules);
  return (result) => {
    switch (result._tag) {
      case "Reply":
        return classifyReply(result);
      // A host that refused the connection in its greeting said why ("too many connections", "blocked").
      case "ConnectionFailed":
      case "ProtocolError":
        return result.reply ? classifyReply(result.reply) : "other";
      // A later bounce quotes the remote host's reply (or stands for it with its status).
      case "AsyncBounce":
        return classifyReply(result.reply);
      case "TlsFailed":
        return "tls";
      case "DnsTemporary":
        return "dns";
      case "DnsPermanent":
        return "bad-domain";
      case "OverQuota":
        return "quota";
      case "UnknownUser":
        return "bad-mailbox";
      case "TooLarge":
        return "too-large";
      // The site's own queue is too long for its pace: hold the destination like a host that rate limits.
      case "QueueWaitExceeded":
      // Paused after the site's own throttling reply.
      case "BackedOff":
        return "rate-limited";
      // Our own rate limits: the address is warming up, or a reputation threshold holds the
      // sender domain or source address (neither holds the destination's queue, see outcome.ts).
      case "WarmupCap":
      case "ReputationHold":
        return "rate-limited";
      // Our own list refused it: a policy, and not a bounce category the list reacts to (no loop).
      case "Suppressed":
        return "policy";
      // An operator's hold: nothing was sent, nothing about the destination was learned.
      case "OperatorHold":
      case "Stored":
      case "Timeout":
      case "ConversionFailed":
      case "MailboxUnavailable":
      case "Internal":
      case "Returned":
        return "other";
    }
  };
};

const replyClassifier = (rules: ReadonlyArray<Rule>) => (reply: Reply): BounceCategory => {
  const line = replyLine(reply);
  const matching = (list: ReadonlyArray<Rule>) => list.find((rule) => (!rule.class || classOf(reply) === rule.class) && rule.pattern.test(line));
  const operator = matching(rules);
  if (operator) return operator.category;
  const enhanced = reply.enhanced ? subjectDetail(reply.enhanced) : undefined;
  const [subject, detail] = enhanced ? enhanced.split(".") : [];
  if (enhanced && SPECIFIC[enhanced] && !AMBIGUOUS.has(enhanced)) return SPECIFIC[enhanced];
  const phrase = matching(BUILT_IN);
  if (phrase) return phrase.category;
  if (enhanced && SPECIFIC[enhanced]) return SPECIFIC[enhanced];
  if (subject && detail && GENERIC_DETAILS.has(detail) && BY_SUBJECT[subject]) return BY_SUBJECT[subject];
  if (subject === "7") return "policy";
  return "other";
};

const classOf = (reply: Reply): "4" | "5" | undefined => {
  const first = String(reply.code)[0];
  return first === "4" || first === "5" ? first : undefined;
};
