// The intake end to end without sockets: a report's bytes in, the events it records (or
// why it records none) out, against a fake cluster lookup and outbox. Which address is a
// report address, how a bounce or a complaint is matched to its message and recipient,
// and that nothing is recorded, and the reporter asked to try again, when the lookup or
// the write fails. What a recorded report counts in the reputation figures, for which
// keys and on which node.
import { test } from "node:test";
import assert from "node:assert/strict";
import { Effect } from "effect";
import { makeClassifier } from "../../../actors/delivery/classify.ts";
import { starterProviders } from "../../../actors/delivery/providers.ts";
import type { LaterOutcome } from "../../../actors/delivery/reputation-count.ts";
import type { OutcomeKeys } from "../../../actors/delivery/reputation.ts";
import { makeFeedbackIntake, RecordFailed, type FeedbackKind, type FeedbackResult, type FeedbackTarget } from "../../../actors/feedback/intake.ts";
import { makeFeedbackTokens, verpAddress } from "../../../actors/feedback/token.ts";
import { newMessageId } from "../../../actors/queue/entry.ts";
import type { OutboxDraft } from "../../../protocol/events.ts";
import { parseReply } from "../../../protocol/smtp-reply.ts";
import { NotFound, Unavailable, type RecipientAttempt, type RecipientView, type StatusReply } from "../../../protocol/status.ts";
import { arfReport, outOfOffice, postfixBounce, rfc3464Report } from "./samples.ts";

const MSG = "0MX3OL97APEODPECA";
const DOMAIN = "bounces.example.org";
const tokens = makeFeedbackTokens([new TextEncoder().encode("the intake test's key, long enough")]);

/** Delivered to relay.test's MX, from a pool address when `source` is given. */
const delivered = (source?: string): RecipientAttempt => ({
  at: 1,
  mx: "mx1.relay.test",
  ip: "192.0.2.50",
  ...(source !== undefined ? { source } : {}),
  status: "delivered",
  result: parseReply("250 2.0.0 ok")!,
  reply: "250 2.0.0 ok",
});

const view = (recipient: string, entry: number, queue = recipient.slice(recipient.indexOf("@") + 1), history: ReadonlyArray<RecipientAttempt> = [delivered("192.0.2.7")]): RecipientView => ({
  recipient,
  queue,
  entry: `${MSG}.${entry}`,
  state: "delivered",
  attempts: 1,
  history,
});

const statusWith = (recipients: ReadonlyArray<RecipientView>): StatusReply => ({
  message: { id: MSG, node: "a", sender: "news@acme.test", receivedAt: 0, size: 100, tenant: "acme", tags: ["december"], metadata: { campaign: "42" }, state: "delivered" },
  recipients,
});

const setUp = (options: { status?: StatusReply | "not-found" | "unavailable"; recordFails?: boolean; keepFinishedMs?: number } = {}) => {
  const recorded: OutboxDraft[] = [];
  const observed: Array<[FeedbackKind, FeedbackResult]> = [];
  const counted: Array<[string, OutcomeKeys, LaterOutcome]> = [];
  const status = options.status ?? statusWith([view("carol@relay.test", 0), view("dave@relay.test", 1), view("bob@example.test", 2, "local:bob@example.test")]);
  const intake = makeFeedbackIntake({
    config: { bounceDomain: DOMAIN, fblAddresses: ["fbl@example.test"] },
    node: "b",
    tokens,
    lookup: (id) =>
      status === "not-found"
        ? Effect.fail(new NotFound({ messageId: id, nodesAsked: 2 }))
        : status === "unavailable"
          ? Effect.fail(new Unavailable({ detail: "no node answered" }))
          : Effect.succeed(status),
    keepFinishedMs: options.keepFinishedMs ?? 7 * 24 * 3_600_000,
    classify: makeClassifier(),
    keySources: { poolAddresses: new Set(["192.0.2.1", "192.0.2.7"]), providers: { ...starterProviders, relay: [".relay.test"] } },
    count: (node, about, outcome) => void counted.push([node, about, outcome]),
    record: (drafts) => (options.recordFails ? Effect.fail(new RecordFailed({ detail: "disk full" })) : Effect.sync(() => void recorded.push(...drafts))),
    observe: (kind, result) => void observed.push([kind, result]),
    log: () => undefined,
  });
  const processAt = (address: string, text: string) => {
    const found = intake.addressOf(address);
    assert.equal(found?._tag, "Report", address);
    const target = (found as { target: FeedbackTarget }).target;
    return Effect.runPromise(intake.process(target, Buffer.from(text), { conn: "c1", client: "192.0.2.9", sender: "" }));
  };
  return { intake, recorded, observed, counted, processAt };
};

