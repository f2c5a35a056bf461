// What a node tells every other node of its cluster about a login it took
// (cluster/login-reports.ts): one attempt counted as failed, or one success. The peers
// merge it into their own counts (actors/users/login-throttle.ts).
import { Schema } from "effect";

const Fields = {
  /** The reporting node: a node skips its own reports, which NATS echoes back to it. */
  node: Schema.String,
  /** "smtp", "pop3" or "imap": each protocol has its own per-IP limits. */
  protocol: Schema.String,
  /** The user address, or the lower-cased name when it matches no user. */
  account: Schema.String,
  ip: Schema.String,
};

const LoginFailedReport = Schema.TaggedStruct("LoginFailed", {
  ...Fields,
  /** Whether `account` is a user: names matching nobody are counted apart. */
  exists: Schema.Boolean,
});

const LoginSucceededReport = Schema.TaggedStruct("LoginSucceeded", {
  ...Fields,
  /** How long before the success its attempt was admitted (and counted as failed). */
  ageMs: Schema.Int.check(Schema.isGreaterThanOrEqualTo(0)),
});

export const LoginReport = Schema.Union([LoginFailedReport, LoginSucceededReport]);
export type LoginReport = typeof LoginReport.Type;
