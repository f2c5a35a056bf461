// Prometheus metrics of one node, in a registry of its own (not prom-client's global one).
//
// No label names the node: Prometheus adds `instance` (and `job`) to every series it
// scrapes, and a hand-made `node` label would collide with the one Kubernetes' service
// discovery adds. The node's name is on `tern_build_info{tern_node}` only, which a query
// joins on `instance` when it needs it. Every counter a dashboard or an alert reads is
// set to zero at start for its known label sets, so a rate exists before the first event.
import { execFileSync } from "node:child_process";
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";
import { installRoot, ternVersion } from "./install.ts";
import type { ConnectionEvent } from "../actors/runtime/connection-cap.ts";
import type { SmtpListenerName } from "../actors/session/smtp.ts";
import type { DmarcAction } from "../actors/authentication/policy.ts";
import { methodResults, type Verdict } from "../actors/authentication/verdict.ts";

/** What a delivery attempt came to: every recipient delivered, some left to retry, or the rest failed for good. */
export type AttemptOutcome = "delivered" | "deferred" | "failed";

export interface NodeMetrics {
  readonly registry: Registry;
  readonly accepted: Counter;
  readonly acceptedBytes: Counter;
  /** Sizes of the messages committed (SMTP and the API), in bytes. */
  readonly messageSize: Histogram;
  readonly rejected: Counter<"reason">;
  readonly delivered: Counter<"route">;
  /** `category`: bounce classification (actors/delivery/classify.ts). */
  readonly deferred: Counter<"route" | "category">;
  readonly failed: Counter<"route" | "category">;
  /** Time one delivery attempt took (connection, transaction, or the mailbox write), by what it came to. */
  readonly deliveryDuration: Histogram<"outcome">;
  /** Time the spool took to commit and flush a write transaction, by operation (accept, settle…). */
  readonly spoolCommit: Histogram<"operation">;
  readonly actorRestarts: Counter<"actor">;
  /** For `hooks.connections` of the SMTP listeners: open sessions and refusals at the overall cap. */
  readonly smtpConnection: (listener: SmtpListenerName, event: ConnectionEvent) => void;
  /** For `onConnection` of the POP3 listener. */
  readonly pop3Connection: (event: ConnectionEvent) => void;
  /** For `hooks.authenticated` of the SMTP listeners: results per method, and what DMARC made the node do. */
  readonly inboundAuthenticated: (verdict: Verdict, action: DmarcAction) => void;
  /** For `hooks.claimedResultsRemoved`: forged Authentication-Results fields removed. */
  readonly claimedResultsRemoved: (count: number) => void;
  /** For `onConnection` of the IMAP listeners (IMAP and IMAPS together). */
  readonly imapConnection: (event: ConnectionEvent) => void;
}

/** Message sizes: 1 KiB to 64 MiB, by powers of four. */
const SIZE_BUCKETS = [1024, 4096, 16_384, 65_536, 262_144, 1_048_576, 4_194_304, 16_777_216, 67_108_864];
/** A local store takes milliseconds; a remote transaction up to the SMTP timeouts (minutes). */
const DELIVERY_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300];
/** A commit is one fsync, shared by the transactions of a batch: milliseconds on a healthy disk. */
const COMMIT_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5];
/** The spool operations that run on every message; the rest (admin, pruning) appear once used. */
const COMMON_COMMITS = ["accept", "settle", "finish"];

