// The NATS connection's state as /readyz reports it, followed from the client's status
// events, against a nats-server of the test's own that is stopped and started again.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { followNatsStatus, type NatsStatus } from "../../cluster/nats-status.ts";
import { startNatsServer, type TestNatsServer } from "../support/nats-server.ts";
import { startSecureNats } from "../support/secure-nats.ts";
import { eventually } from "../support/tern-node.ts";

let nats: TestNatsServer;
let nc: NatsConnection;
let status: NatsStatus;

before(async () => {
  nats = await startNatsServer();
  nc = await connect({ servers: [nats.url], maxReconnectAttempts: -1, reconnectTimeWait: 200 });
  status = followNatsStatus(nc);
});

after(async () => {
  status.stop();
  await nats.dispose();
});

test("connected: no problem", () => {
  assert.equal(status.state()._tag, "Connected");
  assert.equal(status.problem(), undefined);
});

test("the server goes away: reconnecting, naming the server lost; it comes back: connected", async () => {
  await nats.stop();
  await eventually(() => (status.state()._tag === "Reconnecting" ? true : undefined), 5_000, "reconnecting");
  assert.match(status.problem() ?? "", /^nats: reconnecting \(lost 127\.0\.0\.1:\d+\)$/);
  await nats.restart();
  await eventually(() => (status.state()._tag === "Connected" ? true : undefined), 10_000, "reconnected");
  assert.equal(status.problem(), undefined);
});

test("the connection is closed: closed for good", async () => {
  await nc.close();
  await eventually(() => (status.state()._tag === "Closed" ? true : undefined), 5_000, "closed");
  assert.equal(status.problem(), "nats: connection closed");
});

test("errors the server reports on a live connection, such as a permissions violation, are heard", async () => {
  const secure = await startSecureNats("statuscheck");
  const app = await secure.connectAs("application");
  const errors: string[] = [];
  const following = followNatsStatus(app, (detail) => errors.push(detail));
  try {
    app.subscribe("tern.statuscheck.mailbox.>");
    await eventually(() => (errors.length > 0 ? true : undefined), 5_000, "an error event");
    assert.match(errors[0]!, /Permissions Violation for Subscription to "tern\.statuscheck\.mailbox\.>"/);
  } finally {
    following.stop();
    await app.close();
    await secure.stop();
  }
});
