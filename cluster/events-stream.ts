// The cluster's events stream in JetStream: one stream over `tern.<cluster>.events.>`, file
// storage, old events dropped by age and size. Every node creates it at start, puts its
// limits right when they differ from the node's config, and creates it again when
// JetStream lost it (a nats-server restarted with a wiped store): a publish then finds no
// stream, and the publisher asks for `ensure` before trying again.
//
// A publish carries the event's id as Nats-Msg-Id: JetStream drops a second copy
// published within the duplicate window (an acknowledgement lost on the way back, a crash
// between the acknowledgement and the outbox's removal).
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
import type { NatsConnection } from "@nats-io/transport-node";
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

export const openEventsStream = (nc: NatsConnection, subjects: Subjects, config: EventsStreamConfig): EventsStream => {
  const js = jetstream(nc, { timeout: TIMEOUT_MS });
  const wanted = streamConfigOf(subjects, config);

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

  return {
    ensure,
    // Each publish is sent at once, in order, so the stream keeps the outbox's order.
    publish: (events) => Effect.promise(() => Promise.all(events.map(publishOne))),
    publishOne: (event) => Effect.promise(() => publishOne(event)),
  };
};
