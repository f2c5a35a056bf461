// Login throttles shared by the nodes of a cluster over core NATS: every failure a node
// counts and every success it sees is published on `tern.<cluster>.logins.reports`, and
// every node merges what the others publish into its own counters
// (actors/users/login-throttle.ts, `merge`). Counts converge within milliseconds, and no
// login waits for NATS: the check is local, publishing is fire-and-forget.
//
// Why core NATS and not a KV bucket of counters: a check would wait for a KV round trip
// (and fail open or closed when JetStream is away), every failure would be a
// compare-and-set race between nodes, and on nats-server 2.9 keys cannot expire one by
// one, so the bucket's TTL would age a counter by its last write, not its window.
// The price: a node that is away (down, or cut off from NATS) misses what the others
// report meanwhile and does not catch up; until the window passes it counts fewer
// failures than its peers. While NATS is away each node limits on its own counts, so a
// guesser spread over N nodes gets at most N times the limits.
//
// Only nodes may publish under `tern.<cluster>.>` (cluster/nats-permissions.ts). Even so,
// a forged report can at most add failures: it slows an account (the delay never locks
// out) or refuses one (account, IP) pair for a window, as real failures would.
import type { NatsConnection, Subscription } from "@nats-io/transport-node";
import { Exit, Schema } from "effect";
import type { LoginAccounts, LoginEvent, LoginThrottle } from "../actors/users/login-throttle.ts";
import { LoginReport } from "../protocol/logins.ts";
import { decodeFrame, encodeFrame } from "../protocol/wire.ts";

export type LoginReportOutcome = "published" | "unsent" | "merged" | "malformed";

export interface LoginReportsLink {
  readonly nc: NatsConnection;
  readonly subject: string;
  readonly node: string;
  /** Whether the connection is up now: while it is not, reports are dropped, not buffered without bound. */
  readonly connected: () => boolean;
  readonly observe: (outcome: LoginReportOutcome) => void;
}

const encodeReport = Schema.encodeSync(LoginReport);
const decodeReport = Schema.decodeUnknownExit(LoginReport);

/** The `report` hook of one protocol's throttle: each event goes to every other node. */
export const publishLoginEvents =
  (link: LoginReportsLink, protocol: string) =>
  (event: LoginEvent): void => {
    if (!link.connected()) return link.observe("unsent");
    const common = { node: link.node, protocol, ip: event.ip };
    const report: LoginReport =
      event._tag === "Failed"
        ? { _tag: "LoginFailed", ...common, account: event.account.key, exists: event.account.exists }
        : { _tag: "LoginSucceeded", ...common, account: event.account, ageMs: Math.round(event.ageMs) };
    try {
      link.nc.publish(link.subject, encodeFrame(encodeReport(report)));
      link.observe("published");
    } catch {
      // Closed or draining between the check and here: the peers miss one report, the login goes on.
      link.observe("unsent");
    }
  };

/** The event a report stands for, as the throttle merges it. */
const eventOfReport = (report: LoginReport): LoginEvent =>
  report._tag === "LoginFailed"
    ? { _tag: "Failed", account: { key: report.account, exists: report.exists }, ip: report.ip }
    : { _tag: "Succeeded", account: report.account, ip: report.ip, ageMs: report.ageMs };

/**
 * Merges one report from a peer: into the throttle of its protocol, or, for a protocol
 * this node does not serve (a newer peer's), into the account's record only.
 */
const mergeLoginReport = (report: LoginReport, throttles: ReadonlyMap<string, LoginThrottle>, accounts: LoginAccounts): void => {
  const throttle = throttles.get(report.protocol);
  if (throttle) return throttle.merge(eventOfReport(report));
  const now = accounts.now();
  if (report._tag === "LoginFailed") accounts.failed({ key: report.account, exists: report.exists }, now);
  else accounts.succeeded(report.account, report.ip, now - report.ageMs);
};

/** Subscribes to the other nodes' reports; unsubscribe to stop. */
export const followLoginReports = (link: LoginReportsLink, throttles: ReadonlyMap<string, LoginThrottle>, accounts: LoginAccounts): Subscription =>
  link.nc.subscribe(link.subject, {
    callback: (error, msg) => {
      if (error) return;
      const frame = decodeFrame(msg.data);
      const report = typeof frame === "string" ? undefined : decodeReport(frame.json);
      if (report === undefined || Exit.isFailure(report)) return link.observe("malformed");
      if (report.value.node === link.node) return;
      mergeLoginReport(report.value, throttles, accounts);
      link.observe("merged");
    },
  });
