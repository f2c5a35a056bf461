// Prometheus metrics of the mailbox actors and the POP3 retriever, on the node's registry.
import { Counter, type Registry } from "prom-client";
import type { LoginOutcome } from "../../protocol/pop3.ts";
import type { MailboxObserver } from "./actor.ts";

export interface MailboxMetrics {
  readonly observer: MailboxObserver;
  readonly onLogin: (outcome: LoginOutcome) => void;
}

export const makeMailboxMetrics = (registry: Registry): MailboxMetrics => {
  const counter = <L extends string>(name: string, help: string, labelNames: L[] = []) =>
    new Counter<L>({ name, help, labelNames, registers: [registry] });
  const stored = counter("tern_mailbox_messages_stored_total", "Messages committed to a mailbox on this node");
  const storedBytes = counter("tern_mailbox_stored_bytes_total", "Bytes of messages committed to a mailbox on this node");
  const duplicates = counter(
    "tern_mailbox_duplicate_deliveries_total",
    "Redeliveries of a queue entry this node had already stored (ack lost in a crash); no second copy was made",
  );
  const overQuota = counter("tern_mailbox_over_quota_total", "Deliveries deferred because the mailbox was over quota (4.2.2)");
  const passivated = counter("tern_mailbox_passivations_total", "Idle mailbox actors stopped");
  const logins = counter("tern_pop3_logins_total", "POP3 login attempts by outcome", ["outcome"]);
  return {
    observer: {
      stored: (_user, bytes) => {
        stored.inc();
        storedBytes.inc(bytes);
      },
      duplicate: () => duplicates.inc(),
      overQuota: () => overQuota.inc(),
      passivated: () => passivated.inc(),
    },
    onLogin: (outcome) => logins.inc({ outcome }),
  };
};
