// Who may do what on a cluster's NATS: the publish/subscribe allow lists of the three
// kinds of NATS users, and a nats-server `authorization` block built from them. The
// embedded development server and the tests use this; docs/nats-server.conf is its
// output for the default cluster, so what the README documents is what is tested.
//
// - node: serves and calls the cluster's internal subjects (mailbox, resolver, blob
//   transfer, queue administration, events) and uses the cluster's KV buckets. Replies
//   and blobs travel on the node inbox (`tern.<cluster>.inbox.<node>`), inside that space.
// - operator: queue administration (`tern queue`) and watching events.
// - application: watching events (the NATS API adds its subjects here).
// Nobody but nodes may publish on or subscribe to `tern.<cluster>.>` beyond that, so no
// one else can read mail bodies crossing nodes, answer a resolver request, or forge mail.
import type { Subjects } from "../protocol/subjects.ts";

export type NatsRole = "node" | "operator" | "application";

export interface Permissions {
  readonly publish: ReadonlyArray<string>;
  readonly subscribe: ReadonlyArray<string>;
  /** May answer requests it received, whatever their reply subject (a node answering `tern queue`). */
  readonly allowResponses: boolean;
}

/** JetStream API subjects a client needs to create and use the stream `stream` (a KV bucket is stream `KV_<bucket>`). */
const jetStreamAccess = (stream: string): string[] => [
  `$JS.API.*.*.${stream}`, // STREAM.INFO / STREAM.CREATE / STREAM.UPDATE / CONSUMER.CREATE …
  `$JS.API.*.*.${stream}.>`, // DIRECT.GET, CONSUMER.CREATE with a name and filter
  `$JS.API.*.*.*.${stream}`, // STREAM.MSG.GET
  `$JS.ACK.${stream}.>`,
  `$JS.FC.${stream}.>`,
];

const kvAccess = (bucket: string): string[] => [...jetStreamAccess(`KV_${bucket}`), `$KV.${bucket}.>`];

/** The KV buckets nodes of the cluster use. */
const bucketsOf = (subjects: Subjects): string[] => [subjects.mailboxOwnersBucket];

const clusterRoot = (subjects: Subjects) => `tern.${subjects.cluster}`;

export const permissionsOf = (role: NatsRole, subjects: Subjects): Permissions => {
  const root = clusterRoot(subjects);
  switch (role) {
    case "node":
      return {
        publish: [`${root}.>`, "$JS.API.INFO", ...bucketsOf(subjects).flatMap(kvAccess)],
        subscribe: [`${root}.>`],
        allowResponses: true,
      };
    case "operator":
      return {
        publish: [subjects.queueAdmin, `${subjects.queueAdmin}.*`],
        subscribe: ["_INBOX.>", `${root}.events.>`],
        allowResponses: false,
      };
    case "application":
      // An empty allow list would allow everything: the API's own subject space is reserved here.
      return { publish: [`${root}.api.>`], subscribe: ["_INBOX.>", `${root}.events.>`], allowResponses: false };
  }
};

/** A user of the NATS server: authenticated by password or by nkey (public key). */
export type NatsUser =
  | { readonly role: NatsRole; readonly user: string; readonly password: string }
  | { readonly role: NatsRole; readonly nkey: string };

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
export const renderAuthorization = (subjects: Subjects, users: ReadonlyArray<NatsUser>): string => {
  const entries = users.map((user) => {
    const identity = "nkey" in user ? `nkey: ${quoted(user.nkey)}` : `user: ${quoted(user.user)}, password: ${quoted(user.password)}`;
    return [`    {`, `      # ${user.role}`, `      ${identity}`, renderPermissions(permissionsOf(user.role, subjects), "      "), `    }`].join("\n");
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