const carolVerp = verpAddress(tokens.recipientToken(MSG, "carol@relay.test"), DOMAIN);
const messageVerp = verpAddress(tokens.messageToken(MSG), DOMAIN);

test("which addresses are report addresses: a feedback-loop address, a VERP address with a valid token; a forged or malformed token; postmaster; anything else is mail", () => {
  const { intake } = setUp();
  assert.deepEqual(intake.addressOf("FBL@example.test"), { _tag: "Report", target: { kind: "fbl", address: "fbl@example.test" } });
  assert.equal(intake.addressOf(carolVerp.toUpperCase())?._tag, "Report");
  assert.deepEqual(intake.addressOf(carolVerp.replace(/.@/, (m) => (m[0] === "a" ? "b@" : "a@"))), { _tag: "Forged", reason: "forged" });
  assert.deepEqual(intake.addressOf(`someone@${DOMAIN}`), { _tag: "Forged", reason: "malformed" });
  assert.deepEqual(intake.addressOf(`Postmaster@${DOMAIN}`), { _tag: "Postmaster" });
  assert.equal(intake.addressOf("carol@relay.test"), undefined);
});

test("a bounce to a per-recipient VERP address records one bounced event for that recipient, with the message's labels, classified", async () => {
  const { recorded, observed, counted, processAt } = setUp();
  const outcome = await processAt(carolVerp, postfixBounce(carolVerp, "carol@relay.test"));
  assert.deepEqual(outcome, { _tag: "Recorded", kind: "bounce", messageId: MSG, recipients: ["carol@relay.test"] });
  assert.equal(recorded.length, 1);
  const event = recorded[0]!;
  assert.equal(event.type, "bounced");
  if (event.type !== "bounced") return;
  assert.deepEqual(
    { node: event.node, tenant: event.tenant, tags: event.tags, metadata: event.metadata, msg: event.msg, entry: event.entry, domain: event.domain, rcpt: event.rcpt, sender: event.sender, route: event.route, dsn: event.dsn, category: event.category, server: event.server, attempts: event.attempts },
    { node: "b", tenant: "acme", tags: ["december"], metadata: { campaign: "42" }, msg: MSG, entry: `${MSG}.0`, domain: "relay.test", rcpt: "carol@relay.test", sender: "news@acme.test", route: "remote", dsn: "5.1.1", category: "bad-mailbox", server: "dsn", attempts: 1 },
  );
  assert.equal(event.result._tag, "AsyncBounce");
  assert.match(event.reply, /^5\.1\.1 bounced after delivery \(reported by mail\.example\.net\): 550 5\.1\.1 /);
  assert.deepEqual(observed, [["bounce", "matched"]]);
  // Counted as a bounce of its category by node a, which sent the message, under the keys its delivery counted under.
  assert.deepEqual(counted, [["a", { senderDomain: "acme.test", source: "192.0.2.7", provider: "relay" }, { _tag: "bounced", category: "bad-mailbox" }]]);
});

test("the per-recipient token wins over what the report calls the recipient (a forward's address)", async () => {
  const { recorded, processAt } = setUp();
  await processAt(carolVerp, postfixBounce(carolVerp, "carol.forwarded@elsewhere.test"));
  assert.deepEqual(recorded.map((e) => ("rcpt" in e ? e.rcpt : "")), ["carol@relay.test"]);
});