export const makeNodeMetrics = (nodeId: string): NodeMetrics => {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  // Gauges named like counters (promtool refuses them); each is the sum of the same gauge by type.
  for (const name of ["nodejs_active_handles_total", "nodejs_active_requests_total", "nodejs_active_resources_total"]) registry.removeSingleMetric(name);
  const registers = [registry];
  const counter = <L extends string>(name: string, help: string, labelNames: L[] = []) => new Counter<L>({ name, help, labelNames, registers });
  const gauge = <L extends string>(name: string, help: string, labelNames: L[] = []) => new Gauge<L>({ name, help, labelNames, registers });

  const build = buildInfo();
  gauge("tern_build_info", "Always 1: the node's name, Tern's version and commit, and Node's version", ["version", "commit", "node_version", "tern_node"]).set(
    { version: build.version, commit: build.commit, node_version: process.versions.node, tern_node: nodeId },
    1,
  );

  const inbound = connectionMetrics(counter, gauge);
  const smtp = inbound("smtp", "SMTP", ["smtp", "smtps"]);
  const pop3 = inbound("pop3", "POP3", ["pop3"]);
  const imap = inbound("imap", "IMAP", ["imap"]);

  const rejected = counter("tern_smtp_rejections_total", "SMTP commands refused, by reason", ["reason"]);
  for (const reason of ["relay-denied", "unknown-user", "too-many-connections", "spool-unhealthy", "auth-failed"]) rejected.inc({ reason }, 0);
  const actorRestarts = counter("tern_actor_restarts_total", "Actor handler restarts after a crash", ["actor"]);
  for (const actor of ["delivery", "mailbox"]) actorRestarts.inc({ actor }, 0);
  const delivered = counter("tern_recipients_delivered_total", "Recipients delivered to the next hop", ["route"]);
  const deferred = counter("tern_recipients_deferred_total", "Recipient attempts deferred for a retry, by bounce category", ["route", "category"]);
  const failed = counter("tern_recipients_failed_total", "Recipients failed permanently (bounced or expired), by bounce category", ["route", "category"]);
  for (const route of ["local", "remote"]) {
    delivered.inc({ route }, 0);
    deferred.inc({ route, category: "other" }, 0);
    failed.inc({ route, category: "other" }, 0);
  }
  const authResults = counter("tern_inbound_auth_results_total", "Inbound authentication results, by method (spf, dkim per signature, arc, dmarc) and result", ["method", "result"]);
  const dmarcActions = counter("tern_inbound_dmarc_actions_total", "Authenticated inbound messages by what their DMARC result made the node do (deliver, quarantine, refuse)", ["action"]);
  const claimedRemoved = counter("tern_inbound_auth_claimed_results_removed_total", "Authentication-Results fields claiming this node's authserv-id removed from arriving messages");
  for (const action of ["deliver", "quarantine", "refuse"]) dmarcActions.inc({ action }, 0);
  const deliveryDuration = new Histogram<"outcome">({
    name: "tern_delivery_duration_seconds",
    help: "Time one delivery attempt took, by what it came to (delivered, deferred, failed)",
    labelNames: ["outcome"],
    buckets: DELIVERY_BUCKETS,
    registers,
  });
  for (const outcome of ["delivered", "deferred", "failed"] satisfies AttemptOutcome[]) deliveryDuration.zero({ outcome });
  const spoolCommit = new Histogram<"operation">({
    name: "tern_spool_commit_duration_seconds",
    help: "Time a spool write transaction took to commit and reach the disk, by operation",
    labelNames: ["operation"],
    buckets: COMMIT_BUCKETS,
    registers,
  });
  for (const operation of COMMON_COMMITS) spoolCommit.zero({ operation });

  return {
    registry,
    accepted: counter("tern_messages_accepted_total", "Messages committed to the spool and answered 250"),
    acceptedBytes: counter("tern_messages_accepted_bytes_total", "Bytes of messages accepted"),
    messageSize: new Histogram({ name: "tern_message_size_bytes", help: "Sizes of the messages accepted (SMTP and the API)", buckets: SIZE_BUCKETS, registers }),
    rejected,
    delivered,
    deferred,
    failed,
    deliveryDuration,
    spoolCommit,
    actorRestarts,
    smtpConnection: smtp,
    pop3Connection: (event) => pop3("pop3", event),
    imapConnection: (event) => imap("imap", event),
    inboundAuthenticated: (verdict, action) => {
      for (const { method, result } of methodResults(verdict)) authResults.inc({ method, result });
      dmarcActions.inc({ action });
    },
    claimedResultsRemoved: (count) => claimedRemoved.inc(count),
  };
};

/**
 * Per protocol: sessions opened (`tern_<p>_connections_opened_total`), sessions open now
 * (`tern_<p>_connections`) and refusals at the overall cap, by listener.
 */
