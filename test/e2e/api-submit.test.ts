// The NATS API's submit against a real node on the machine's NATS, delivering to a
// loopback sink through real DNS (dnsmasq): raw and composed messages arrive intact, the
// reply comes after the commit (kill -9 right after it loses nothing), idempotency keys
// hold across a restart, bad input gets typed error replies with the micro headers, the
// micro discovery answers, a 30 MB message goes through the chunked path, and tern submit
// sends a file.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { simpleParser } from "mailparser";
import { headers as natsHeaders, type NatsConnection } from "@nats-io/transport-node";
import { connectTern, TernApiError, type TernClient } from "../../cluster/client.ts";
import { followEvents } from "../../cluster/events-client.ts";
import { ERROR_CODE_HEADER, ERROR_HEADER, UPLOAD_SEQ_HEADER } from "../../protocol/api.ts";
import { makeSubjects } from "../../protocol/subjects.ts";
import { startDnsmasq, type RunningDnsmasq } from "../support/dnsmasq.ts";
import { startSink, type Sink } from "../support/sink.ts";
import { eventually, makeDataDir, projectRoot, readMetric, removeDataDir, run, startTernNode, uniqueCluster, type TernNode, ternCli } from "../support/tern-node.ts";

const cluster = uniqueCluster();
const subjects = makeSubjects(cluster);
let dns: RunningDnsmasq;
let sink: Sink;
let node: TernNode;
let dataDir: string;
let tern: TernClient;
let nc: NatsConnection;

const config = () => ({
  nodeId: "api",
  cluster,
  dataDir,
  localDomains: ["example.test"],
  users: [{ address: "alice@example.test", password: "pw", aliases: ["alerts@partner.test"] }],
  dns: { servers: [`${dns.host}:${dns.port}`], timeoutMs: 1000, tries: 2, allowedTargetNetworks: ["127.0.0.0/8"] },
  delivery: { remotePort: sink.port, retryBaseMs: 200, retryMaxMs: 1000, pollMs: 50, connectTimeoutMs: 2000 },
  limits: { maxMessageBytes: 40 * 1024 * 1024, maxRecipients: 5 },
  api: { tenants: [{ name: "acme", senderDomains: ["acme.test"] }], maxSendAtAheadMs: 3_600_000, uploadIdleTimeoutMs: 1_500 },
});

before(async () => {
  sink = await startSink();
  dns = await startDnsmasq({
    mx: [{ domain: "remote.test", host: "mx.remote.test", preference: 10 }],
    hosts: [{ name: "mx.remote.test", address: "127.0.0.1" }],
  });
  dataDir = await makeDataDir();
  node = await startTernNode(config());
  tern = await connectTern({ cluster });
  nc = tern.nc;
});

after(async () => {
  await tern?.close();
  await node?.kill("SIGTERM");
  await Promise.all([sink?.close(), dns?.stop(), removeDataDir(dataDir)]);
});

/** The sink got the message Tern queued under this id (the API's Received header names it). */
const arrivedAs = (messageId: string, timeoutMs = 20_000) =>
  eventually(() => sink.received.find((m) => m.body.toString("latin1").includes(` with NATS id ${messageId}`)), timeoutMs, `message ${messageId} at the sink`);

/** A request straight on NATS, as `nats req` would send it: the error headers and JSON body. */
const request = async (endpoint: string, payload: string, tenant = "default") => {
  const msg = await nc.request(subjects.api(tenant, endpoint), payload, { timeout: 10_000 });
  return { error: msg.headers?.get(ERROR_HEADER), status: msg.headers?.get(ERROR_CODE_HEADER), body: msg.json<Record<string, any>>() };
};

