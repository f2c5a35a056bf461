// Reading a cluster's events from JetStream, for applications and `tern events`:
//
//   const nc = await connect({ servers, user, pass, inboxPrefix });
//   for await (const { seq, event } of followEvents(nc, { cluster: "tern", type: "bounced", follow: true })) …
//
// A pull consumer of our own, filtered to the tenant, type and domain asked for, starting
// at a stream sequence, a time, the first stored event, or only new ones. It is created
// with CONSUMER.CREATE naming the filter in the request subject (nats-server checks the
// body against it), so NATS permissions can confine a tenant's filter, and is read with
// CONSUMER.MSG.NEXT. Nothing here asks for STREAM.INFO: that answer (with
// `subjects_filter`) lists every subject in the stream, other tenants' included, so
// tenant users are not allowed it. The consumer lives in the server's memory and goes
// away once unread for `inactive_threshold` (a reader that died); when it is gone while
// we read (a server restart, a long disconnection), it is created again from the
// sequence after the last event read. Events are decoded with the protocol's Schema; one
// that does not decode (a newer node's event kind) is handed to `onUndecodable` and
// skipped. An application user of one tenant must ask for that tenant (its NATS
// permissions allow no other filter) and connect with `inboxPrefix` set to the tenant's
// inbox (`Subjects.tenantInbox`).
import { randomBytes } from "node:crypto";
import {
  AckPolicy,
  DeliverPolicy,
  JetStreamApiCodes,
  JetStreamApiError,
  JetStreamError,
  jetstream,
  jetstreamManager,
  type ConsumerConfig,
  type ConsumerMessages,
  type JsMsg,
} from "@nats-io/jetstream";
import { nanos, type NatsConnection } from "@nats-io/transport-node";
import { Exit, Schema } from "effect";
import { StreamEvent, TernEvent, clusterEventsTenant, type EventType } from "../protocol/events.ts";
import { makeSubjects } from "../protocol/subjects.ts";

/** Where reading starts: a stream sequence, a time, every stored event, or only events published from now on. */
export type EventsStart = { readonly seq: number } | { readonly time: Date } | "first" | "new";

export interface FollowOptions {
  readonly cluster: string;
  readonly tenant?: string | undefined;
  readonly type?: EventType | undefined;
  /** Destination domain. */
  readonly domain?: string | undefined;
  readonly start?: EventsStart | undefined;
  /** Keep waiting for new events; otherwise stop once every stored event (matching the filter) was read. */
  readonly follow?: boolean | undefined;
  readonly onUndecodable?: ((seq: number, problem: string) => void) | undefined;
  /** JetStream API calls (creating the consumer) fail after this long; default 5 s. */
  readonly timeoutMs?: number | undefined;
}

export interface StoredEvent<E = TernEvent> {
  /** The stream sequence: start here again with `{ seq: seq + 1 }`. */
  readonly seq: number;
  readonly event: E;
}

/** Without `follow`, a fetch that waits this long for nothing ends the read. */
const END_OF_READ_MS = 1_000;

/** A consumer unread this long is removed by the server (its reader is gone). */
const INACTIVE_THRESHOLD_MS = 5 * 60_000;


const startOptions = (start: EventsStart): Partial<ConsumerConfig> => {
  if (start === "first") return { deliver_policy: DeliverPolicy.All };
  if (start === "new") return { deliver_policy: DeliverPolicy.New };
  if ("seq" in start) return { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: start.seq };
  return { deliver_policy: DeliverPolicy.StartTime, opt_start_time: start.time.toISOString() };
};

/**
 * `tern-<tenant>-<random>`: an operator listing the stream's consumers sees whose they
 * are. The random part is unguessable because NATS permissions cannot tell consumer
 * names apart (a name is one subject token): knowing a name is what it takes to pull
 * from, look at or delete that consumer.
 */
const eventsConsumerName = (tenant: string | undefined): string =>
  `tern-${tenant === undefined ? "" : `${tenant}-`}${randomBytes(16).toString("hex")}`;

