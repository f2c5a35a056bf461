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
import type { Reply } from "../../../protocol/delivery.ts";
import { parseReply } from "../../../protocol/smtp-reply.ts";

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
/** A reply as smtp-client makes it from the wire. */
const reply = (raw: string): Reply => parseReply(raw)!;

test("2xx and 5xx in one attempt: the entry is finished, the failure is classified and reported", () => {
  const d = decide(entry(), remote([
    { recipient: "a@remote.test", result: reply("250 2.0.0 ok") },
    { recipient: "b@remote.test", result: reply("550 5.1.1 no such user") },
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
      { rcpt: "a@remote.test", status: "delivered", result: { _tag: "Reply", code: 250, enhanced: "2.0.0", text: "ok" } },
      { rcpt: "b@remote.test", status: "failed", result: { _tag: "Reply", code: 550, enhanced: "5.1.1", text: "no such user" }, category: "bad-mailbox" },
    ],
  });
});

test("the attempt record keeps the pool address the connection left from (what a report that comes back later is counted under)", () => {
  const pooled = decide(entry(), remote([{ recipient: "a@remote.test", result: reply("250 2.0.0 ok") }], { source: "198.51.100.7" }), t0, 0.5, policy, noDsn);
  assert.deepEqual([pooled.record.mx, pooled.record.source], ["mx.remote.test", "198.51.100.7"]);
  const plain = decide(entry(), remote([{ recipient: "a@remote.test", result: reply("250 2.0.0 ok") }]), t0, 0.5, policy, noDsn);
  assert.equal("source" in plain.record, false, "the default address: no source");
});

test("4xx defers on the backoff with the attempt recorded and the reason kept; temporary trouble never bounces", () => {
  const now = t0 + 1000;
  const d = decide(entry(), remote([
    { recipient: "a@remote.test", result: reply("451 4.3.0 try later") },
    { recipient: "b@remote.test", result: reply("250 ok") },
  ]), now, 0.5, policy, noDsn);
  assert.ok(d.next);
  assert.deepEqual(d.next.recipients, ["a@remote.test"]);
  assert.equal(d.next.attempts, 1);
  assert.equal(d.next.nextAttemptAt, now + 60_000);
  assert.equal(d.next.reason, "temporary-reply");
  assert.equal(d.next.history?.length, 1);
  assert.equal(d.next.history?.[0]?.requeued, "temporary-reply");
  assert.equal(d.notices.length, 0);

  const unreachable = decide(entry(), { server: "mx[192.0.2.1]", mx: { host: "mx", ip: "192.0.2.1" }, results: [{ recipient: "a@remote.test", result: { _tag: "ConnectionFailed", detail: "ECONNREFUSED: connect ECONNREFUSED 192.0.2.1:25" } }] }, now, 0.5, policy, noDsn);
  assert.equal(unreachable.next?.reason, "connection-failed");
  assert.equal(unreachable.holdQueue, "unreachable");
  const limited = decide(entry(), remote([{ recipient: "a@remote.test", result: reply("421 4.7.28 rate limited") }]), now, 0.5, policy, noDsn);
  assert.equal(limited.next?.reason, "rate-limited");
  assert.equal(limited.holdQueue, "rate-limited");
});

test("the next attempt never falls after the expiry, and a deferral at the expiry fails as expired with 4.4.7", () => {
  const late = t0 + policy.maxAgeMs - 10_000;
  const d = decide(entry({ attempts: 30 }), remote([{ recipient: "a@remote.test", result: reply("451 4.3.0 later") }]), late, 0.5, policy, noDsn);
  assert.equal(d.next?.nextAttemptAt, t0 + policy.maxAgeMs, "the last attempt is at the expiry");

  const expired = decide(entry({ attempts: 31, delayNotified: true }), remote([
    { recipient: "a@remote.test", result: reply("451 4.3.0 later") },
    { recipient: "b@remote.test", result: reply("451 4.3.0 later") },
  ]), t0 + policy.maxAgeMs, 0.5, policy, noDsn);
  assert.equal(expired.next, undefined);
  assert.deepEqual(expired.outcomes.map((o) => o.status), ["expired", "expired"]);
  assert.equal(expired.notices[0]?.action, "failed");
  assert.deepEqual(expired.notices[0]?.recipients.map((r) => r.status), ["4.4.7", "4.4.7"]);
  assert.equal(expired.notices[0]?.recipients[0]?.diagnostic?.text, "451 4.3.0 later");
});

