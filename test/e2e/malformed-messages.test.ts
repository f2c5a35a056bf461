// Garbage on a node's NATS subjects gets a typed `malformed` reply and never reaches a
// handler or hurts the node: afterwards it still serves mailbox asks and reports ready.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import nodemailer from "nodemailer";
import { decodeFrame, encodeFrame } from "../../protocol/wire.ts";
import { makeSubjects } from "../../protocol/subjects.ts";
import { makeDataDir, removeDataDir, startTernNode, uniqueCluster, type TernNode } from "../support/tern-node.ts";

const cluster = uniqueCluster();
const subjects = makeSubjects(cluster);
const listSubject = subjects.mailbox("solo", "list");

let node: TernNode | undefined;
let dataDir: string;
let nc: NatsConnection | undefined;

before(async () => {
  dataDir = await makeDataDir();
  node = await startTernNode({
    nodeId: "solo",
    cluster,
    dataDir,
    localDomains: ["example.test"],
    users: [{ address: "alice@example.test", password: "alice-pw", home: "solo" }],
  });
  nc = await connect({ servers: ["nats://127.0.0.1:4222"], name: "tern-test-malformed" });
});

after(async () => {
  await nc?.close();
  await node?.kill("SIGTERM");
  await removeDataDir(dataDir);
});

/** Sends `payload` as a request and decodes the reply frame (the reply itself must be a well-formed frame). */
const ask = async (subject: string, payload: Uint8Array) => {
  const msg = await nc!.request(subject, payload, { timeout: 5_000 });
  const frame = decodeFrame(msg.data);
  assert.notEqual(typeof frame, "string", `reply on ${subject} is not a frame: ${String(frame)}`);
  return frame as Exclude<ReturnType<typeof decodeFrame>, string>;
};

/** A frame whose length prefix is right but whose JSON bytes are whatever we say. */
const frameWithJsonText = (text: string) => {
  const json = Buffer.from(text, "utf8");
  const frame = Buffer.alloc(4 + json.length);
  frame.writeUInt32BE(json.length, 0);
  json.copy(frame, 4);
  return frame;
};

const garbage: Array<{ name: string; payload: Uint8Array; detail: RegExp }> = [
  { name: "empty message", payload: new Uint8Array(), detail: /shorter than its length prefix/ },
  { name: "3 bytes", payload: Uint8Array.from([0, 0, 1]), detail: /shorter than its length prefix/ },
  { name: "frame whose JSON lacks the required fields", payload: encodeFrame({}), detail: /\S/ },
  { name: "frame whose JSON is not an object", payload: encodeFrame(["alice@example.test"]), detail: /\S/ },
  { name: "frame with invalid JSON", payload: frameWithJsonText('{"user": alice@example.test'), detail: /JSON does not parse/ },
  { name: "frame whose length prefix exceeds it", payload: Buffer.from([0, 0, 0, 200, 0x7b, 0x7d]), detail: /length exceeds/ },
];

for (const [kind, subject] of [
  ["mailbox list", listSubject],
  ["resolver", subjects.resolve],
] as const) {
  for (const { name, payload, detail } of garbage) {
    test(`${kind}: ${name} gets {ok:false, malformed}`, async () => {
      const reply = await ask(subject, payload);
      assert.equal(reply.attachment, undefined);
      const json = reply.json as Record<string, unknown>;
      assert.deepEqual(Object.keys(json).sort(), ["malformed", "ok"], JSON.stringify(json));
      assert.equal(json.ok, false);
      assert.equal(typeof json.malformed, "string");
      assert.match(json.malformed as string, detail);
    });
  }
}

test("a request missing a field names the field in its malformed reply", async () => {
  const mailbox = (await ask(listSubject, encodeFrame({}))).json as { malformed: string };
  assert.match(mailbox.malformed, /user/);
  const resolver = (await ask(subjects.resolve, encodeFrame({ user: "alice@example.test" }))).json as { malformed: string };
  assert.match(resolver.malformed, /domain/);
});

test("after the garbage the node still serves valid asks and is ready", async () => {
  // Garbage without a reply subject must not hurt either.
  nc!.publish(listSubject, Uint8Array.from([1]));
  nc!.publish(subjects.resolve, encodeFrame({}));
  await nc!.flush();

  const empty = await ask(listSubject, encodeFrame({ user: "alice@example.test" }));
  assert.deepEqual(empty.json, { ok: true, value: { messages: [] } });

  const raw = "From: x@elsewhere.test\r\nTo: alice@example.test\r\nSubject: after garbage\r\n\r\nstill alive\r\n";
  const transport = nodemailer.createTransport({ host: "127.0.0.1", port: node!.ports.smtp, secure: false, ignoreTLS: true });
  let queueId: string | undefined;
  try {
    const info = await transport.sendMail({ envelope: { from: "x@elsewhere.test", to: "alice@example.test" }, raw });
    queueId = /queued as ([0-9A-Za-z]+)/.exec(info.response)?.[1];
  } finally {
    transport.close();
  }
  assert.ok(queueId, "no queue id in the 250 reply");
  await node!.waitForEvent("recipient.delivered", { queueId });

  const listed = await ask(listSubject, encodeFrame({ user: "alice@example.test" }));
  const json = listed.json as { ok: boolean; value: { messages: Array<{ uid: string; size: number }> } };
  assert.equal(json.ok, true, JSON.stringify(json));
  assert.equal(json.value.messages.length, 1, JSON.stringify(json));
  const [entry] = json.value.messages;
  assert.equal(typeof entry!.uid, "string");

  // The listed size is that of the stored message, which ends with what was sent.
  const retrieved = await ask(subjects.mailbox("solo", "retrieve"), encodeFrame({ user: "alice@example.test", uid: entry!.uid }));
  assert.deepEqual(retrieved.json, { ok: true, value: { size: entry!.size } });
  const body = Buffer.from(retrieved.attachment ?? new Uint8Array());
  assert.equal(body.length, entry!.size);
  // Final delivery's Return-Path and Delivered-To, then the Received field of acceptance.
  assert.match(body.toString("utf8"), /^Return-Path: <[^>]*>\r\nDelivered-To: alice@example\.test\r\nReceived: /, body.toString("utf8").slice(0, 120));
  assert.ok(body.toString("utf8").endsWith(`\r\n${raw}`), JSON.stringify(body.toString("utf8")));

  const ready = await fetch(`http://127.0.0.1:${node!.ports.http}/readyz`);
  assert.equal(ready.status, 200, await ready.text());
  assert.deepEqual(node!.events("actor.escalated"), []);
  assert.deepEqual(node!.events("actor.restarted"), []);
});
