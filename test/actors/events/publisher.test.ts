// The publisher drains the outbox to a real JetStream (a nats-server of the test's own):
// in order, removing each event once acknowledged; an acknowledgement lost on the way
// back means the event is published again and JetStream drops the copy by its id; while
// NATS is down the events wait in the outbox, and once it is back (its store wiped, so
// the stream is gone) the stream is created again and every event arrives.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Effect, Exit, Scope } from "effect";
import { open, type RootDatabase } from "lmdb";
import { jetstreamManager } from "@nats-io/jetstream";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { startPublisher, type EventSink, type PublisherOptions } from "../../../actors/events/publisher.ts";
import { openOutbox, type Outbox } from "../../../actors/queue/outbox.ts";
import { followEvents } from "../../../cluster/events-client.ts";
import { openEventsStream } from "../../../cluster/events-stream.ts";
import type { EventDraft } from "../../../protocol/events.ts";
import { makeSubjects } from "../../../protocol/subjects.ts";
import { startNatsServer, type TestNatsServer } from "../../support/nats-server.ts";
import { eventually, uniqueCluster } from "../../support/tern-node.ts";

let server: TestNatsServer;
let nc: NatsConnection;
let root: RootDatabase;
let dir: string;

before(async () => {
  server = await startNatsServer();
  nc = await connect({ servers: [server.url], maxReconnectAttempts: -1, reconnectTimeWait: 100 });
  dir = await mkdtemp(join(tmpdir(), "tern-publisher-"));
  root = open({ path: join(dir, "tern.lmdb"), maxDbs: 64 });
});

after(async () => {
  await nc.close();
  await root.close();
  await server.dispose();
  await rm(dir, { recursive: true, force: true });
});

const streamConfig = { maxAgeSec: 3600, maxBytes: 8 * 1024 * 1024, duplicateWindowSec: 120, replicas: 1 };

const accepted = (msg: string, n: number): EventDraft => ({
  type: "accepted",
  time: 1_000 + n,
  node: "n1",
  tenant: "default",
  msg,
  entry: `${msg}.0`,
  domain: "example.org",
  rcpt: `r${n}@example.org`,
  sender: "s@example.net",
  size: 1,
});

const write = (outbox: Outbox, drafts: ReadonlyArray<EventDraft>) => root.transaction(() => outbox.write(drafts)).then(outbox.written);

const observed = () => {
  const seen = { published: 0, duplicates: 0, failed: 0, stalled: [] as string[], ensured: [] as string[] };
  return {
    seen,
    observer: {
      ensured: (state: string) => void seen.ensured.push(state),
      published: (count: number, duplicates: number) => {
        seen.published += count;
        seen.duplicates += duplicates;
      },
      failed: (count: number) => void (seen.failed += count),
      stalled: (detail: string) => void seen.stalled.push(detail),
      resumed: () => undefined,
    },
  };
};

/** Runs a publisher until the returned stop is called. */
const run = async (options: Omit<PublisherOptions, "batch" | "retryBaseMs" | "retryMaxMs" | "idlePollMs" | "stopGraceMs">) => {
  const scope = Effect.runSync(Scope.make());
  await Effect.runPromise(
    Scope.provide(scope)(startPublisher({ ...options, batch: 4, retryBaseMs: 50, retryMaxMs: 200, idlePollMs: 200, stopGraceMs: 500 })),
  );
  return () => Effect.runPromise(Scope.close(scope, Exit.void));
};

const stored = async (cluster: string) => {
  const found: Array<{ seq: number; id: string; rcpt: string }> = [];
  for await (const { seq, event } of followEvents(nc, { cluster })) found.push({ seq, id: event.id, rcpt: event.type === "accepted" ? event.rcpt : "" });
  return found;
};

test("events are published in outbox order, in bounded batches, and removed once acknowledged", async () => {
  const cluster = uniqueCluster();
  const outbox = openOutbox(root, `a${cluster}`);
  const { seen, observer } = observed();
  await write(outbox, Array.from({ length: 10 }, (_, n) => accepted("M1", n)));
  const stop = await run({ outbox, sink: openEventsStream(nc, makeSubjects(cluster), streamConfig), observer });
  await eventually(() => (outbox.size() === 0 ? true : undefined), 10_000, "outbox drained");
  await write(outbox, [accepted("M2", 10)]); // a write wakes the idle publisher
  await eventually(() => (outbox.size() === 0 ? true : undefined), 10_000, "second write published");
  await stop();
  assert.deepEqual(seen.ensured, ["created"]);
  const events = await stored(cluster);
  assert.deepEqual(events.map((e) => e.rcpt), Array.from({ length: 11 }, (_, n) => `r${n}@example.org`));
  assert.deepEqual(events.map((e) => e.seq), Array.from({ length: 11 }, (_, n) => n + 1));
  assert.equal(seen.published, 11);
  assert.equal(seen.duplicates, 0);
});