test("tagged failures: DNS and conversion failures bounce with their own status; the DSN says x-tern and renders the value", () => {
  const dns = (result: Attempt["results"][number]["result"]) => decide(entry({ recipients: ["a@remote.test"] }), { server: "dns", results: [{ recipient: "a@remote.test", result }] }, t0 + 1000, 0.5, policy, noDsn);
  const nx = dns({ _tag: "DnsPermanent", domain: "remote.test", reason: "nxdomain", detail: "MX remote.test: NXDOMAIN from 192.0.2.53:53", rcode: "NXDOMAIN", server: "192.0.2.53:53" });
  assert.equal(nx.next, undefined);
  assert.deepEqual(nx.outcomes.map((o) => [o.status, o.category]), [["failed", "bad-domain"]]);
  assert.deepEqual(nx.record, { at: t0 + 1000, via: "dns", results: [{ rcpt: "a@remote.test", status: "failed", result: nx.outcomes[0]!.result, category: "bad-domain" }] });
  const report = nx.notices[0]!.recipients[0]!;
  assert.equal(report.status, "5.1.2");
  assert.equal(report.remoteMta, undefined);
  assert.deepEqual(report.diagnostic, { type: "x-tern", text: "5.1.2 DNS: MX remote.test: NXDOMAIN from 192.0.2.53:53" });
  assert.equal(dns({ _tag: "DnsPermanent", domain: "remote.test", reason: "null-mx", detail: "null MX" }).notices[0]!.recipients[0]!.status, "5.1.10");

  const temporary = dns({ _tag: "DnsTemporary", domain: "remote.test", detail: "MX remote.test: SERVFAIL", rcode: "SERVFAIL" });
  assert.deepEqual(temporary.outcomes.map((o) => [o.status, o.category]), [["deferred", "dns"]]);
  assert.equal(temporary.next?.reason, "dns-temporary");
  assert.equal(temporary.notices.length, 0, "temporary trouble never bounces");
  assert.equal(temporary.holdQueue, undefined);

  const eightBit = decide(entry({ recipients: ["a@remote.test"] }), remote([{ recipient: "a@remote.test", result: { _tag: "ConversionFailed", missing: "8BITMIME", detail: "8-bit multipart/mixed body" } }]), t0, 0.5, policy, noDsn);
  assert.equal(eightBit.outcomes[0]!.status, "failed");
  assert.equal(eightBit.notices[0]!.recipients[0]!.status, "5.6.3");
  assert.equal(eightBit.notices[0]!.recipients[0]!.diagnostic?.type, "x-tern");
});

test("a full mailbox defers as mailbox-unavailable with the quota category, and expires into 4.4.7 with the quota in Diagnostic-Code", () => {
  const local = entry({ route: { kind: "local", user: "u@local.test" }, recipients: ["u@local.test"] });
  const full: Attempt = { server: "mailbox/u@local.test", results: [{ recipient: "u@local.test", result: { _tag: "OverQuota", user: "u@local.test", usedBytes: 3_900, quotaBytes: 4_000, messageBytes: 500 } }] };
  const waiting = decide(local, full, t0 + 1000, 0.5, policy, noDsn);
  assert.deepEqual(waiting.outcomes.map((o) => [o.status, o.category]), [["deferred", "quota"]]);
  assert.equal(waiting.next?.reason, "mailbox-unavailable");
  assert.equal(waiting.record.via, "mailbox/u@local.test");
  const expired = decide(local, full, t0 + policy.maxAgeMs, 0.5, policy, noDsn);
  assert.equal(expired.outcomes[0]!.status, "expired");
  assert.deepEqual(expired.notices[0]!.recipients[0]!.status, "4.4.7");
  assert.deepEqual(expired.notices[0]!.recipients[0]!.diagnostic, { type: "x-tern", text: "4.2.2 mailbox full: 3900 of 4000 bytes used, message is 500" });
});

