// The node's login throttles, SMTP AUTH, POP3 and IMAP, over one record of accounts, and shared
// with every node of the cluster (cluster/login-reports.ts): one count whichever node a
// client tries.
import { Context, Effect, Layer } from "effect";
import { Counter } from "prom-client";
import { followLoginReports, publishLoginEvents, type LoginReportOutcome, type LoginReportsLink } from "../../cluster/login-reports.ts";
import { followNatsStatus } from "../../cluster/nats-status.ts";
import { makeLoginThrottle, type LoginThrottle } from "../../actors/users/login-throttle.ts";
import { Nats } from "./cluster.ts";
import { Config, Metrics } from "./core.ts";
import { LoginAccounts } from "./identity.ts";

export interface LoginThrottlesShape {
  readonly smtp: LoginThrottle;
  readonly pop3: LoginThrottle;
  readonly imap: LoginThrottle;
}

export class LoginThrottles extends Context.Service<LoginThrottles, LoginThrottlesShape>()("tern/LoginThrottles") {
  static readonly layer = Layer.effect(
    LoginThrottles,
    Effect.gen(function* () {
      const config = yield* Config;
      const accounts = yield* LoginAccounts;
      const { nc, subjects } = yield* Nats;
      const { registry } = yield* Metrics;
      const reports = new Counter<"outcome">({
        name: "tern_login_reports_total",
        help: "Login failures and successes shared with the other nodes: published, unsent (NATS away), merged from peers, malformed",
        labelNames: ["outcome"],
        registers: [registry],
      });
      for (const outcome of ["published", "unsent", "merged", "malformed"] satisfies LoginReportOutcome[]) reports.inc({ outcome }, 0);
      const status = yield* Effect.acquireRelease(
        Effect.sync(() => followNatsStatus(nc)),
        (status) => Effect.sync(() => status.stop()),
      );
      const link: LoginReportsLink = {
        nc,
        subject: subjects.loginReports,
        node: config.nodeId,
        connected: () => status.state()._tag === "Connected",
        observe: (outcome) => reports.inc({ outcome }),
      };
      const smtp = makeLoginThrottle(
        accounts,
        { windowMs: config.smtp.authFailureWindowMs, maxFailuresPerIp: config.smtp.maxAuthFailuresPerIp, maxFailuresPerAccountAndIp: config.smtp.maxAuthFailuresPerUserAndIp },
        { report: publishLoginEvents(link, "smtp") },
      );
      const pop3 = makeLoginThrottle(
        accounts,
        { windowMs: config.pop3.failedLoginWindowMs, maxFailuresPerIp: config.pop3.maxFailedLoginsPerIp, maxFailuresPerAccountAndIp: config.pop3.maxFailedLoginsPerUserAndIp },
        { report: publishLoginEvents(link, "pop3") },
      );
      const imap = makeLoginThrottle(
        accounts,
        { windowMs: config.imap.failedLoginWindowMs, maxFailuresPerIp: config.imap.maxFailedLoginsPerIp, maxFailuresPerAccountAndIp: config.imap.maxFailedLoginsPerUserAndIp },
        { report: publishLoginEvents(link, "imap") },
      );
      yield* Effect.acquireRelease(
        Effect.sync(() => followLoginReports(link, new Map([["smtp", smtp], ["pop3", pop3], ["imap", imap]]), accounts)),
        (subscription) => Effect.sync(() => subscription.unsubscribe()),
      );
      return { smtp, pop3, imap };
    }),
  );
}
