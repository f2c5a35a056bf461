// The cluster's events stream in JetStream: one stream over `tern.<cluster>.events.>`, file
// storage, old events dropped by age and size. Every node creates it at start, puts its
// limits right when they differ from the node's config, and creates it again when
// JetStream lost it (a nats-server restarted with a wiped store): a publish then finds no
// stream, and the publisher asks for `ensure` before trying again.
//
// A publish carries the event's id as Nats-Msg-Id: JetStream drops a second copy
// published within the duplicate window (an acknowledgement lost on the way back, a crash
// between the acknowledgement and the outbox's removal).
//
// A batch (the publisher's round) is published as plain messages with a reply subject
// each, under one subscription that collects the acknowledgements, with one timer for the
// batch. nats.js's js.publish is a request per event: a reply-mux entry, a timer and an
// error object (with its stack) made on every call; that was a good part of the CPU an
// event cost. JetStream answers such a publish exactly as it answers a request.
import {
  DiscardPolicy,
  JetStreamApiCodes,
  JetStreamApiError,
  RetentionPolicy,
  StorageType,
  jetstream,
  jetstreamManager,
  type StreamConfig,
} from "@nats-io/jetstream";
import { createInbox, headers, type Msg, type NatsConnection, type Subscription } from "@nats-io/transport-node";
import { Data, Effect } from "effect";
import type { OutboxEvent, StreamEvent } from "../protocol/events.ts";
import type { Subjects } from "../protocol/subjects.ts";

export interface EventsStreamConfig {
  readonly maxAgeSec: number;
  readonly maxBytes: number;
  /** JetStream drops a message whose id it saw this recently. */
  readonly duplicateWindowSec: number;
  readonly replicas: number;
}

/** JetStream could not take the request: NATS away, JetStream disabled, permissions, limits. */
export class EventsUnavailable extends Data.TaggedError("EventsUnavailable")<{ readonly detail: string }> {}

export type PublishOutcome =
  | { readonly _tag: "Acked"; readonly seq: number; readonly duplicate: boolean }
  | { readonly _tag: "Failed"; readonly detail: string };

export interface EventsStream {
  /** Creates the stream, or puts its limits right; "present" when nothing had to change. */
  readonly ensure: () => Effect.Effect<"present" | "created" | "updated", EventsUnavailable>;
  /** Publishes the events in order (all sent before any acknowledgement is awaited); one outcome each. */
  readonly publish: (events: ReadonlyArray<OutboxEvent>) => Effect.Effect<ReadonlyArray<PublishOutcome>>;
  /** Publishes one event that has no outbox behind it (a cluster event: node-up, node-down). */
  readonly publishOne: (event: StreamEvent) => Effect.Effect<PublishOutcome>;
}

/** A publish or API call that gets no answer in this long fails (JetStream's default is 5 s). */
const TIMEOUT_MS = 5_000;
const NANOS_PER_SECOND = 1_000_000_000;

const describe = (error: unknown) => (error instanceof Error ? `${error.name}: ${error.message}` : String(error));

const streamConfigOf = (subjects: Subjects, config: EventsStreamConfig) =>
  ({
    name: subjects.eventsStream,
    subjects: [subjects.events],
    storage: StorageType.File,
    retention: RetentionPolicy.Limits,
    discard: DiscardPolicy.Old,
    max_age: config.maxAgeSec * NANOS_PER_SECOND,
    max_bytes: config.maxBytes,
    duplicate_window: config.duplicateWindowSec * NANOS_PER_SECOND,
    num_replicas: config.replicas,
  }) satisfies Partial<StreamConfig>;

const differs = (current: StreamConfig, wanted: ReturnType<typeof streamConfigOf>) =>
  current.subjects?.join(" ") !== wanted.subjects.join(" ") ||
  current.max_age !== wanted.max_age ||
  current.max_bytes !== wanted.max_bytes ||
  current.duplicate_window !== wanted.duplicate_window ||
  current.num_replicas !== wanted.num_replicas;

/**
 * `inboxPrefix`: where acknowledgements may come back, a subject space the connection may
 * subscribe to (a node's own inbox; `_INBOX` when absent).
 */
