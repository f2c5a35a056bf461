// What an attempt means for its entry (actors/delivery/outcome.ts) and the DSNs it
// produces (actors/delivery/dsn.ts), parsed back with mailparser.
import { test } from "node:test";
import assert from "node:assert/strict";
import { simpleParser, type Attachment } from "mailparser";
import { makeClassifier } from "../../../actors/delivery/classify.ts";
import { composeDsn, dsnParamsOf, mustNotNotify, wants } from "../../../actors/delivery/dsn.ts";
import { decide, type OutcomePolicy } from "../../../actors/delivery/outcome.ts";
import type { Attempt } from "../../../actors/delivery/attempt.ts";
import { HISTORY_LIMIT, type QueueEntry } from "../../../actors/queue/entry.ts";

const HOUR = 3_600_000;
const policy: OutcomePolicy = { maxAgeMs: 120 * HOUR, delayNoticeMs: 4 * HOUR, retry: { baseMs: 60_000, maxMs: HOUR }, classify: makeClassifier() };
const t0 = Date.UTC(2026, 0, 1);

const entry = (extra: Partial<QueueEntry> = {}): QueueEntry => ({
  id: "M1.0",
  messageId: "M1",
  route: { kind: "remote", domain: "remote.test" },
  sender: "alice@origin.test",
  recipients: ["a@remote.test", "b@remote.test"],
  createdAt: t0,
  attempts: 0,
  nextAttemptAt: t0,
  reason: "received",
  ...extra,
});

const remote = (results: Attempt["results"], extra: Partial<Attempt> = {}): Attempt => ({ results, server: "mx.remote.test[192.0.2.1]", mx: { host: "mx.remote.test", ip: "192.0.2.1" }, ...extra });
const noDsn = dsnParamsOf(undefined);

test("2xx and 5xx in one attempt: the entry is finished, the failure is classified and reported", () => {
  const d = decide(entry(), remote([
    { recipient: "a@remote.test", status: "delivered", reply: "250 2.0.0 ok" },
    { recipient: "b@remote.test", status: "failed", reply: "550 5.1.1 no such user" },
  ]), t0 + 1000, 0.5, policy, noDsn);
  assert.equal(d.next, undefined);
  assert.deepEqual(d.outcomes.map((o) => [o.status, o.category]), [["delivered", undefined], ["failed", "bad-mailbox"]]);
  assert.equal(d.notices.length, 1);
  assert.equal(d.notices[0]!.action, "failed");
  assert.deepEqual(d.notices[0]!.recipients.map((r) => [r.finalRecipient, r.status, r.remoteMta, r.diagnostic?.type]), [["b@remote.test", "5.1.1", "mx.remote.test", "smtp"]]);
  assert.deepEqual(d.record, {
    at: t0 + 1000,
    mx: "mx.remote.test",
    ip: "192.0.2.1",
    results: [
      { rcpt: "a@remote.test", status: "delivered", reply: "250 2.0.0 ok" },
      { rcpt: "b@remote.test", status: "failed", reply: "550 5.1.1 no such user", category: "bad-mailbox" },
    ],
  });
});

test("4xx defers on the backoff with the attempt recorded and the reason kept; temporary trouble never bounces", () => {
  const now = t0 + 1000;
  const d = decide(entry(), remote([
    { recipient: "a@remote.test", status: "deferred", reply: "451 4.3.0 try later" },
    { recipient: "b@remote.test", status: "delivered", reply: "250 ok" },
  ]), now, 0.5, policy, noDsn);
  assert.ok(d.next);
  assert.deepEqual(d.next.recipients, ["a@remote.test"]);
  assert.equal(d.next.attempts, 1);
  assert.equal(d.next.nextAttemptAt, now + 60_000);
  assert.equal(d.next.reason, "temporary-reply");
  assert.equal(d.next.history?.length, 1);
  assert.equal(d.next.history?.[0]?.requeued, "temporary-reply");
  assert.equal(d.notices.length, 0);

  const unreachable = decide(entry(), { server: "mx[192.0.2.1]", mx: { host: "mx", ip: "192.0.2.1" }, trouble: "connection", results: [{ recipient: "a@remote.test", status: "deferred", reply: "ECONNREFUSED" }] }, now, 0.5, policy, noDsn);
  assert.equal(unreachable.next?.reason, "connection-failed");
  assert.equal(unreachable.holdQueue, "unreachable");
  const limited = decide(entry(), remote([{ recipient: "a@remote.test", status: "deferred", reply: "421 4.7.28 rate limited" }]), now, 0.5, policy, noDsn);
  assert.equal(limited.next?.reason, "rate-limited");
  assert.equal(limited.holdQueue, "rate-limited");
});