test("a raw message is delivered with its envelope; unknown local users are refused with reasons, others accepted", async () => {
  const raw = "From: alice@example.test\nTo: bob@remote.test\nSubject: raw over nats\n\nHello over NATS.\n";
  const reply = await tern.submitRaw(raw, { from: "alice@example.test", to: ["bob@remote.test", "nobody@example.test", "carol@remote.test"] });
  assert.deepEqual(reply.accepted, ["bob@remote.test", "carol@remote.test"]);
  assert.deepEqual(reply.refused, [{ recipient: "nobody@example.test", reason: "unknown-user", reply: "550 5.1.1 No such user here" }]);
  assert.equal(reply.duplicate, false);
  const mail = await arrivedAs(reply.messageId);
  assert.equal(mail.from, "alice@example.test");
  assert.deepEqual([...mail.to].sort(), ["bob@remote.test", "carol@remote.test"]);
  const text = mail.body.toString("latin1");
  assert.match(text, /^Received: from api \(tenant default\)\r\n\tby [^\r\n]+ \(Tern\) with NATS id /);
  assert.match(text, /\r\nMessage-ID: <[^>]+>\r\nDate: /, "submission headers added");
  assert.ok(text.endsWith("Subject: raw over nats\r\n\r\nHello over NATS.\r\n"), "bare LF became CRLF, body intact");
});

test("a structured message is composed with MailComposer: attachment intact, Bcc in the envelope only, tags and metadata kept", async () => {
  const attachment = Buffer.from(Array.from({ length: 4096 }, (_, n) => n % 256));
  // Events are published to JetStream; a core subscriber on their subjects sees them live too.
  const events = nc.subscribe(subjects.eventFilter({ tenant: "default", type: "accepted" }));
  const reply = await tern.submit(
    {
      from: "Alice <alice@example.test>",
      to: "bob@remote.test",
      bcc: ["hidden@remote.test"],
      subject: "Structured ✓",
      text: "plain part",
      html: "<p>html part</p>",
      headers: { "X-Campaign": "spring" },
      attachments: [{ filename: "data.bin", contentType: "application/octet-stream", content: attachment }],
    },
    { tags: ["welcome"], metadata: { order: "42" } },
  );
  const mail = await arrivedAs(reply.messageId);
  assert.deepEqual([...mail.to].sort(), ["bob@remote.test", "hidden@remote.test"]);
  const parsed = await simpleParser(mail.body);
  assert.equal(parsed.subject, "Structured ✓");
  assert.equal(parsed.text?.trim(), "plain part");
  assert.match(String(parsed.html), /<p>html part<\/p>/);
  assert.equal(parsed.headers.get("x-campaign"), "spring");
  assert.equal(parsed.headers.has("bcc"), false);
  assert.equal(parsed.attachments.length, 1);
  assert.equal(parsed.attachments[0]!.filename, "data.bin");
  assert.deepEqual(parsed.attachments[0]!.content, attachment);
  for await (const event of events) {
    const accepted = event.json<Record<string, unknown>>();
    if (accepted.msg !== reply.messageId) continue;
    assert.deepEqual([accepted.tenant, accepted.tags, accepted.metadata], ["default", ["welcome"], { order: "42" }]);
    break;
  }
});

test("an idempotency key returns the first reply and queues once, also after a restart", async () => {
  const envelope = { from: "alice@example.test", to: ["once@remote.test"] };
  const first = await tern.submitRaw("Subject: once\r\n\r\nonly once\r\n", envelope, { idempotencyKey: "order-1" });
  const [second, third] = await Promise.all([
    tern.submitRaw("Subject: once\r\n\r\nonly once\r\n", envelope, { idempotencyKey: "order-1" }),
    tern.submitRaw("Subject: once\r\n\r\nonly once\r\n", envelope, { idempotencyKey: "order-1" }),
  ]);
  assert.deepEqual({ ...second, duplicate: false }, first);
  assert.deepEqual({ ...third, duplicate: false }, first);
  assert.equal(second.duplicate, true);
  await arrivedAs(first.messageId);

  await node.kill("SIGTERM");
  node = await startTernNode(config());
  const afterRestart = await tern.submitRaw("Subject: once\r\n\r\nonly once\r\n", envelope, { idempotencyKey: "order-1" });
  assert.equal(afterRestart.messageId, first.messageId);
  assert.equal(afterRestart.duplicate, true);
  // Keys are per tenant: another tenant's identical key is its own.
  const acme = await connectTern({ cluster, tenant: "acme", nc });
  const other = await acme.submitRaw("Subject: once\r\n\r\nonly once\r\n", { from: "news@acme.test", to: ["once@remote.test"] }, { idempotencyKey: "order-1" });
  assert.notEqual(other.messageId, first.messageId);
  await arrivedAs(other.messageId);
  assert.equal(sink.received.filter((m) => m.to.includes("once@remote.test")).length, 2);
});