test("a host that refuses the connection in its greeting: the queue is held as rate limited when it says so, else as unreachable", () => {
  const refused = (reply?: Reply): Attempt => ({
    server: "mx[192.0.2.1]",
    mx: { host: "mx", ip: "192.0.2.1" },
    results: [{ recipient: "a@remote.test", result: { _tag: "ConnectionFailed", detail: "greeting refused", ...(reply ? { reply } : {}) } }],
  });
  const slowDown = decide(entry(), refused(reply("421 4.7.0 Too many connections, slow down")), t0, 0.5, policy, noDsn);
  assert.deepEqual([slowDown.outcomes[0]!.category, slowDown.next?.reason, slowDown.holdQueue], ["rate-limited", "rate-limited", "rate-limited"]);
  const blocked = decide(entry(), refused(reply("554 5.7.1 blocked")), t0, 0.5, policy, noDsn);
  assert.deepEqual([blocked.outcomes[0]!.status, blocked.outcomes[0]!.category, blocked.next?.reason, blocked.holdQueue], ["deferred", "policy", "connection-failed", "unreachable"]);
  const expired = decide(entry({ delayNotified: true }), refused(reply("554 5.7.1 blocked")), t0 + policy.maxAgeMs, 0.5, policy, noDsn);
  assert.deepEqual(expired.notices[0]!.recipients[0]!.diagnostic, { type: "x-tern", text: "4.7.1 connection failed: greeting refused; the host said: 554 5.7.1 blocked" });
});

test("a site paused by automatic back-off: not attempted, deferred as backed-off until the pause ends, never bounced before expiry", () => {
  const until = t0 + 30 * 60_000;
  const paused: Attempt = {
    server: "mx.remote.test@203.0.113.10",
    source: "203.0.113.10",
    results: ["a@remote.test", "b@remote.test"].map((recipient) => ({
      recipient,
      result: { _tag: "BackedOff", rule: "microsoft-ip-reputation", until, reply: reply("451 4.7.650 The mail server [203.0.113.10] has been temporarily rate limited due to IP reputation.") },
    })),
  };
  const decision = decide(entry(), paused, t0, 0.5, policy, noDsn);
  assert.deepEqual(decision.outcomes.map((o) => [o.status, o.category]), [["deferred", "rate-limited"], ["deferred", "rate-limited"]]);
  assert.equal(decision.next?.reason, "backed-off");
  assert.equal(decision.record.requeued, "backed-off");
  assert.equal(decision.next?.nextAttemptAt, until, "the next attempt waits for the pause's end, beyond the first retry (1 minute)");
  assert.equal(decision.record.via, "mx.remote.test@203.0.113.10");
  const expired = decide(entry({ delayNotified: true }), paused, t0 + policy.maxAgeMs, 0.5, policy, noDsn);
  assert.equal(expired.outcomes[0]!.status, "expired");
  assert.equal(expired.notices[0]!.recipients[0]!.status, "4.4.7");
  assert.match(expired.notices[0]!.recipients[0]!.diagnostic!.text, /^4\.7\.650 not attempted: the site is paused .*the host said: 451 4\.7\.650/);
});

test("an operator's bounce fails every recipient with 5.0.0 and the reason", () => {
  const d = decide(entry(), { server: "admin", results: ["a@remote.test", "b@remote.test"].map((recipient) => ({ recipient, result: { _tag: "Returned", reason: "spam run" } as const })) }, t0, 0.5, policy, noDsn);
  assert.equal(d.next, undefined);
  assert.deepEqual(d.notices[0]!.recipients.map((r) => [r.status, r.diagnostic?.text]), [
    ["5.0.0", "5.0.0 returned by the mail system administrator: spam run"],
    ["5.0.0", "5.0.0 returned by the mail system administrator: spam run"],
  ]);
});

test("one delay notice after delayNoticeMs, with Will-Retry-Until; not again", () => {
  const now = t0 + 5 * HOUR;
  const d = decide(entry({ attempts: 5 }), remote([{ recipient: "a@remote.test", result: reply("451 4.3.0 later") }]), now, 0.5, policy, noDsn);
  assert.equal(d.notices[0]?.action, "delayed");
  assert.equal(d.notices[0]?.recipients[0]?.willRetryUntil, t0 + policy.maxAgeMs);
  assert.equal(d.next?.delayNotified, true);
  const again = decide(d.next!, remote([{ recipient: "a@remote.test", result: reply("451 4.3.0 later") }]), now + HOUR, 0.5, policy, noDsn);
  assert.equal(again.notices.length, 0);
  const early = decide(entry(), remote([{ recipient: "a@remote.test", result: reply("451 4.3.0 later") }]), t0 + HOUR, 0.5, policy, noDsn);
  assert.equal(early.notices.length, 0);
});