test("the next attempt never falls after the expiry, and a deferral at the expiry fails as expired with 4.4.7", () => {
  const late = t0 + policy.maxAgeMs - 10_000;
  const d = decide(entry({ attempts: 30 }), remote([{ recipient: "a@remote.test", status: "deferred", reply: "451 4.3.0 later" }]), late, 0.5, policy, noDsn);
  assert.equal(d.next?.nextAttemptAt, t0 + policy.maxAgeMs, "the last attempt is at the expiry");

  const expired = decide(entry({ attempts: 31, delayNotified: true }), remote([
    { recipient: "a@remote.test", status: "deferred", reply: "451 4.3.0 later" },
    { recipient: "b@remote.test", status: "deferred", reply: "451 4.3.0 later" },
  ]), t0 + policy.maxAgeMs, 0.5, policy, noDsn);
  assert.equal(expired.next, undefined);
  assert.deepEqual(expired.outcomes.map((o) => o.status), ["expired", "expired"]);
  assert.equal(expired.notices[0]?.action, "failed");
  assert.deepEqual(expired.notices[0]?.recipients.map((r) => r.status), ["4.4.7", "4.4.7"]);
  assert.equal(expired.notices[0]?.recipients[0]?.diagnostic?.text, "451 4.3.0 later");
});

test("one delay notice after delayNoticeMs, with Will-Retry-Until; not again", () => {
  const now = t0 + 5 * HOUR;
  const d = decide(entry({ attempts: 5 }), remote([{ recipient: "a@remote.test", status: "deferred", reply: "451 4.3.0 later" }]), now, 0.5, policy, noDsn);
  assert.equal(d.notices[0]?.action, "delayed");
  assert.equal(d.notices[0]?.recipients[0]?.willRetryUntil, t0 + policy.maxAgeMs);
  assert.equal(d.next?.delayNotified, true);
  const again = decide(d.next!, remote([{ recipient: "a@remote.test", status: "deferred", reply: "451 4.3.0 later" }]), now + HOUR, 0.5, policy, noDsn);
  assert.equal(again.notices.length, 0);
  const early = decide(entry(), remote([{ recipient: "a@remote.test", status: "deferred", reply: "451 4.3.0 later" }]), t0 + HOUR, 0.5, policy, noDsn);
  assert.equal(early.notices.length, 0);
});

test("NOTIFY decides who gets which notice; success is reported only where the next hop does not take over", () => {
  const dsn = dsnParamsOf({ recipientDsn: { "a@remote.test": { notify: ["NEVER"] }, "b@remote.test": { notify: ["SUCCESS"] } } });
  const failed = decide(entry(), remote([
    { recipient: "a@remote.test", status: "failed", reply: "550 5.1.1 no" },
    { recipient: "b@remote.test", status: "failed", reply: "550 5.1.1 no" },
  ]), t0, 0.5, policy, dsn);
  assert.equal(failed.notices.length, 0, "NEVER, and SUCCESS only: no failure notice");
  const delivered = (peerDsn: boolean) =>
    decide(entry(), remote([{ recipient: "b@remote.test", status: "delivered", reply: "250 ok" }], { peerDsn }), t0, 0.5, policy, dsn).notices;
  assert.equal(delivered(false)[0]?.action, "relayed");
  assert.equal(delivered(true).length, 0);
  const local = decide(entry({ route: { kind: "local", user: "b@remote.test" }, recipients: ["b@remote.test"] }), { server: "mailbox/b", results: [{ recipient: "b@remote.test", status: "delivered", reply: "250 stored" }] }, t0, 0.5, policy, dsn);
  assert.equal(local.notices[0]?.action, "delivered");
  assert.equal(wants(undefined, "FAILURE"), true);
  assert.equal(wants(undefined, "DELAY"), true);
  assert.equal(wants(undefined, "SUCCESS"), false);
  assert.equal(wants(["FAILURE"], "DELAY"), false);
});

test("the attempt history keeps the most recent attempts only", () => {
  let current = entry({ recipients: ["a@remote.test"] });
  for (let n = 0; n < HISTORY_LIMIT + 5; n++) {
    current = decide(current, remote([{ recipient: "a@remote.test", status: "deferred", reply: `451 4.3.0 try ${n}` }]), t0 + n, 0.5, policy, noDsn).next!;
  }
  assert.equal(current.attempts, HISTORY_LIMIT + 5);
  assert.equal(current.history?.length, HISTORY_LIMIT);
  assert.equal(current.history?.at(-1)?.results[0]?.reply, `451 4.3.0 try ${HISTORY_LIMIT + 4}`);
});