test("the reply comes after the commit: killed with SIGKILL right after it, the node delivers the message (at its send-at time) after restart", async () => {
  const sendAt = Date.now() + 2_000;
  const reply = await tern.submitRaw("Subject: durable\r\n\r\nsurvives kill -9\r\n", { from: "alice@example.test", to: ["durable@remote.test"] }, { sendAt: new Date(sendAt) });
  await node.kill("SIGKILL");
  assert.ok(reply.dueAt >= sendAt - 1, "due at the send-at time");
  node = await startTernNode(config());
  const mail = await arrivedAs(reply.messageId);
  assert.ok(Date.now() >= sendAt, "not delivered before its send-at time");
  assert.deepEqual(mail.to, ["durable@remote.test"]);
});

test("garbage, schema violations and refused requests get typed error replies with the micro error headers", async () => {
  const garbage = await request("submit", "\u0000\u00ff not json");
  assert.equal(garbage.status, "400");
  assert.equal(garbage.body.error.code, "BadRequest");
  assert.match(String(garbage.error), /^BadRequest: the request is not JSON/);

  const schema = await request("submit", JSON.stringify({ raw: "SGk=", envelope: { from: "alice@example.test", to: [] } }));
  assert.equal(schema.body.error.code, "BadRequest");
  assert.match(schema.body.error.message, /envelope.*to|to.*length/is);

  const both = await request("submit", JSON.stringify({ raw: "SGk=", message: { from: "a@example.test" }, envelope: { from: "alice@example.test", to: ["x@remote.test"] } }));
  assert.equal(both.body.error.code, "BadRequest");

  const notBase64 = await request("submit", JSON.stringify({ raw: "%%%", envelope: { from: "alice@example.test", to: ["x@remote.test"] } }));
  assert.equal(notBase64.body.error.code, "BadMessage");
  assert.equal(notBase64.status, "422");

  const nul = await request("submit", JSON.stringify({ raw: Buffer.from("Subject: x\r\n\r\na\u0000b\r\n").toString("base64"), envelope: { from: "alice@example.test", to: ["x@remote.test"] } }));
  assert.equal(nul.body.error.code, "BadMessage");

  const tooLarge = await request("upload.begin", JSON.stringify({ envelope: { from: "alice@example.test", to: ["x@remote.test"] }, size: 50 * 1024 * 1024 }));
  assert.equal(tooLarge.body.error.code, "TooLarge");
  assert.equal(tooLarge.status, "413");

  const tooMany = await request("submit", JSON.stringify({ raw: "SGk=", envelope: { from: "alice@example.test", to: ["a@r.test", "b@r.test", "c@r.test", "d@r.test", "e@r.test", "f@r.test"] } }));
  assert.equal(tooMany.body.error.code, "LimitExceeded");

  const tags = await request("submit", JSON.stringify({ raw: "SGk=", envelope: { from: "alice@example.test", to: ["x@remote.test"] }, tags: Array.from({ length: 17 }, (_, n) => `t${n}`) }));
  assert.equal(tags.body.error.code, "BadRequest");

  const farAhead = await request("submit", JSON.stringify({ raw: "SGk=", envelope: { from: "alice@example.test", to: ["x@remote.test"] }, sendAt: Date.now() + 2 * 3_600_000 }));
  assert.equal(farAhead.body.error.code, "LimitExceeded");

  const stranger = await request("submit", JSON.stringify({ raw: "SGk=", envelope: { from: "someone@elsewhere.test", to: ["x@remote.test"] } }));
  assert.equal(stranger.body.error.code, "SenderNotAllowed");
  assert.equal(stranger.status, "403");

  const otherTenant = await request("submit", JSON.stringify({ raw: "SGk=", envelope: { from: "news@acme.test", to: ["x@remote.test"] } }));
  assert.equal(otherTenant.body.error.code, "SenderNotAllowed", "acme's domain is not the default tenant's");

  const unknownTenant = await request("submit", JSON.stringify({ raw: "SGk=", envelope: { from: "alice@example.test", to: ["x@remote.test"] } }), "nosuch");
  assert.equal(unknownTenant.body.error.code, "UnknownTenant");

  const allRefused = await request("submit", JSON.stringify({ raw: "SGk=", envelope: { from: "alice@example.test", to: ["ghost@example.test"] } }));
  assert.equal(allRefused.body.error.code, "AllRecipientsRefused");
  assert.deepEqual(allRefused.body.error.refused, [{ recipient: "ghost@example.test", reason: "unknown-user", reply: "550 5.1.1 No such user here" }]);

  const unknownUpload = await request(`upload.api.${"0".repeat(24)}`, JSON.stringify({ chunks: 0, bytes: 0 }));
  assert.equal(unknownUpload.body.error.code, "NotFound");

  // The node is still there and still takes mail.
  const alias = await tern.submitRaw("Subject: alias\r\n\r\nfrom an alias\r\n", { from: "alerts@partner.test", to: ["x@remote.test"] });
  await arrivedAs(alias.messageId);
  const tenant = await connectTern({ cluster, tenant: "acme", nc });
  const acme = await tenant.submitRaw("Subject: acme\r\n\r\nfrom a tenant\r\n", { from: "news@acme.test", to: ["x@remote.test"] });
  assert.equal(acme.tenant, "acme");
  assert.match((await arrivedAs(acme.messageId)).body.toString("latin1"), /^Received: from api \(tenant acme\)/);
  await assert.rejects(tern.submitRaw("x", { from: "alice@example.test", to: ["ghost@example.test"] }), (error: TernApiError) => error.code === "AllRecipientsRefused");
});