/** The consumer is gone (inactive too long, or lost with a server restart): read on from a new one. */
const isConsumerGone = (error: unknown): boolean =>
  (error instanceof JetStreamApiError && error.code === JetStreamApiCodes.ConsumerNotFound) ||
  // A pull answered 409 "consumer deleted": the only 409 that ends `consume`.
  (error instanceof JetStreamError && "code" in error && error.code === 409);

/**
 * The mail events matching `options`, in stream order. Breaking out of the loop deletes
 * the consumer. Cluster events (node-up, node-down) are passed over: `followStreamEvents`
 * reads those too.
 */
export const followEvents = (nc: NatsConnection, options: FollowOptions): AsyncGenerator<StoredEvent> => followAs(TernEvent, nc, options, true);

/** Every event matching `options`, mail and cluster events (`tern events`). */
export const followStreamEvents = (nc: NatsConnection, options: FollowOptions): AsyncGenerator<StoredEvent<StreamEvent>> =>
  followAs(StreamEvent, nc, options, false);

const clusterEventSubject = (cluster: string, subject: string) => subject.startsWith(`tern.${cluster}.events.${clusterEventsTenant}.`);

async function* followAs<E>(
  schema: Schema.Codec<E, unknown>,
  nc: NatsConnection,
  options: FollowOptions,
  skipClusterEvents: boolean,
): AsyncGenerator<StoredEvent<E>> {
  const decode = Schema.decodeUnknownExit(Schema.fromJsonString(schema));
  const subjects = makeSubjects(options.cluster);
  const stream = subjects.eventsStream;
  const timeout = options.timeoutMs ?? 5_000;
  // No `$JS.API.INFO` check: readers are not allowed it, and creating the consumer tells the same.
  const jsm = await jetstreamManager(nc, { timeout, checkAPI: false });
  const js = jetstream(nc, { timeout });
  const config: Partial<ConsumerConfig> = {
    filter_subject: subjects.eventFilter(options),
    ack_policy: AckPolicy.None,
    inactive_threshold: nanos(INACTIVE_THRESHOLD_MS),
    mem_storage: true,
    num_replicas: 1,
  };
  let start = options.start ?? (options.follow ? "new" : "first");
  for (;;) {
    const name = eventsConsumerName(options.tenant);
    const info = await jsm.consumers.add(stream, { ...config, name, ...startOptions(start) });
    try {
      // Whatever the start asked for, the server placed the consumer just after `delivered.stream_seq`.
      start = { seq: Math.max(1, info.delivered.stream_seq + 1) };
      const consumer = js.consumers.getConsumerFromInfo(info);
      /** The message's event, or undefined when it is passed over (a cluster event, or one that does not decode). */
      const take = (message: JsMsg): StoredEvent<E> | undefined => {
        start = { seq: message.seq + 1 };
        if (skipClusterEvents && clusterEventSubject(options.cluster, message.subject)) return undefined;
        const decoded = decode(new TextDecoder().decode(message.data));
        if (Exit.isSuccess(decoded)) return { seq: message.seq, event: decoded.value };
        options.onUndecodable?.(message.seq, String(decoded.cause));
        return undefined;
      };
      try {
        if (options.follow) {
          const messages: ConsumerMessages = await consumer.consume({ max_messages: 256, abort_on_missing_resource: true });
          try {
            for await (const message of messages) {
              const stored = take(message);
              if (stored) yield stored;
            }
            return;
          } finally {
            await messages.close().catch(() => undefined);
          }
        }
        // Without `follow`, batches are fetched until one comes back empty: the server had
        // nothing more for a second. Pending counts are not trusted to end the read: right
        // after the consumer is made they can be short (the read would stop early) or never
        // reach zero while events keep coming (the read would never end).
        for (;;) {
          let taken = 0;
          for await (const message of await consumer.fetch({ max_messages: 256, expires: END_OF_READ_MS })) {
            taken++;
            const stored = take(message);
            if (stored) yield stored;
          }
          if (taken === 0) return;
        }
      } catch (error) {
        if (!isConsumerGone(error)) throw error;
      }
    } finally {
      await jsm.consumers.delete(stream, name).catch(() => undefined);
    }
  }
}
