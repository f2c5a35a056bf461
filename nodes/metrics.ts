// Prometheus metrics of one node, in a registry of its own (not prom-client's global one).
import { Counter, Gauge, Registry, collectDefaultMetrics } from "prom-client";

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
}

export const makeNodeMetrics = (nodeId: string): NodeMetrics => {
  const registry = new Registry();
  registry.setDefaultLabels({ node: nodeId });
  collectDefaultMetrics({ register: registry });
  const counter = <L extends string>(name: string, help: string, labelNames: L[] = []) =>
    new Counter<L>({ name, help, labelNames, registers: [registry] });
  return {
    registry,
    accepted: counter("tern_messages_accepted_total", "Messages committed to the spool and answered 250"),
    acceptedBytes: counter("tern_messages_accepted_bytes_total", "Bytes of messages accepted"),
    rejected: counter("tern_smtp_rejections_total", "SMTP commands refused, by reason", ["reason"]),
    delivered: counter("tern_recipients_delivered_total", "Recipients delivered to the next hop", ["route"]),
    deferred: counter("tern_recipients_deferred_total", "Recipient attempts deferred for a retry, by bounce category", ["route", "category"]),
    failed: counter("tern_recipients_failed_total", "Recipients failed permanently (bounced or expired), by bounce category", ["route", "category"]),
    actorRestarts: counter("tern_actor_restarts_total", "Actor handler restarts after a crash", ["actor"]),
  };
};

/** A gauge read when Prometheus scrapes: registered by the part that knows the value. */
export const registerGauge = (registry: Registry, name: string, help: string, read: () => number): void => {
  new Gauge({ name, help, registers: [registry], collect() {
    this.set(read());
  } });
};