const connectionMetrics =
  (
    counter: <L extends string>(name: string, help: string, labelNames: L[]) => Counter<L>,
    gauge: <L extends string>(name: string, help: string, labelNames: L[]) => Gauge<L>,
  ) =>
  <N extends string>(prefix: string, protocol: string, listeners: ReadonlyArray<N>) => {
    const opened = counter(`tern_${prefix}_connections_opened_total`, `${protocol} sessions admitted, by listener`, ["listener"]);
    const open = gauge(`tern_${prefix}_connections`, `Open ${protocol} sessions, by listener`, ["listener"]);
    const refused = counter(`tern_${prefix}_connections_refused_total`, `${protocol} connections refused at the listener's overall cap`, ["listener", "reason"]);
    for (const listener of listeners) {
      opened.inc({ listener }, 0);
      open.set({ listener }, 0);
      refused.inc({ listener, reason: "cap" }, 0);
    }
    return (listener: N, event: ConnectionEvent) => {
      if (event === "refused") return refused.inc({ listener, reason: "cap" });
      if (event === "opened") opened.inc({ listener });
      open.inc({ listener }, event === "opened" ? 1 : -1);
    };
  };

/** Tern's version (package.json) and commit: TERN_COMMIT, else the checkout's HEAD, else "unknown". */
const buildInfo = (): { version: string; commit: string } => ({ version: ternVersion, commit: process.env.TERN_COMMIT || gitHead(installRoot) || "unknown" });

const gitHead = (root: string): string | undefined => {
  try {
    return execFileSync("git", ["rev-parse", "--short=12", "HEAD"], { cwd: root, stdio: ["ignore", "pipe", "ignore"], timeout: 2_000 }).toString().trim() || undefined;
  } catch {
    return undefined; // not a git checkout, or no git
  }
};

/** A gauge read when Prometheus scrapes: registered by the part that knows the value. */
export const registerGauge = (registry: Registry, name: string, help: string, read: () => number): void => {
  new Gauge({ name, help, registers: [registry], collect() {
    this.set(read());
  } });
};

/** The queues summed by destination: a remote domain is its own, every local mailbox is "local". */
export const destinationOf = (queue: string): string => (queue.startsWith("local:") ? "local" : queue);

/**
 * The `limit` largest destinations and what the rest hold together (under "other"), so a
 * gauge labelled by destination has at most `limit + 1` series however many domains wait.
 * Ties go to the name that sorts first, so the series do not flap between scrapes.
 */
export const topDestinations = (depths: Iterable<readonly [string, number]>, limit: number): { top: Array<[string, number]>; other: number } => {
  const byDestination = new Map<string, number>();
  for (const [queue, entries] of depths) {
    const destination = destinationOf(queue);
    byDestination.set(destination, (byDestination.get(destination) ?? 0) + entries);
  }
  const before = (a: readonly [string, number], b: readonly [string, number]) => b[1] - a[1] || (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0);
  // Kept sorted, at most `limit` long: O(destinations × limit), no sort of every domain.
  const top: Array<[string, number]> = [];
  let other = 0;
  for (const candidate of byDestination) {
    if (top.length < limit || (limit > 0 && before(candidate, top[top.length - 1]!) < 0)) {
      const at = top.findIndex((kept) => before(candidate, kept) < 0);
      top.splice(at === -1 ? top.length : at, 0, candidate);
      if (top.length > limit) other += top.pop()![1];
    } else {
      other += candidate[1];
    }
  }
  return { top, other };
};

/**
 * `tern_queue_depth{destination}` (the largest `limit` destinations, the rest as "other",
 * which is always there) and `tern_queue_oldest_age_seconds`, read at each scrape from the
 * spool's counts kept in memory (no walk of the queue).
 */
export const registerQueueGauges = (
  registry: Registry,
  limit: number,
  sources: { readonly depths: () => Iterable<readonly [string, number]>; readonly oldestAgeSeconds: () => number },
): void => {
  new Gauge({
    name: "tern_queue_depth",
    help: `Queue entries waiting or in flight on this node, for the ${limit} largest destinations (remote domain, or "local" for the mailboxes); the rest under "other"`,
    labelNames: ["destination"],
    registers: [registry],
    collect() {
      const { top, other } = topDestinations(sources.depths(), limit);
      this.reset();
      for (const [destination, entries] of top) this.set({ destination }, entries);
      this.inc({ destination: "other" }, other);
    },
  });
  registerGauge(registry, "tern_queue_oldest_age_seconds", "Age of the oldest message in the queue since it arrived (0 when empty; messages waiting for a send-at time are left out)", sources.oldestAgeSeconds);
};