test("$SRV.PING, INFO and STATS answer as the NATS micro conventions say", async () => {
  const gather = async (subject: string) => {
    const replies = [];
    for await (const msg of await nc.requestMany(subject, "", { maxWait: 1_000 })) replies.push(msg.json<Record<string, any>>());
    return replies.filter((r) => r.name === subjects.apiService);
  };
  const [ping] = await gather("$SRV.PING");
  assert.deepEqual(ping, { type: "io.nats.micro.v1.ping_response", name: subjects.apiService, id: "api", version: "1.0.0", metadata: { cluster, node: "api" } });
  const [info] = await gather(`$SRV.INFO.${subjects.apiService}`);
  assert.equal(info!.type, "io.nats.micro.v1.info_response");
  assert.deepEqual(
    info!.endpoints.map((e: { name: string; subject: string; queue_group: string }) => [e.name, e.subject, e.queue_group]),
    [
      ["submit", subjects.api("*", "submit"), subjects.apiQueueGroup],
      ["upload-begin", subjects.api("*", "upload.begin"), subjects.apiQueueGroup],
      ["status", subjects.api("*", "status"), subjects.apiQueueGroup],
      ...["add", "import", "remove", "list"].map((op) => [`suppressions-${op}`, subjects.api("*", `suppressions.${op}`), subjects.apiQueueGroup]),
      ["upload", subjects.api("*", "upload.api.*"), ""],
    ],
  );
  await request("submit", "not json");
  const [stats] = await gather(`$SRV.STATS.${subjects.apiService}.api`);
  assert.equal(stats!.type, "io.nats.micro.v1.stats_response");
  const submit = stats!.endpoints.find((e: { name: string }) => e.name === "submit");
  assert.ok(submit.num_requests >= 1 && submit.num_errors >= 1, JSON.stringify(submit));
  assert.match(submit.last_error, /^BadRequest/);
  assert.ok(submit.average_processing_time > 0);
});