test("time on hold does not count in the queue life: expiry and the delay notice move by it", () => {
  const later = reply("451 4.3.0 later");
  // Released after 10 hours on hold: 5 days and 10 hours after it was queued it is not expired yet.
  const released = entry({ attempts: 30, heldMs: 10 * HOUR });
  const late = t0 + policy.maxAgeMs + 5 * HOUR;
  const d = decide(released, remote([{ recipient: "a@remote.test", result: later }]), late, 0.5, policy, noDsn);
  assert.deepEqual(d.outcomes.map((o) => o.status), ["deferred"]);
  assert.ok(d.next!.nextAttemptAt <= t0 + policy.maxAgeMs + 10 * HOUR, "the last attempt falls at the moved expiry");
  assert.equal(d.next!.heldMs, 10 * HOUR, "the time on hold stays with the entry");
  const expired = decide(released, remote([{ recipient: "a@remote.test", result: later }]), t0 + policy.maxAgeMs + 10 * HOUR, 0.5, policy, noDsn);
  assert.deepEqual(expired.outcomes.map((o) => o.status), ["expired"]);
  // The delay notice comes 4 hours into the queue life, hold left out.
  assert.equal(decide(entry({ heldMs: 2 * HOUR }), remote([{ recipient: "a@remote.test", result: later }]), t0 + 5 * HOUR, 0.5, policy, noDsn).notices.length, 0);
  const notice = decide(entry({ heldMs: 2 * HOUR }), remote([{ recipient: "a@remote.test", result: later }]), t0 + 6 * HOUR, 0.5, policy, noDsn).notices[0];
  assert.equal(notice?.action, "delayed");
  assert.equal(notice?.recipients[0]?.willRetryUntil, t0 + policy.maxAgeMs + 2 * HOUR);
});

test("NOTIFY decides who gets which notice; success is reported only where the next hop does not take over", () => {
  const dsn = dsnParamsOf({ recipientDsn: { "a@remote.test": { notify: ["NEVER"] }, "b@remote.test": { notify: ["SUCCESS"] } } });
  const failed = decide(entry(), remote([
    { recipient: "a@remote.test", result: reply("550 5.1.1 no") },
    { recipient: "b@remote.test", result: reply("550 5.1.1 no") },
  ]), t0, 0.5, policy, dsn);
  assert.equal(failed.notices.length, 0, "NEVER, and SUCCESS only: no failure notice");
  const delivered = (peerDsn: boolean) =>
    decide(entry(), remote([{ recipient: "b@remote.test", result: reply("250 ok") }], { peerDsn }), t0, 0.5, policy, dsn).notices;
  assert.equal(delivered(false)[0]?.action, "relayed");
  assert.equal(delivered(true).length, 0);
  const local = decide(entry({ route: { kind: "local", user: "b@remote.test" }, recipients: ["b@remote.test"] }), { server: "mailbox/b", results: [{ recipient: "b@remote.test", result: { _tag: "Stored", uid: "1.1" } }] }, t0, 0.5, policy, dsn);
  assert.equal(local.notices[0]?.action, "delivered");
  assert.equal(wants(undefined, "FAILURE"), true);
  assert.equal(wants(undefined, "DELAY"), true);
  assert.equal(wants(undefined, "SUCCESS"), false);
  assert.equal(wants(["FAILURE"], "DELAY"), false);
});

test("the attempt history keeps the most recent attempts only", () => {
  let current = entry({ recipients: ["a@remote.test"] });
  for (let n = 0; n < HISTORY_LIMIT + 5; n++) {
    current = decide(current, remote([{ recipient: "a@remote.test", result: reply(`451 4.3.0 try ${n}`) }]), t0 + n, 0.5, policy, noDsn).next!;
  }
  assert.equal(current.attempts, HISTORY_LIMIT + 5);
  assert.equal(current.history?.length, HISTORY_LIMIT);
  assert.deepEqual(current.history?.at(-1)?.results[0], { rcpt: "a@remote.test", status: "deferred", result: reply(`451 4.3.0 try ${HISTORY_LIMIT + 4}`), category: "other" });
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
      { finalRecipient: "a@remote.test", orcpt: "rfc822;A+x@remote.test", action: "failed", status: "5.1.1", remoteMta: "mx.remote.test", diagnostic: { type: "smtp", text: "550 5.1.1 no such user" }, lastAttemptAt: t0 + 1000 },
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
