// How operator commands (`tern queue`, `tern status`) reach the cluster's NATS: as the
// operator role, with replies on the operator inbox (outside `_INBOX`, where applications
// receive theirs, since these replies name senders and recipients).
import { connect } from "@nats-io/transport-node";
import { NatsUnavailable } from "../cluster/nats.ts";
import { embeddedCredentials } from "../cluster/embedded-nats.ts";
import { securityOptions, type NatsSecurity } from "../cluster/nats-auth.ts";
import { makeSubjects } from "../protocol/subjects.ts";
import type { NodeConfig } from "./config.ts";

/**
 * Connects with the configured NATS credentials; without any, and when the node runs its
 * embedded server, with the operator credential that server generated in the data dir.
 * Replies arrive on the operator inbox unless another `inboxPrefix` is named (an
 * application's `tern events --app` reads on its tenant's inbox).
 */
export const connectAsOperator = async (config: NodeConfig, clientName: string, inboxPrefix = makeSubjects(config.cluster).operatorInbox) => {
  const attempt = async (security: NatsSecurity) =>
    connect({
      servers: [...config.nats.servers],
      name: clientName,
      timeout: 2_000,
      inboxPrefix,
      ...(await securityOptions(security)),
    });
  const configured = attempt(config.nats);
  const connected = config.nats.auth.kind === "none" && config.nats.embedded
    ? configured.catch(() => attempt(embeddedCredentials(config.dataDir, "operator")))
    : configured;
  return connected.catch((error: Error) => {
    throw new NatsUnavailable(`no NATS server lets ${clientName.replace("-", " ")} in at ${config.nats.servers.join(", ")}: ${error.message}`);
  });
};
