// Every NATS subject and KV bucket name Tern uses is built here, from the cluster name,
// so two clusters (or two test runs) on one NATS never see each other's traffic.
import { createHash } from "node:crypto";
import { domainToASCII } from "node:url";

export type MailboxOperation =
  | "deliver" | "list" | "retrieve" | "open" | "renew" | "commit" | "release"
  // IMAP (actors/retriever/imap-*.ts)
  | "folders" | "view" | "body" | "flags" | "copy" | "expunge" | "append" | "folder";

export interface Subjects {
  readonly cluster: string;
  /** Stateless resolver actors listen here in one queue group. */
  readonly resolve: string;
  readonly resolverQueueGroup: string;
  /** Mailbox actors of one node: asks go to the owner node of the mailbox. */
  readonly mailbox: (nodeId: string, operation: MailboxOperation) => string;
  /**
   * Which nodes hold a mailbox: every node answers from its own durable record. Asked
   * before a node claims a mailbox the KV has no owner for, so that mail that lives on
   * another node (the KV was lost) is not split off to a new one.
   */
  readonly mailboxHolders: string;
  /** Node-to-node steps of a mailbox move, served by `nodeId` (actors/mailbox/move.ts). */
  readonly mailboxMove: (nodeId: string, step: "snapshot" | "bodies" | "finish" | "abort" | "status") => string;
  /** `tern mailbox move`: the operator asks the target node to take a mailbox. */
  readonly mailboxMoveAdmin: (nodeId: string) => string;
  /** Every target's `mailboxMoveAdmin` subject (operator permissions). */
  readonly mailboxMoveAdmins: string;
  /**
   * Where an event is published: `tern.<cluster>.events.<tenant>.<type>.<domain>`, the
   * destination domain as one token (`eventDomainToken`). Filter with `eventFilter`.
   */
  readonly event: (tenant: string, type: string, domain: string) => string;
  /** Every event subject of the cluster: what the events stream captures. */
  readonly events: string;
  /** The JetStream stream holding the cluster's events. */
  readonly eventsStream: string;
  /** Event subjects of one tenant, type and domain, each one left out meaning any. */
  readonly eventFilter: (filter: { readonly tenant?: string | undefined; readonly type?: string | undefined; readonly domain?: string | undefined }) => string;
  /** KV bucket holding mailbox owner → node. */
  readonly mailboxOwnersBucket: string;
  /** Queue administration (`tern queue`): every node answers requests sent here. */
  readonly queueAdmin: string;
  /** Queue administration of one node. */
  readonly queueAdminOf: (nodeId: string) => string;
  /** IP pools with their warm-up caps and usage (`tern pools`): every node answers requests sent here. */
  readonly poolsStatus: string;
  /** The pools of one node. */
  readonly poolsStatusOf: (nodeId: string) => string;
  /** Reputation figures and thresholds acting (`tern reputation`): every node answers requests sent here. */
  readonly reputationStatus: string;
  /** The reputation figures of one node. */
  readonly reputationStatusOf: (nodeId: string) => string;
  /**
   * A bounce or complaint that came back to another node, counted in this node's figures
   * (it sent the message): node to node only (actors/delivery/reputation-count.ts).
   */
  readonly reputationCount: (nodeId: string) => string;
  /**
   * Which node holds message X, and its status: every node answers from its own spool
   * (node-to-node scatter; the status API and `tern status` ask through it).
   */
  readonly statusLookup: string;
  /**
   * Inbox prefix of one node's connection: replies to its requests and the blobs it offers
   * live under it, inside the cluster's subject space, so NATS permissions that keep
   * non-node users out of `tern.<cluster>.>` keep them out of node-to-node replies too.
   */
  readonly nodeInbox: (nodeId: string) => string;
  /** Every node's inbox (a blob reference must name a subject under it). */
  readonly nodeInboxes: string;
  /**
   * Inbox prefix of `tern queue` (the operator role): its replies name senders and
   * recipients, so they stay out of `_INBOX`, where applications receive theirs.
   */
  readonly operatorInbox: string;
  /**
   * Inbox prefix of an application user of one tenant: its replies and the events its
   * consumers pull arrive here, where no other tenant may subscribe.
   */
  readonly tenantInbox: (tenant: string) => string;
  /**
   * The application API (docs/api.md): `tern.<cluster>.api.v1.<tenant>.<endpoint>`, with
   * endpoints `submit`, `upload.begin`, `upload.<nodeId>.<uploadId>` (and `status`).
   * Every node serves it in `apiQueueGroup`; the tenant token is `*` in their subscriptions.
   */
  readonly api: (tenant: string, endpoint: string) => string;
  readonly apiQueueGroup: string;
  /** The API's service name under the NATS micro conventions (`$SRV.PING.<name>`). */
  readonly apiService: string;
  /**
   * KV bucket of idempotency keys, cluster-wide: `<tenant>.<key>` → the node that took the
   * key first and holds its message (actors/api/idempotency.ts). Entries age out after
   * `api.idempotencyTtlMs`.
   */
  readonly apiKeysBucket: string;
  /**
   * The recorded reply of an idempotency key, asked of the node the bucket names
   * (node-to-node, outside the API's subject space that applications may use).
   */
  readonly idempotencyOf: (nodeId: string) => string;
  /**
   * The owner node of a mailbox publishes here after every change to it (core NATS, no
   * payload): IMAP sessions on any node watching that user resync. The token is a hash
   * of the user's address, so addresses do not appear in subjects.
   */
  readonly mailboxChanged: (user: string) => string;
  /** Every node publishes each failed and successful login here, and every node merges them (core NATS, no stream). */
  readonly loginReports: string;
  /** KV bucket of cluster members: node id → its heartbeat record (protocol/membership.ts); the bucket's TTL drops silent nodes. */
  readonly membersBucket: string;
  /** The member list as a node reads it (`tern cluster status`): one node of the queue group answers. */
  readonly clusterMembers: string;
  readonly clusterMembersQueueGroup: string;
  /** Leases on the site budgets one node owns (protocol/site-budget.ts): nodes ask the owner here. */
  readonly siteBudgetOf: (nodeId: string) => string;
  /** `tern node drain`: the operator starts and follows one node's drain here (protocol/drain.ts). */
  readonly nodeDrain: (nodeId: string) => string;
  /** Every node's drain subject (what the operator role may publish to). */
  readonly nodeDrains: string;
  /** Where a draining node hands one message with its queue entries to a peer (node-to-node). */
  readonly handOff: (nodeId: string) => string;
  /**
   * KV bucket of the suppression list: `<scope token>.<address hash>` → the record
   * (protocol/suppression.ts). Every node watches it into memory.
   */
  readonly suppressionsBucket: string;
  /** `tern suppress`: the operator's add, import, remove and list; one node of the queue group answers. */
  readonly suppressionAdmin: string;
  readonly suppressionAdminQueueGroup: string;
}

