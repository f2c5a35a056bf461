// The state of the node's NATS connection, as /readyz reports it. `isClosed()` alone says
// nothing while the client is reconnecting, and in that time every NATS ask of the node
// fails: remote mailboxes, ownership, the resolver. So the connection's status events
// (nats.js `nc.status()`) are followed and the latest one is kept.
import type { NatsConnection, Status } from "@nats-io/transport-node";

export type NatsConnectionState =
  | { readonly _tag: "Connected" }
  | { readonly _tag: "Reconnecting"; readonly lost: string | undefined }
  | { readonly _tag: "Closed" };

export interface NatsStatus {
  readonly state: () => NatsConnectionState;
  /** Why the connection is not usable now, or undefined when it is. */
  readonly problem: () => string | undefined;
  /** Stops following the connection's events. */
  readonly stop: () => void;
}

const describeNatsState = (state: NatsConnectionState): string | undefined => {
  switch (state._tag) {
    case "Connected":
      return undefined;
    case "Reconnecting":
      return `nats: reconnecting${state.lost ? ` (lost ${state.lost})` : ""}`;
    case "Closed":
      return "nats: connection closed";
  }
};

/** The connection left one server, or got back to one (on a NATS cluster, often another). */
export type NatsLinkChange = { readonly _tag: "Lost" | "Reconnected"; readonly server: string };

/**
 * `onError` hears the errors the server reports on a live connection, above all permission
 * violations: a node whose NATS permissions are too narrow must say so, not just time out.
 * `onLinkChange` hears which server was lost and which one the client reconnected to, so
 * an operator can tell a node's link moved to another server of a NATS cluster.
 */
export const followNatsStatus = (
  nc: NatsConnection,
  onError: (detail: string) => void = () => undefined,
  onLinkChange: (change: NatsLinkChange) => void = () => undefined,
): NatsStatus => {
  let state: NatsConnectionState = nc.isClosed() ? { _tag: "Closed" } : { _tag: "Connected" };
  let lost: string | undefined;
  // `return()` on the async iterator is only queued behind the next status event, leaving
  // the listener registered until then; nats.js's iterator (typed as a plain AsyncIterable)
  // also has `stop()`, which ends it at once.
  const statuses = nc.status() as AsyncIterable<Status> & { stop?: () => void };
  const events = statuses[Symbol.asyncIterator]();
  const follow = async () => {
    for (let next = await events.next(); !next.done; next = await events.next()) {
      const event = next.value;
      switch (event.type) {
        case "disconnect":
          lost = event.server;
          state = { _tag: "Reconnecting", lost };
          onLinkChange({ _tag: "Lost", server: event.server });
          break;
        case "reconnecting":
        case "staleConnection":
        case "forceReconnect":
          if (state._tag !== "Closed") state = { _tag: "Reconnecting", lost };
          break;
        case "reconnect":
          state = { _tag: "Connected" };
          onLinkChange({ _tag: "Reconnected", server: event.server });
          break;
        case "close":
          state = { _tag: "Closed" };
          break;
        case "error":
          onError(event.error instanceof Error ? event.error.message : String(event.error));
          break;
      }
    }
  };
  // The iterator ends when the connection closes or `stop` is called; it does not fail.
  void follow().catch(() => undefined);
  void nc.closed().then(() => {
    state = { _tag: "Closed" };
  });
  return {
    state: () => state,
    problem: () => describeNatsState(state),
    stop: () => (statuses.stop ? statuses.stop() : void events.return?.()),
  };
};
