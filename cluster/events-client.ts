// Reading a cluster's events from JetStream, for applications and `tern events`:
//
//   const nc = await connect({ servers, user, pass, inboxPrefix });
//   for await (const { seq, event } of followEvents(nc, { cluster: "tern", type: "bounced", follow: true })) …
//
// An ordered consumer (ephemeral, in the server's memory, recreated by nats.js from the
// last sequence seen after any gap or loss) filtered to the tenant, type and domain
// asked for, starting at a stream sequence, a time, the first stored event, or only new
// ones. Events are decoded with the protocol's Schema; one that does not decode (a newer
// node's event kind) is handed to `onUndecodable` and skipped. An application user of
// one tenant must ask for that tenant (its NATS permissions allow no other filter) and
// connect with `inboxPrefix` set to the tenant's inbox (`Subjects.tenantInbox`).
import { DeliverPolicy, jetstream, type ConsumerMessages } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import { Exit, Schema } from "effect";
import { TernEvent, type EventType } from "../protocol/events.ts";
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

export interface StoredEvent {
  /** The stream sequence: start here again with `{ seq: seq + 1 }`. */
  readonly seq: number;
  readonly event: TernEvent;
}

const decode = Schema.decodeUnknownExit(Schema.fromJsonString(TernEvent));

const startOptions = (start: EventsStart) => {
  if (start === "first") return { deliver_policy: DeliverPolicy.All };
  if (start === "new") return { deliver_policy: DeliverPolicy.New };
  if ("seq" in start) return { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: start.seq };
  return { opt_start_time: start.time.toISOString() };
};

/** The events matching `options`, in stream order. Breaking out of the loop deletes the consumer. */
export async function* followEvents(nc: NatsConnection, options: FollowOptions): AsyncGenerator<StoredEvent> {
  const subjects = makeSubjects(options.cluster);
  const filter = subjects.eventFilter(options);
  const start = options.start ?? (options.follow ? "new" : "first");
  const consumer = await jetstream(nc, { timeout: options.timeoutMs ?? 5_000 }).consumers.get(subjects.eventsStream, { filter_subjects: filter, ...startOptions(start) });
  if (!options.follow && (await consumer.info(true)).num_pending === 0) return;
  const messages: ConsumerMessages = await consumer.consume({ max_messages: 256 });
  try {
    for await (const message of messages) {
      const decoded = decode(new TextDecoder().decode(message.data));
      if (Exit.isSuccess(decoded)) yield { seq: message.seq, event: decoded.value };
      else options.onUndecodable?.(message.seq, String(decoded.cause));
      if (!options.follow && message.info.pending === 0) return;
    }
  } finally {
    await messages.close().catch(() => undefined);
    await consumer.delete().catch(() => undefined);
  }
}