test("an acknowledgement lost on the way back: the event is published again and JetStream drops the copy by id", async () => {
  const cluster = uniqueCluster();
  const outbox = openOutbox(root, `b${cluster}`);
  const real = openEventsStream(nc, makeSubjects(cluster), streamConfig);
  let lose = true;
  const lossy: EventSink = {
    ensure: real.ensure,
    // The first round reaches JetStream, but its acknowledgements are lost.
    publish: (events) =>
      real.publish(events).pipe(
        Effect.map((outcomes) => (lose ? ((lose = false), outcomes.map(() => ({ _tag: "Failed" as const, detail: "ack lost" }))) : outcomes)),
      ),
  };
  const { seen, observer } = observed();
  await write(outbox, [accepted("M1", 0), accepted("M1", 1), accepted("M1", 2)]);
  const stop = await run({ outbox, sink: lossy, observer });
  await eventually(() => (outbox.size() === 0 ? true : undefined), 10_000, "outbox drained");
  await stop();
  assert.equal(seen.failed, 3);
  assert.equal(seen.duplicates, 3, "the second copies were recognised by id");
  const events = await stored(cluster);
  assert.deepEqual(events.map((e) => e.rcpt), ["r0@example.org", "r1@example.org", "r2@example.org"]);
});

test("while NATS is down events wait in the outbox; when it is back without its store, the stream is created again and gets them all", async () => {
  const cluster = uniqueCluster();
  const outbox = openOutbox(root, `c${cluster}`);
  const { seen, observer } = observed();
  const stop = await run({ outbox, sink: openEventsStream(nc, makeSubjects(cluster), streamConfig), observer });
  await write(outbox, [accepted("M1", 0)]);
  await eventually(() => (outbox.size() === 0 ? true : undefined), 10_000, "first event published");
  await server.stop();
  await write(outbox, [accepted("M2", 1), accepted("M3", 2)]);
  await eventually(() => (seen.stalled.length > 0 ? true : undefined), 10_000, "publisher stalled");
  assert.equal(outbox.size(), 2, "nothing is removed while NATS is away");
  await server.restart({ wipe: true });
  await eventually(() => (outbox.size() === 0 ? true : undefined), 15_000, "outbox drained after the restart");
  await stop();
  assert.deepEqual(seen.ensured, ["created", "created"]);
  const events = await stored(cluster);
  assert.deepEqual(events.map((e) => e.rcpt), ["r1@example.org", "r2@example.org"], "the wiped store lost the first event; the waiting ones arrived");
  const jsm = await jetstreamManager(nc);
  assert.equal((await jsm.streams.info(makeSubjects(cluster).eventsStream)).config.max_bytes, streamConfig.maxBytes);
});

test("a batch nobody acknowledges: each event fails after the publish timeout and waits in the outbox; once a stream takes them they all arrive", async () => {
  const cluster = uniqueCluster();
  const subjects = makeSubjects(cluster);
  const outbox = openOutbox(root, `d${cluster}`);
  const real = openEventsStream(nc, subjects, streamConfig);
  // Something that is not JetStream takes the publishes and never answers (a stream whose
  // leader is being elected looks like this): no "no responders" comes back, only silence.
  const silent = nc.subscribe(subjects.events);
  await nc.flush();
  let streamAway = true;
  const sink: EventSink = { ensure: () => (streamAway ? Effect.succeed("present") : real.ensure()), publish: real.publish };
  const { seen, observer } = observed();
  await write(outbox, [accepted("M1", 0), accepted("M1", 1), accepted("M1", 2)]);
  const stop = await run({ outbox, sink, observer });
  try {
    await eventually(() => (seen.stalled.length > 0 ? true : undefined), 10_000, "publisher stalled");
    assert.deepEqual(seen.stalled, ["no acknowledgement within 5000 ms"]);
    assert.equal(seen.failed, 3, "every unanswered event is counted failed");
    assert.equal(outbox.size(), 3, "nothing unanswered leaves the outbox");
    silent.unsubscribe();
    streamAway = false;
    await eventually(() => (outbox.size() === 0 ? true : undefined), 15_000, "outbox drained once the stream is there");
  } finally {
    await stop();
  }
  const events = await stored(cluster);
  assert.deepEqual(events.map((e) => e.rcpt), ["r0@example.org", "r1@example.org", "r2@example.org"]);
});