test("a 30 MB message goes through the chunked upload of the client module and arrives whole", async () => {
  const lines = Array.from({ length: Math.ceil((30 * 1024 * 1024) / 76) }, (_, n) => `line ${String(n).padStart(10, "0")} ${"y".repeat(58)}\r\n`);
  const raw = Buffer.from(`From: alice@example.test\r\nSubject: big\r\n\r\n${lines.join("")}`, "latin1");
  assert.ok(raw.length > 30 * 1024 * 1024);
  const reply = await tern.submitRaw(raw, { from: "alice@example.test", to: ["big@remote.test"] }, { idempotencyKey: "big-1" });
  const mail = await arrivedAs(reply.messageId, 60_000);
  assert.ok(mail.body.subarray(mail.body.length - raw.length).equals(raw), "the 30 MB body arrived byte for byte");
  const again = await tern.submitRaw(raw, { from: "alice@example.test", to: ["big@remote.test"] }, { idempotencyKey: "big-1" });
  assert.equal(again.messageId, reply.messageId, "a retried upload with the key is answered at begin");
});

test("an abandoned upload is discarded, body and all, after its idle timeout; another tenant cannot touch it", async () => {
  const begun = await request("upload.begin", JSON.stringify({ envelope: { from: "alice@example.test", to: ["x@remote.test"] } }));
  const uploadSubject = String(begun.body.upload.subject);
  assert.equal(uploadSubject, subjects.api("default", `upload.api.${begun.body.upload.id}`));
  const foreign = await nc.request(uploadSubject.replace(".default.", ".acme."), JSON.stringify({ chunks: 0, bytes: 0 }), { timeout: 5_000 });
  assert.equal(foreign.json<Record<string, any>>().error.code, "NotFound");
  const chunk = await nc.request(uploadSubject, Buffer.from(`${"z".repeat(98)}\r\n`.repeat(2_000)), { timeout: 5_000, headers: (() => { const h = natsHeaders(); h.set(UPLOAD_SEQ_HEADER, "0"); return h; })() });
  assert.deepEqual(chunk.json(), { chunks: 1, bytes: 200_000 });
  assert.equal(await readMetric(node, "tern_spool_incoming_bodies"), 1);
  await node.waitForEvent("api.upload.discarded", { upload: begun.body.upload.id, reason: "idle" }, 10_000);
  await eventually(async () => ((await readMetric(node, "tern_spool_incoming_bodies")) === 0 ? true : undefined), 5_000, "the partial body removed");
  const late = await nc.request(uploadSubject, JSON.stringify({ chunks: 1, bytes: 200_000 }), { timeout: 5_000 });
  assert.equal(late.json<Record<string, any>>().error.code, "NotFound");
});

test("tern submit sends a message file and prints its id", async () => {
  const file = join(dataDir, "message.eml");
  await writeFile(file, "From: Alice <alice@example.test>\nTo: cli@remote.test\nSubject: from the cli\n\nsent by tern submit\n");
  const outcome = await run(process.execPath, [...ternCli, "submit", "--config", join(dataDir, "config-api.json"), "--tag", "cli", "--meta", "source=test", file]);
  assert.equal(outcome.code, 0, outcome.stdout + outcome.stderr);
  const messageId = /queued as ([0-9A-Z]+)/.exec(outcome.stdout)?.[1];
  assert.ok(messageId, outcome.stdout);
  assert.match(outcome.stdout, /accepted cli@remote\.test/);
  const mail = await arrivedAs(messageId);
  assert.match(mail.body.toString("latin1"), /Subject: from the cli\r\n\r\nsent by tern submit\r\n$/);

  const refused = await run(process.execPath, [...ternCli, "submit", "--config", join(dataDir, "config-api.json"), "--from", "x@elsewhere.test", "--to", "y@remote.test", "--subject", "s", "--text", "t"]);
  assert.equal(refused.code, 1);
  assert.match(refused.stderr, /SenderNotAllowed/);
});

