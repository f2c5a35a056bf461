// `followEvents` on a nats-server of the test's own: its consumer is named for the tenant
// and lives in the server's memory; when the server restarts and forgets it, following
// goes on from the event after the last one read, none lost, none twice.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { jetstream, jetstreamManager, StorageType } from "@nats-io/jetstream";
import { followEvents } from "../../cluster/events-client.ts";
import { makeSubjects } from "../../protocol/subjects.ts";
import { startNatsServer, type TestNatsServer } from "../support/nats-server.ts";

const subjects = makeSubjects("evclient");
let nats: TestNatsServer;
let nc: NatsConnection;

before(async () => {
  nats = await startNatsServer();
  nc = await connect({ servers: [nats.url], reconnectTimeWait: 100, maxReconnectAttempts: -1 });
  const jsm = await jetstreamManager(nc);
  await jsm.streams.add({ name: subjects.eventsStream, subjects: [subjects.events], storage: StorageType.File });
});

after(async () => {
  await nc?.close();
  await nats?.dispose();
});

/** Not a Tern event: `followEvents` reports its sequence to `onUndecodable`, which is all this test needs. */
const publish = (tenant: string, n: number) => jetstream(nc).publish(subjects.event(tenant, "accepted", "x.test"), `not an event ${n}`);

const within = <T>(promise: Promise<T>, ms: number): Promise<T> => {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([promise, new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`nothing within ${ms} ms`)), ms)))]).finally(() => clearTimeout(timer));
};

/** Once the client is back and JetStream answers again after the restart. */
const retried = async <T>(attempt: () => Promise<T>): Promise<T> => {
  for (let tries = 1; ; tries++) {
    try {
      return await attempt();
    } catch (error) {
      if (tries >= 50) throw error;
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
  }
};

test("a tenant's consumer is named for it; following survives a server restart that forgets the consumer", async () => {
  const seen: number[] = [];
  let wake: (() => void) | undefined;
  const events = followEvents(nc, {
    cluster: "evclient",
    tenant: "acme",
    start: "first",
    follow: true,
    timeoutMs: 2_000,
    onUndecodable: (seq) => {
      seen.push(seq);
      wake?.();
    },
  });
  const waitFor = (count: number) =>
    within(
      new Promise<void>((resolve) => {
        wake = () => seen.length >= count && resolve();
        wake();
      }),
      15_000,
    );
  // Undecodable events are never yielded: drive the generator in the background.
  const reading = (async () => {
    for await (const _ of events) void _;
  })().catch((error: unknown) => error);
  try {
    const first = (await publish("acme", 1)).seq;
    await publish("other", 2);
    await waitFor(1);
    const jsm = await jetstreamManager(nc);
    const names = (await jsm.consumers.list(subjects.eventsStream).next()).map((c) => c.name);
    assert.equal(names.length, 1);
    assert.match(names[0]!, /^tern-acme-[0-9a-f]{32}$/);

    await nats.restart();
    const third = await retried(async () => (await publish("acme", 3)).seq);
    await waitFor(2);
    assert.deepEqual(seen, [first, third]);
  } finally {
    // The reader never regains control (nothing is yielded), so closing the connection ends it.
    await nc.close();
    await within(reading, 5_000);
  }
});