test("null-sender and auto-submitted mail gets no notice; Auto-Submitted: no does", () => {
  assert.equal(mustNotNotify("", "Subject: x\r\n\r\n"), true);
  assert.equal(mustNotNotify("a@b", "Subject: x\r\nAuto-Submitted: auto-replied\r\n\r\n"), true);
  assert.equal(mustNotNotify("a@b", "Subject: x\r\nauto-submitted:\r\n auto-generated (vacation)\r\n\r\n"), true);
  assert.equal(mustNotNotify("a@b", "Subject: x\r\nAuto-Submitted: no\r\n\r\n"), false);
  assert.equal(mustNotNotify("a@b", "Subject: x\r\n\r\n"), false);
});

/** mailparser folds message/delivery-status into the text unless asked to keep it as a part. */
const parse = (raw: Buffer) => simpleParser(raw, { keepDeliveryStatus: true });

const attachment = (parsed: { attachments: Attachment[] }, type: string) => parsed.attachments.find((a) => a.contentType === type);

test("a failure DSN is a multipart/report that mailparser reads back: per-recipient status, ENVID, ORCPT, the original message", async () => {
  const original = Buffer.from("From: alice@origin.test\r\nTo: a@remote.test\r\nSubject: the original\r\nMessage-ID: <orig@origin.test>\r\n\r\nHello there.\r\n");
  const dsn = composeDsn({
    reportingMta: "tern.test",
    to: "alice@origin.test",
    envid: "ENV-42",
    arrivalDate: t0,
    recipients: [
      { finalRecipient: "a@remote.test", orcpt: "rfc822;A+2Bx@remote.test", action: "failed", status: "5.1.1", remoteMta: "mx.remote.test", diagnostic: { type: "smtp", text: "550 5.1.1 no such user" }, lastAttemptAt: t0 + 1000 },
      { finalRecipient: "b@remote.test", action: "failed", status: "4.4.7", diagnostic: { type: "x-tern", text: "ECONNREFUSED" }, lastAttemptAt: t0 + 1000 },
    ],
    original,
    returnFull: true,
    now: t0 + 2000,
    id: "DSN1",
  });
  const parsed = await parse(dsn);
  assert.equal(parsed.subject, "Undelivered Mail Returned to Sender");
  assert.match(String(parsed.headers.get("content-type") && (parsed.headers.get("content-type") as { value: string }).value), /multipart\/report/);
  assert.equal(parsed.headers.get("auto-submitted"), "auto-replied");
  assert.match(parsed.text ?? "", /could not be delivered/);
  const status = attachment(parsed, "message/delivery-status")!.content.toString();
  assert.match(status, /^Reporting-MTA: dns; tern\.test$/m);
  assert.match(status, /^Original-Envelope-Id: ENV-42$/m);
  assert.match(status, /Final-Recipient: rfc822; a@remote\.test\r\nOriginal-Recipient: rfc822; A\+x@remote\.test\r\nAction: failed\r\nStatus: 5\.1\.1\r\nRemote-MTA: dns; mx\.remote\.test\r\nDiagnostic-Code: smtp; 550 5\.1\.1 no such user/);
  assert.match(status, /Final-Recipient: rfc822; b@remote\.test\r\nAction: failed\r\nStatus: 4\.4\.7/);
  const returned = attachment(parsed, "message/rfc822")!.content.toString();
  assert.equal(returned, original.toString());

  const headersOnly = await parse(composeDsn({ reportingMta: "tern.test", to: "alice@origin.test", arrivalDate: t0, recipients: [{ finalRecipient: "a@remote.test", action: "delayed", status: "4.3.0", willRetryUntil: t0 + 5 * 24 * HOUR }], original, returnFull: false, now: t0, id: "DSN2" }));
  assert.equal(headersOnly.subject, "Delayed Mail (still being retried)");
  const headers = attachment(headersOnly, "text/rfc822-headers")!.content.toString();
  assert.match(headers, /Subject: the original/);
  assert.doesNotMatch(headers, /Hello there/);
  assert.match(attachment(headersOnly, "message/delivery-status")!.content.toString(), /Action: delayed\r\nStatus: 4\.3\.0\r\nWill-Retry-Until: /);
});