test("status answers for the tenant's own messages: delivered with the MX; another tenant's or an unknown id is NotFound", async () => {
  const reply = await tern.submitRaw("Subject: watched\r\n\r\nwatch me\r\n", { from: "alice@example.test", to: ["watched@remote.test"] });
  await arrivedAs(reply.messageId);
  const status = await eventually(async () => {
    const answer = await tern.status(reply.messageId);
    return answer.recipients.some((r) => r.state === "delivered") ? answer : undefined;
  }, 20_000, "delivered in status");
  assert.equal(status.message.id, reply.messageId);
  assert.equal(status.message.tenant, "default");
  const [recipient] = status.recipients;
  assert.equal(recipient?.recipient, "watched@remote.test");
  assert.equal(recipient?.attempts, 1);
  assert.match(recipient?.history[0]?.mx ?? "", /mx\.remote\.test/);
  assert.match(recipient?.history[0]?.reply ?? "", /^250 /);

  const acme = await connectTern({ cluster, tenant: "acme", nc });
  await assert.rejects(acme.status(reply.messageId), (error: unknown) => error instanceof TernApiError && error.code === "NotFound");
  await assert.rejects(tern.status("0ZZZZZZZZZZZZZZZZ"), (error: unknown) => error instanceof TernApiError && error.code === "NotFound");
  const garbage = await request("status", "{not json");
  assert.equal(garbage.status, "400");
});

test("a submitted message's events arrive on JetStream in order, accepted then delivered, with its tags and metadata", async () => {
  const reply = await tern.submitRaw("Subject: followed\r\n\r\nfollow me\r\n", { from: "alice@example.test", to: ["followed@remote.test"] }, { tags: ["campaign-7"], metadata: { user: "u1" } });
  await arrivedAs(reply.messageId);
  const seen = await eventually(async () => {
    const events = [];
    for await (const { event } of followEvents(nc, { cluster, tenant: "default", domain: "remote.test", start: "first" })) {
      if (event.msg === reply.messageId) events.push(event);
    }
    return events.some((e) => e.type === "delivered") ? events : undefined;
  }, 20_000, "the delivered event in the stream");
  assert.deepEqual(seen.map((e) => e.type), ["accepted", "delivered"]);
  for (const event of seen) assert.deepEqual([event.tenant, event.tags, event.metadata], ["default", ["campaign-7"], { user: "u1" }]);
});

test("a request whose reply subject is not an inbox gets no answer: the node never publishes onto KV keys or events for an asker", async () => {
  const probe = async (subject: string, reply: string) => {
    const heard: string[] = [];
    const sub = nc.subscribe(reply, { callback: (_error, msg) => void heard.push(msg.subject) });
    await nc.flush();
    nc.publish(subject, new TextEncoder().encode('{"messageId":"0ZZZZZZZZZZZZZZZZ"}'), { reply });
    await new Promise((resolve) => setTimeout(resolve, 500));
    sub.unsubscribe();
    return heard.length;
  };
  const forged = [`$KV.${subjects.mailboxOwnersBucket}.x`, `${subjects.events}`.replace(">", "default.accepted.none"), `tern.${cluster}.mailbox.api.deliver`];
  for (const reply of forged) {
    assert.equal(await probe(`$SRV.PING.${subjects.apiService}`, reply), 0, `discovery answered on ${reply}`);
    assert.equal(await probe(subjects.api("default", "status"), reply), 0, `status answered on ${reply}`);
  }
  // The same requests with an inbox are answered: the probe can hear.
  assert.equal(await probe(`$SRV.PING.${subjects.apiService}`, `_INBOX.probe.${Date.now()}`), 1);
  assert.equal(await probe(subjects.api("default", "status"), `_INBOX.probe2.${Date.now()}`), 1);
});