test("a message token: the report's failed recipients are found among the message's, its delayed ones are not recorded", async () => {
  const { recorded, processAt } = setUp();
  const outcome = await processAt(messageVerp, rfc3464Report(messageVerp, "dave@relay.test", "carol@relay.test"));
  assert.equal(outcome._tag, "Recorded");
  assert.deepEqual(recorded.map((e) => [e.type, "rcpt" in e ? e.rcpt : "", "entry" in e ? e.entry : ""]), [["bounced", "dave@relay.test", `${MSG}.1`]]);
});

test("a message token and a report naming nobody of several recipients: unmatched, nothing recorded; a local recipient never matches", async () => {
  const { recorded, observed, processAt } = setUp();
  const outcome = await processAt(messageVerp, postfixBounce(messageVerp, "stranger@relay.test"));
  assert.equal(outcome._tag, "Dropped");
  assert.equal(outcome._tag === "Dropped" && outcome.result, "unmatched");
  const local = await processAt(messageVerp, postfixBounce(messageVerp, "bob@example.test"));
  assert.equal(local._tag === "Dropped" && local.result, "unmatched");
  assert.deepEqual(recorded, []);
  assert.deepEqual(observed, [["bounce", "unmatched"], ["bounce", "unmatched"]]);
});

test("a message with one remote recipient: a report of one failure is that recipient's, whatever it is called", async () => {
  const { recorded, processAt } = setUp({ status: statusWith([view("carol@relay.test", 0)]) });
  await processAt(messageVerp, postfixBounce(messageVerp, "alias@relay.test"));
  assert.deepEqual(recorded.map((e) => ("rcpt" in e ? e.rcpt : "")), ["carol@relay.test"]);
});

test("an out-of-office reply, a delay notice and a temporary failure are accepted and ignored", async () => {
  const { recorded, observed, processAt } = setUp();
  for (const text of [outOfOffice(carolVerp), postfixBounce(carolVerp, "carol@relay.test", "4.2.2", "452 4.2.2 Mailbox full, try later")]) {
    const outcome = await processAt(carolVerp, text);
    assert.equal(outcome._tag === "Dropped" && outcome.result, "ignored", JSON.stringify(outcome));
  }
  assert.deepEqual(recorded, []);
  assert.deepEqual(observed, [["bounce", "ignored"], ["bounce", "ignored"]]);
});

test("a message no node knows: unmatched when older than the nodes remember, else its node is down (retry); no answer from the cluster or a failed write: retry; nothing recorded", async () => {
  // The queue id's arrival time is what tells forgotten from held by a node that is down.
  const age = Date.now() - Date.parse("2026-01-01T00:00:00Z");
  const unknown = setUp({ status: "not-found", keepFinishedMs: 1_000 });
  const recent = setUp({ status: "not-found", keepFinishedMs: age + 3_600_000 });
  const sentVerp = verpAddress(tokens.recipientToken(newMessageId(Date.parse("2026-01-01T00:00:00Z")), "carol@relay.test"), DOMAIN);
  const dropped = await unknown.processAt(sentVerp, postfixBounce(sentVerp, "carol@relay.test"));
  assert.equal(dropped._tag === "Dropped" && dropped.result, "unmatched");
  assert.equal((await recent.processAt(sentVerp, postfixBounce(sentVerp, "carol@relay.test")))._tag, "Failed");
  const away = setUp({ status: "unavailable" });
  assert.equal((await away.processAt(carolVerp, postfixBounce(carolVerp, "carol@relay.test")))._tag, "Failed");
  const full = setUp({ recordFails: true });
  assert.equal((await full.processAt(carolVerp, postfixBounce(carolVerp, "carol@relay.test")))._tag, "Failed");
  assert.deepEqual([...unknown.observed, ...recent.observed, ...away.observed, ...full.observed], [["bounce", "unmatched"], ["bounce", "failed"], ["bounce", "failed"], ["bounce", "failed"]]);
  assert.deepEqual([...unknown.counted, ...recent.counted, ...away.counted, ...full.counted], [], "nothing counted in the reputation figures either");
});

const returnedHeaders = (ternId: string, to: string) => [`X-Tern-Id: ${ternId}`, "From: news@acme.test", `To: ${to}`, "Subject: December news"];