const safeToken = /^[A-Za-z0-9_-]+$/;

export const isSafeToken = (token: string): boolean => safeToken.test(token);

/**
 * A destination domain as one subject token: IDNs in their ASCII form, dots as
 * underscores ("mail.example.com" → "mail_example_com"), anything a token cannot hold
 * (an address literal's brackets) as '-', and "none" when there is no domain.
 */
const eventDomainToken = (domain: string): string => {
  const lower = domain.toLowerCase();
  const ascii = domainToASCII(lower) || lower;
  const token = ascii.replace(/\./g, "_").replace(/[^a-z0-9_-]/g, "-");
  return token === "" ? "none" : token;
};

export const makeSubjects = (cluster: string): Subjects => {
  if (!isSafeToken(cluster)) throw new Error(`cluster name must match ${safeToken}: ${JSON.stringify(cluster)}`);
  const root = `tern.${cluster}`;
  return {
    cluster,
    resolve: `${root}.resolver.resolve`,
    resolverQueueGroup: `${root}.resolver`,
    mailbox: (nodeId, operation) => `${root}.mailbox.${nodeId}.${operation}`,
    mailboxHolders: `${root}.mailbox.holders`,
    mailboxMove: (nodeId, step) => `${root}.mailbox.${nodeId}.move.${step}`,
    mailboxMoveAdmin: (nodeId) => `${root}.admin.mailbox.move.${nodeId}`,
    mailboxMoveAdmins: `${root}.admin.mailbox.move.*`,
    event: (tenant, type, domain) => `${root}.events.${tenant}.${type}.${eventDomainToken(domain)}`,
    events: `${root}.events.>`,
    eventsStream: `TERN_${cluster}_EVENTS`,
    eventFilter: ({ tenant, type, domain }) => `${root}.events.${tenant ?? "*"}.${type ?? "*"}.${domain === undefined ? "*" : eventDomainToken(domain)}`,
    mailboxOwnersBucket: `tern_${cluster}_mailbox_owners`,
    queueAdmin: `${root}.queue.admin`,
    queueAdminOf: (nodeId) => `${root}.queue.admin.${nodeId}`,
    poolsStatus: `${root}.pools.status`,
    poolsStatusOf: (nodeId) => `${root}.pools.status.${nodeId}`,
    reputationStatus: `${root}.reputation.status`,
    reputationStatusOf: (nodeId) => `${root}.reputation.status.${nodeId}`,
    reputationCount: (nodeId) => `${root}.reputation.count.${nodeId}`,
    statusLookup: `${root}.status.lookup`,
    nodeInbox: (nodeId) => `${root}.inbox.${nodeId}`,
    nodeInboxes: `${root}.inbox`,
    operatorInbox: `${root}.operator.inbox`,
    tenantInbox: (tenant) => `${root}.tenant.${tenant}.inbox`,
    api: (tenant, endpoint) => `${root}.api.v1.${tenant}.${endpoint}`,
    apiQueueGroup: `${root}.api`,
    apiService: `tern-${cluster}`,
    apiKeysBucket: `tern_${cluster}_api_keys`,
    idempotencyOf: (nodeId) => `${root}.idempotency.${nodeId}`,
    loginReports: `${root}.logins.reports`,
    mailboxChanged: (user) => `${root}.mailboxchanges.${createHash("sha256").update(user.toLowerCase()).digest("hex").slice(0, 32)}`,
    membersBucket: `tern_${cluster}_members`,
    clusterMembers: `${root}.cluster.members`,
    clusterMembersQueueGroup: `${root}.cluster`,
    siteBudgetOf: (nodeId) => `${root}.budget.${nodeId}`,
    nodeDrain: (nodeId) => `${root}.node.drain.${nodeId}`,
    nodeDrains: `${root}.node.drain.*`,
    handOff: (nodeId) => `${root}.handoff.${nodeId}`,
    suppressionsBucket: `tern_${cluster}_suppressions`,
    suppressionAdmin: `${root}.suppressions.admin`,
    suppressionAdminQueueGroup: `${root}.suppressions`,
  };
};

/**
 * Whether a node may publish an answer on `reply`, for a request served under cluster
 * `cluster`. NATS does not check a request's reply subject against the asker's
 * permissions, but the node publishes the answer with its own: a reply subject naming a
 * KV key, the events stream or another node's subjects would make the node write there.
 * So answers go only to inboxes: node, operator and tenant inboxes inside the cluster's
 * space, and anything outside Tern's and the server's own (`$…`) space, such as `_INBOX.…`.
 */
export const isReplySubject = (cluster: string, reply: string): boolean => {
  if (reply.startsWith("$")) return false;
  if (!reply.startsWith("tern.")) return true;
  const root = `tern.${cluster}.`;
  if (!reply.startsWith(root)) return false;
  const rest = reply.slice(root.length).split(".");
  return (
    (rest[0] === "inbox" && rest.length >= 3) ||
    (rest[0] === "operator" && rest[1] === "inbox" && rest.length >= 3) ||
    (rest[0] === "tenant" && rest[2] === "inbox" && rest.length >= 4)
  );
};

/** The cluster of a Tern subject (`tern.<cluster>.…`), if it is one. */
export const clusterOfSubject = (subject: string): string | undefined => (subject.startsWith("tern.") ? subject.split(".")[1] : undefined);
