// Who may do what on a cluster's NATS: the publish/subscribe allow lists of the three
// kinds of NATS users, and a nats-server `authorization` block built from them. The
// embedded development server and the tests use this; docs/nats-server.conf is its
// output for the default cluster, so what the README documents is what is tested.
//
// - node: serves and calls the cluster's internal subjects (mailbox, resolver, blob
//   transfer, queue administration, events) and uses the cluster's KV buckets and its
//   events stream; it watches the suppression list's bucket (consumers on that bucket
//   only). Replies (JetStream's publish acknowledgements among them), blobs and the
//   watch's messages travel on the node inbox (`tern.<cluster>.inbox.<node>`), inside that space.
// - operator: queue administration (`tern queue`), IP pools and their warm-up (`tern pools`),
//   the suppression list (`tern suppress`, asked of any node: no access to its bucket),
//   reputation figures (`tern reputation`), message status (`tern status`), the member list as a node reads it (`tern cluster
//   status`; no access to the bucket), mailbox moves (`tern mailbox move`, asked of the
//   target node), draining a node (`tern node drain`), replies on
//   `tern.<cluster>.operator.inbox`, and reading events (`tern events`).
// - application: the NATS API (`tern.<cluster>.api.v1.<tenant>.>`), its discovery (`$SRV.>`,
//   the NATS micro conventions) and reading events. An application user of one tenant uses
//   that tenant's API and reads its events only, and receives its replies on the tenant's
//   inbox (`tern.<cluster>.tenant.<tenant>.inbox`), not on the shared `_INBOX`.
//
// Reading events (`followEvents`) is a pull consumer of the reader's own on nats-server
// 2.9: CONSUMER.CREATE with the filter subject in the request subject
// (`$JS.API.CONSUMER.CREATE.<stream>.<name>.<filter>`; the server refuses a request whose
// body names another filter), CONSUMER.MSG.NEXT to pull, CONSUMER.INFO and
// CONSUMER.DELETE. Only filters under what the user may read are allowed, so a tenant
// cannot create a consumer over other tenants' events. No reader may ask for STREAM.INFO
// (with `subjects_filter` it lists every subject with its count: other tenants' names,
// event types, destination domains and volumes), read a stream message by sequence
// (STREAM.MSG.GET, DIRECT.GET) or list consumers. A consumer name is one subject token,
// so permissions cannot tie MSG.NEXT, INFO and DELETE to the consumers of one tenant:
// what keeps tenants off each other's consumers is that a name is unguessable
// (`tern-<tenant>-<128 random bits>`) and not listed to them.
// Nobody but nodes may publish on or subscribe to `tern.<cluster>.>` beyond that, so no
// one else can read mail bodies crossing nodes, answer a resolver request, or forge mail.
import type { Subjects } from "../protocol/subjects.ts";

export type NatsRole = "node" | "operator" | "application";

interface Permissions {
  readonly publish: ReadonlyArray<string>;
  readonly subscribe: ReadonlyArray<string>;
  /** May answer requests it received, whatever their reply subject (a node answering `tern queue`). */
  readonly allowResponses: boolean;
}

/**
 * What a node does with a KV bucket, and nothing more (no delete, purge or consumers):
 * look the stream up, create it (again, when JetStream lost it), read keys directly,
 * and write keys.
 */
const kvAccess = (bucket: string): string[] => {
  const stream = `KV_${bucket}`;
  return [
    `$JS.API.STREAM.INFO.${stream}`,
    `$JS.API.STREAM.CREATE.${stream}`,
    `$JS.API.STREAM.UPDATE.${stream}`,
    `$JS.API.STREAM.MSG.GET.${stream}`,
    `$JS.API.DIRECT.GET.${stream}`,
    `$JS.API.DIRECT.GET.${stream}.>`,
    `$KV.${bucket}.>`,
  ];
};

/** What a node does with the events stream: look it up, create it (again), put its limits right; it publishes under `tern.<cluster>.>`. */
const eventsStreamAccess = (subjects: Subjects): string[] =>
  ["INFO", "CREATE", "UPDATE"].map((action) => `$JS.API.STREAM.${action}.${subjects.eventsStream}`);

/** Reading events through pull consumers of one's own, filtered under `events` (no STREAM.INFO: see above). */
const eventsReadAccess = (subjects: Subjects, events: string): string[] => {
  const stream = subjects.eventsStream;
  return [
    `$JS.API.CONSUMER.CREATE.${stream}.*.${events}`,
    `$JS.API.CONSUMER.MSG.NEXT.${stream}.*`,
    `$JS.API.CONSUMER.INFO.${stream}.*`,
    `$JS.API.CONSUMER.DELETE.${stream}.*`,
  ];
};

/**
 * Watching a KV bucket (the suppression list, which every node keeps in memory): the
 * ordered push consumer nats.js's `kv.watch` creates, recreates and deletes, and the
 * answers to its flow-control requests. Its messages arrive on the node's inbox.
 */