export const openEventsStream = (nc: NatsConnection, subjects: Subjects, config: EventsStreamConfig, inboxPrefix?: string): EventsStream => {
  const js = jetstream(nc, { timeout: TIMEOUT_MS });
  const wanted = streamConfigOf(subjects, config);
  const acks = makeAcks(nc, inboxPrefix);

  const ensure = () =>
    Effect.tryPromise({
      try: async () => {
        const jsm = await jetstreamManager(nc, { timeout: TIMEOUT_MS, checkAPI: false });
        const current = await jsm.streams.info(wanted.name).catch((error: unknown) => {
          if (error instanceof JetStreamApiError && error.code === JetStreamApiCodes.StreamNotFound) return undefined;
          throw error;
        });
        if (current === undefined) {
          await jsm.streams.add(wanted);
          return "created" as const;
        }
        if (!differs(current.config, wanted)) return "present" as const;
        await jsm.streams.update(wanted.name, { ...current.config, ...wanted });
        return "updated" as const;
      },
      catch: (error) => new EventsUnavailable({ detail: `events stream ${wanted.name}: ${describe(error)}` }),
    });

  const publishOne = (event: StreamEvent): Promise<PublishOutcome> =>
    js
      .publish(subjects.event(event.tenant, event.type, event.domain), JSON.stringify(event), {
        msgID: event.id,
        expect: { streamName: wanted.name },
      })
      .then(
        (ack): PublishOutcome => ({ _tag: "Acked", seq: ack.seq, duplicate: ack.duplicate }),
        (error: unknown): PublishOutcome => ({ _tag: "Failed", detail: describe(error) }),
      );

  const publishBatch = (events: ReadonlyArray<OutboxEvent>): Promise<ReadonlyArray<PublishOutcome>> =>
    acks.await(events.length, (n, reply) => {
      const event = events[n]!;
      const h = headers();
      h.set("Nats-Msg-Id", event.id);
      h.set("Nats-Expected-Stream", wanted.name);
      nc.publish(subjects.event(event.tenant, event.type, event.domain), JSON.stringify(event), { reply, headers: h });
    });

  return {
    ensure,
    // Each publish is sent at once, in order, so the stream keeps the outbox's order.
    publish: (events) => Effect.promise(() => publishBatch(events)),
    publishOne: (event) => Effect.promise(() => publishOne(event)),
  };
};

/** JetStream's answer to a publish: its acknowledgement, or an API error. */
interface PubAckReply {
  readonly seq?: number;
  readonly duplicate?: boolean;
  readonly error?: { readonly code?: number; readonly err_code?: number; readonly description?: string };
}

const outcomeOf = (msg: Msg): PublishOutcome => {
  // A status without a body: 503 when no stream listens on the subject (JetStream lost it).
  if (msg.headers?.hasError) return { _tag: "Failed", detail: `${msg.headers.code} ${msg.headers.description || "no responders"}` };
  try {
    const ack = msg.json<PubAckReply>();
    if (ack.error) return { _tag: "Failed", detail: `JetStream ${ack.error.code ?? ""} ${ack.error.err_code ?? ""}: ${ack.error.description ?? "error"}` };
    if (typeof ack.seq === "number") return { _tag: "Acked", seq: ack.seq, duplicate: ack.duplicate === true };
    return { _tag: "Failed", detail: `not a JetStream acknowledgement: ${msg.string().slice(0, 200)}` };
  } catch (error) {
    return { _tag: "Failed", detail: `not a JetStream acknowledgement: ${describe(error)}` };
  }
};

/**
 * Acknowledgements of publishes, each awaited by the token of its reply subject, on one
 * subscription (made at the first batch; nats.js makes it again after a reconnect).
 */
const makeAcks = (nc: NatsConnection, inboxPrefix: string | undefined) => {
  const inbox = createInbox(inboxPrefix);
  const waiting = new Map<string, (outcome: PublishOutcome) => void>();
  let subscription: Subscription | undefined;
  let issued = 0;
  const subscribe = () => {
    if (subscription && !subscription.isClosed()) return;
    subscription = nc.subscribe(`${inbox}.*`, {
      callback: (error, msg) => {
        if (error) return; // the subscription ended (refused, the connection closed): the batch's timer fails what waits, the next batch subscribes again
        const token = msg.subject.slice(inbox.length + 1);
        const settle = waiting.get(token);
        waiting.delete(token);
        settle?.(outcomeOf(msg));
      },
    });
  };

  /** Sends `count` publishes (`send(n, reply)`, in order) and resolves with their outcomes, each Failed that is not answered within the timeout. */
  const awaitAll = (count: number, send: (n: number, reply: string) => void): Promise<ReadonlyArray<PublishOutcome>> =>
    new Promise((resolve) => {
      const outcomes = new Array<PublishOutcome | undefined>(count);
      const tokens: string[] = [];
      let left = count;
      const finish = () => {
        clearTimeout(timer);
        for (const token of tokens) waiting.delete(token);
        // Array.from, not map: map skips the holes of what was never answered and leaves them holes.
        resolve(Array.from(outcomes, (outcome) => outcome ?? { _tag: "Failed", detail: `no acknowledgement within ${TIMEOUT_MS} ms` }));
      };
      const timer = setTimeout(finish, TIMEOUT_MS);
      if (count === 0) return finish();
      try {
        subscribe();
        for (let n = 0; n < count; n++) {
          const token = (issued++).toString(36);
          tokens.push(token);
          waiting.set(token, (outcome) => {
            outcomes[n] = outcome;
            if (--left === 0) finish();
          });
          send(n, `${inbox}.${token}`);
        }
      } catch (error) {
        // The connection is closed or draining: what was not sent fails now.
        for (let n = 0; n < count; n++) outcomes[n] ??= { _tag: "Failed", detail: describe(error) };
        finish();
      }
    });

  return { await: awaitAll };
};
