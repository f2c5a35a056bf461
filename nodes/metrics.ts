// Prometheus metrics of one node, in a registry of its own (not prom-client's global one).
import { Counter, Gauge, Registry, collectDefaultMetrics } from "prom-client";
import type { ConnectionEvent } from "../actors/runtime/connection-cap.ts";
import type { SmtpListenerName } from "../actors/session/smtp.ts";
import type { DmarcAction } from "../actors/authentication/policy.ts";
import { methodResults, type Verdict } from "../actors/authentication/verdict.ts";

export interface NodeMetrics {
  readonly registry: Registry;
  readonly accepted: Counter;
  readonly acceptedBytes: Counter;
  readonly rejected: Counter<"reason">;
  readonly delivered: Counter<"route">;
  /** `category`: bounce classification (actors/delivery/classify.ts). */
  readonly deferred: Counter<"route" | "category">;
  readonly failed: Counter<"route" | "category">;
  readonly actorRestarts: Counter<"actor">;
  /** For `hooks.connections` of the SMTP listeners: open sessions and refusals at the overall cap. */
  readonly smtpConnection: (listener: SmtpListenerName, event: ConnectionEvent) => void;
  /** For `onConnection` of the POP3 listener. */
  readonly pop3Connection: (event: ConnectionEvent) => void;
  /** For `hooks.authenticated` of the SMTP listeners: results per method, and what DMARC made the node do. */
  readonly inboundAuthenticated: (verdict: Verdict, action: DmarcAction) => void;
  /** For `hooks.claimedResultsRemoved`: forged Authentication-Results fields removed. */
  readonly claimedResultsRemoved: (count: number) => void;
}

export const makeNodeMetrics = (nodeId: string): NodeMetrics => {
  const registry = new Registry();
  registry.setDefaultLabels({ node: nodeId });
  collectDefaultMetrics({ register: registry });
  const counter = <L extends string>(name: string, help: string, labelNames: L[] = []) =>
    new Counter<L>({ name, help, labelNames, registers: [registry] });
  const smtpConnections = new Gauge({ name: "tern_smtp_connections", help: "Open SMTP sessions, by listener", labelNames: ["listener"], registers: [registry] });
  const smtpRefused = counter("tern_smtp_connections_refused_total", "SMTP connections refused at the listener's overall cap", ["listener", "reason"]);
  const pop3Connections = new Gauge({ name: "tern_pop3_connections", help: "Open POP3 sessions", registers: [registry] });
  const pop3Refused = counter("tern_pop3_connections_refused_total", "POP3 connections refused at the overall cap", ["reason"]);
  // Zero from the start, so a dashboard sees the series before the first client.
  for (const listener of ["smtp", "smtps"] as const) {
    smtpConnections.set({ listener }, 0);
    smtpRefused.inc({ listener, reason: "cap" }, 0);
  }
  pop3Refused.inc({ reason: "cap" }, 0);
  const authResults = counter("tern_inbound_auth_results_total", "Inbound authentication results, by method (spf, dkim per signature, arc, dmarc) and result", ["method", "result"]);
  const dmarcActions = counter("tern_inbound_dmarc_actions_total", "Authenticated inbound messages by what their DMARC result made the node do (deliver, quarantine, refuse)", ["action"]);
  const claimedRemoved = counter("tern_inbound_auth_claimed_results_removed_total", "Authentication-Results fields claiming this node's authserv-id removed from arriving messages");
  for (const action of ["deliver", "quarantine", "refuse"]) dmarcActions.inc({ action }, 0);
  return {
    registry,
    accepted: counter("tern_messages_accepted_total", "Messages committed to the spool and answered 250"),
    acceptedBytes: counter("tern_messages_accepted_bytes_total", "Bytes of messages accepted"),
    rejected: counter("tern_smtp_rejections_total", "SMTP commands refused, by reason", ["reason"]),
    delivered: counter("tern_recipients_delivered_total", "Recipients delivered to the next hop", ["route"]),
    deferred: counter("tern_recipients_deferred_total", "Recipient attempts deferred for a retry, by bounce category", ["route", "category"]),
    failed: counter("tern_recipients_failed_total", "Recipients failed permanently (bounced or expired), by bounce category", ["route", "category"]),
    actorRestarts: counter("tern_actor_restarts_total", "Actor handler restarts after a crash", ["actor"]),
    smtpConnection: (listener, event) => {
      if (event === "refused") smtpRefused.inc({ listener, reason: "cap" });
      else smtpConnections.inc({ listener }, event === "opened" ? 1 : -1);
    },
    inboundAuthenticated: (verdict, action) => {
      for (const { method, result } of methodResults(verdict)) authResults.inc({ method, result });
      dmarcActions.inc({ action });
    },
    claimedResultsRemoved: (count) => claimedRemoved.inc(count),
    pop3Connection: (event) => {
      if (event === "refused") pop3Refused.inc({ reason: "cap" });
      else pop3Connections.inc(event === "opened" ? 1 : -1);
    },
  };
};

/** A gauge read when Prometheus scrapes: registered by the part that knows the value. */
export const registerGauge = (registry: Registry, name: string, help: string, read: () => number): void => {
  new Gauge({ name, help, registers: [registry], collect() {
    this.set(read());
  } });
};