const kvWatchAccess = (bucket: string): string[] => {
  const stream = `KV_${bucket}`;
  return [`$JS.API.CONSUMER.CREATE.${stream}.>`, `$JS.API.CONSUMER.INFO.${stream}.*`, `$JS.API.CONSUMER.DELETE.${stream}.*`, `$JS.FC.${stream}.>`];
};

/** The KV buckets nodes of the cluster use. */
const bucketsOf = (subjects: Subjects): string[] => [subjects.mailboxOwnersBucket, subjects.apiKeysBucket, subjects.membersBucket, subjects.suppressionsBucket];

const clusterRoot = (subjects: Subjects) => `tern.${subjects.cluster}`;

/** The micro discovery subjects ($SRV.PING|INFO|STATS, bare, `.<name>` and `.<name>.<id>`) nodes answer. */
const discovery = (subjects: Subjects): string[] => ["$SRV.*", `$SRV.*.${subjects.apiService}`, `$SRV.*.${subjects.apiService}.*`];

/**
 * The allow lists of a role. `tenant` restricts an application user to one tenant: its
 * events, its part of the API, and its own inbox.
 */
const permissionsOf = (role: NatsRole, subjects: Subjects, tenant?: string): Permissions => {
  const root = clusterRoot(subjects);
  switch (role) {
    case "node":
      return {
        publish: [`${root}.>`, "$JS.API.INFO", ...eventsStreamAccess(subjects), ...bucketsOf(subjects).flatMap(kvAccess), ...kvWatchAccess(subjects.suppressionsBucket)],
        subscribe: [`${root}.>`, ...discovery(subjects)],
        allowResponses: true,
      };
    case "operator":
      return {
        publish: [
          subjects.queueAdmin,
          `${subjects.queueAdmin}.*`,
          subjects.poolsStatus,
          `${subjects.poolsStatus}.*`,
          subjects.reputationStatus,
          `${subjects.reputationStatus}.*`,
          subjects.statusLookup,
          subjects.clusterMembers,
          subjects.mailboxMoveAdmins,
          subjects.nodeDrains,
          subjects.suppressionAdmin,
          ...eventsReadAccess(subjects, subjects.events),
        ],
        subscribe: [`${subjects.operatorInbox}.>`, subjects.events],
        allowResponses: false,
      };
    case "application": {
      if (tenant === undefined) {
        // An empty allow list would allow everything: the API's own subject space is reserved here.
        return { publish: [`${root}.api.>`, "$SRV.>", ...eventsReadAccess(subjects, subjects.events)], subscribe: ["_INBOX.>", subjects.events], allowResponses: false };
      }
      const events = `${root}.events.${tenant}.>`;
      return {
        publish: [subjects.api(tenant, ">"), "$SRV.>", ...eventsReadAccess(subjects, events)],
        subscribe: [`${subjects.tenantInbox(tenant)}.>`, events],
        allowResponses: false,
      };
    }
  }
};

/** A user of the NATS server: authenticated by password or by nkey (public key). */
export type NatsUser = (
  | { readonly role: NatsRole; readonly user: string; readonly password: string }
  | { readonly role: NatsRole; readonly nkey: string }
) & {
  /** An application user of one tenant only. */
  readonly tenant?: string | undefined;
};

const quoted = (text: string) => JSON.stringify(text);
const list = (items: ReadonlyArray<string>) => `[${items.map(quoted).join(", ")}]`;

const renderPermissions = (permissions: Permissions, indent: string) =>
  [
    `${indent}permissions: {`,
    `${indent}  publish: { allow: ${list(permissions.publish)} }`,
    `${indent}  subscribe: { allow: ${list(permissions.subscribe)} }`,
    ...(permissions.allowResponses ? [`${indent}  allow_responses: true`] : []),
    `${indent}}`,
  ].join("\n");

/**
 * The `authorization` block of a nats-server configuration for one cluster. There is no
 * `no_auth_user`, so anonymous connections are refused.
 */
const renderAuthorization = (subjects: Subjects, users: ReadonlyArray<NatsUser>): string => {
  const entries = users.map((user) => {
    const identity = "nkey" in user ? `nkey: ${quoted(user.nkey)}` : `user: ${quoted(user.user)}, password: ${quoted(user.password)}`;
    const comment = user.tenant === undefined ? user.role : `${user.role} of tenant ${user.tenant}`;
    return [`    {`, `      # ${comment}`, `      ${identity}`, renderPermissions(permissionsOf(user.role, subjects, user.tenant), "      "), `    }`].join("\n");
  });
  return [`authorization {`, `  users: [`, entries.join("\n"), `  ]`, `}`].join("\n");
};

/** A complete nats-server configuration: where it listens, JetStream's store, and the users. */
export const renderServerConfig = (options: {
  readonly subjects: Subjects;
  readonly users: ReadonlyArray<NatsUser>;
  readonly listen: string;
  readonly storeDir: string;
  readonly header?: ReadonlyArray<string>;
}): string =>
  [
    ...(options.header ?? []).map((line) => `# ${line}`.trimEnd()),
    `listen: ${quoted(options.listen)}`,
    `jetstream { store_dir: ${quoted(options.storeDir)} }`,
    renderAuthorization(options.subjects, options.users),
    ``,
  ].join("\n");