test("an ARF report at the feedback-loop address, matched through X-Tern-Id and the returned To: a complained event", async () => {
  const { recorded, observed, counted, processAt } = setUp();
  const outcome = await processAt("fbl@example.test", arfReport("fbl@example.test", { headers: returnedHeaders(tokens.messageToken(MSG), "Dave <dave@relay.test>") }));
  assert.deepEqual(outcome, { _tag: "Recorded", kind: "complaint", messageId: MSG, recipients: ["dave@relay.test"] });
  assert.deepEqual(recorded, [
    {
      type: "complained",
      time: (recorded[0] as { time: number }).time,
      node: "b",
      tenant: "acme",
      tags: ["december"],
      metadata: { campaign: "42" },
      msg: MSG,
      entry: `${MSG}.1`,
      domain: "relay.test",
      rcpt: "dave@relay.test",
      sender: "news@acme.test",
      feedbackType: "abuse",
      userAgent: "SomeGenerator/1.0",
      reportedBy: "abusedesk@example.com",
      arrivalDate: Date.parse("2005-03-08T18:00:00Z"),
      sourceIp: "192.0.2.1",
    },
  ]);
  assert.deepEqual(observed, [["complaint", "matched"]]);
  // The source address the delivery recorded wins over the report's Source-IP (192.0.2.1, another pool address).
  assert.deepEqual(counted, [["a", { senderDomain: "acme.test", source: "192.0.2.7", provider: "relay" }, { _tag: "complained" }]]);
});

test("a complaint about a delivery recorded without its source address: the report's Source-IP if it is a pool address, counted once for the recipient the report names", async () => {
  const unrecorded = [delivered()];
  const { counted, processAt } = setUp({ status: statusWith([view("carol@relay.test", 0, "relay.test", unrecorded), view("dave@relay.test", 1, "relay.test", unrecorded)]) });
  await processAt("fbl@example.test", arfReport("fbl@example.test", { headers: returnedHeaders(tokens.messageToken(MSG), "carol@relay.test, dave@relay.test"), rcptTo: "dave@relay.test" }));
  assert.deepEqual(counted, [["a", { senderDomain: "acme.test", source: "192.0.2.1", provider: "relay" }, { _tag: "complained" }]]);
});

test("an ARF report naming the VERP return path (Original-Mail-From) is matched through it; one at a VERP address too", async () => {
  const { recorded, processAt } = setUp();
  await processAt("fbl@example.test", arfReport("fbl@example.test", { mailFrom: carolVerp, headers: ["From: news@acme.test", "To: <redacted>"] }));
  await processAt(carolVerp, arfReport(carolVerp, { headers: ["From: news@acme.test"] }));
  assert.deepEqual(recorded.map((e) => [e.type, "rcpt" in e ? e.rcpt : ""]), [["complained", "carol@relay.test"], ["complained", "carol@relay.test"]]);
});

test("ARF reports that record nothing: a forged X-Tern-Id, no token at all, a redacted recipient of a message to several, a not-spam report", async () => {
  const { recorded, observed, counted, processAt } = setUp();
  const forged = tokens.messageToken(MSG).replace(/.$/, (c) => (c === "a" ? "b" : "a"));
  const cases = [
    arfReport("fbl@example.test", { headers: returnedHeaders(forged, "dave@relay.test") }),
    arfReport("fbl@example.test", { headers: ["From: news@acme.test", "To: dave@relay.test"] }),
    arfReport("fbl@example.test", { headers: returnedHeaders(tokens.messageToken(MSG), "<redacted>") }),
    arfReport("fbl@example.test", { headers: returnedHeaders(tokens.messageToken(MSG), "dave@relay.test") }, "not-spam"),
    postfixBounce("fbl@example.test", "dave@relay.test"),
  ];
  for (const text of cases) assert.equal((await processAt("fbl@example.test", text))._tag, "Dropped");
  assert.deepEqual(recorded, []);
  assert.deepEqual(counted, []);
  assert.deepEqual(observed, [["complaint", "forged"], ["complaint", "unmatched"], ["complaint", "unmatched"], ["complaint", "ignored"], ["complaint", "ignored"]]);
});
