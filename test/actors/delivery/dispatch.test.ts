// Dispatch (actors/delivery/dispatch.ts) with stand-ins for its three neighbours: the
// mailbox router (local routes), the resolver and the site actors (remote routes). What
// comes back is the typed result per recipient; `decide` shows what the queue makes of it.
import { test } from "node:test";
import assert from "node:assert/strict";
import { Effect } from "effect";
import { TestClock } from "effect/testing";
import type { Attempt } from "../../../actors/delivery/attempt.ts";
import { makeClassifier } from "../../../actors/delivery/classify.ts";
import { makeDispatch, type DispatchDeps } from "../../../actors/delivery/dispatch.ts";
import { dsnParamsOf } from "../../../actors/delivery/dsn.ts";
import { decide, type OutcomePolicy } from "../../../actors/delivery/outcome.ts";
import type { DeliveryJob, Sites } from "../../../actors/delivery/sites.ts";
import type { MailboxRouter } from "../../../actors/mailbox/router.ts";
import type { MessageRecord, QueueEntry } from "../../../actors/queue/entry.ts";
import { StoreError } from "../../../protocol/errors.ts";
import { MailboxUnavailable, NotOwner, UnknownUser, overQuota, type MailboxError } from "../../../protocol/mailbox.ts";
import { DnsPermanentFailure, DnsTemporaryFailure, type MailRoute } from "../../../protocol/route.ts";
import { renderResult } from "../../../protocol/delivery.ts";
import { starterProviders } from "../../../actors/delivery/providers.ts";
import { parseDay } from "../../../actors/delivery/warmup.ts";
import { makeWarmupUsage, memoryUsageStore } from "../../../actors/delivery/warmup-usage.ts";
import { NO_HOLDS, type ReputationHolds } from "../../../actors/delivery/reputation-holds.ts";

/** The scheduler's gate, open: no operator's hold. */
const mayStart = () => true;

const HOUR = 3_600_000;
const t0 = Date.UTC(2026, 0, 1);
const policy: OutcomePolicy = { maxAgeMs: 120 * HOUR, delayNoticeMs: 4 * HOUR, retry: { baseMs: 60_000, maxMs: HOUR }, classify: makeClassifier() };

const localEntry: QueueEntry = {
  id: "M1.0",
  messageId: "M1",
  route: { kind: "local", user: "u@local.test" },
  sender: "s@origin.test",
  recipients: ["u@local.test"],
  createdAt: t0,
  attempts: 0,
  nextAttemptAt: t0,
  reason: "received",
};
const remoteEntry: QueueEntry = { ...localEntry, id: "M1.1", route: { kind: "remote", domain: "remote.test" }, recipients: ["a@remote.test", "b@remote.test"] };
const message: MessageRecord = { id: "M1", sender: "s@origin.test", receivedAt: t0, size: 10, openEntries: 2, attributes: { dsn: { ret: "HDRS", envid: "ENV+1" } } };
const body = new Uint8Array(Buffer.from("Subject: x\r\n\r\nhello\r\n"));

const route: MailRoute = { domain: "remote.test", implicitMx: false, hosts: [{ name: "mx.remote.test", preference: 10, addresses: ["192.0.2.1"] }] };

/** A mailbox router that answers every delivery the same way, and remembers what it stored. */
const mailboxes = (answer: (user: string) => Effect.Effect<string, MailboxError>) => {
  const stored: Array<{ user: string; entryId: string; text: string; folder?: string }> = [];
  const router: MailboxRouter = {
    deliver: (user, entryId, bytes, folder) =>
      answer(user).pipe(Effect.tap(() => Effect.sync(() => stored.push({ user, entryId, text: Buffer.from(bytes).toString("utf8"), ...(folder !== undefined ? { folder } : {}) })))),
    call: () => Effect.die("not used by dispatch"),
    serve: () => Effect.void,
  };
  return { router, stored };
};

/** Site actors that answer every job with `answer`, and remember the jobs. */
const sites = (answer: (job: DeliveryJob) => Attempt = (job) => ({ server: "mx.remote.test[192.0.2.1]", mx: { host: "mx.remote.test", ip: "192.0.2.1" }, results: job.recipients.map((recipient) => ({ recipient, result: { _tag: "Reply", code: 250, enhanced: "2.0.0", text: "ok" } })) })) => {
  const jobs: DeliveryJob[] = [];
  const stub: Sites = { deliver: (job) => Effect.sync(() => (jobs.push(job), answer(job))), list: () => [], throttled: () => [], stop: () => Effect.void };
  return { sites: stub, jobs };
};

const deps = (extra: Partial<DispatchDeps>): DispatchDeps => ({
  mailboxes: mailboxes(() => Effect.succeed("7.1")).router,
  sites: sites().sites,
  resolve: () => Effect.succeed(route),
  requireTls: () => false,
  ...extra,
});

const run = (dispatch: ReturnType<typeof makeDispatch>, entry: QueueEntry, load: () => Uint8Array = () => body) =>
  Effect.runPromise(dispatch(entry, message, load, mayStart).pipe(Effect.provide(TestClock.layer())));

const decided = (entry: QueueEntry, attempt: Attempt) => decide(entry, attempt, t0 + 1000, 0.5, policy, dsnParamsOf(undefined));

test("a message the session quarantined goes to the folder its attributes name", async () => {
  const { router, stored } = mailboxes(() => Effect.succeed("7.1"));
  const quarantined = { ...message, attributes: { ...message.attributes, folder: "Junk" } };
  await Effect.runPromise(makeDispatch(deps({ mailboxes: router }))(localEntry, quarantined, () => body, mayStart).pipe(Effect.provide(TestClock.layer())));
  assert.deepEqual(stored.map(({ user, folder }) => ({ user, folder })), [{ user: "u@local.test", folder: "Junk" }]);
});

test("a local route stores the body in the user's mailbox, behind Return-Path and Delivered-To, and reports its UID", async () => {
  const { router, stored } = mailboxes(() => Effect.succeed("7.1"));
  const attempt = await run(makeDispatch(deps({ mailboxes: router })), localEntry);
  assert.deepEqual(attempt, { server: "mailbox/u@local.test", results: [{ recipient: "u@local.test", result: { _tag: "Stored", uid: "7.1" } }] });
  assert.deepEqual(stored, [{ user: "u@local.test", entryId: "M1.0", text: "Return-Path: <s@origin.test>\r\nDelivered-To: u@local.test\r\nSubject: x\r\n\r\nhello\r\n" }]);
  const d = decided(localEntry, attempt);
  assert.equal(d.next, undefined, "delivered: the entry is finished");
  assert.deepEqual(d.outcomes.map((o) => o.status), ["delivered"]);
});

test("each typed mailbox error becomes its tagged failure, and every one defers", async () => {
  const cases: Array<[MailboxError, unknown, string]> = [
    [overQuota("u@local.test", 3_900, 4_000, 500), { _tag: "OverQuota", user: "u@local.test", usedBytes: 3_900, quotaBytes: 4_000, messageBytes: 500 }, "quota"],
    [new UnknownUser({ user: "u@local.test" }), { _tag: "UnknownUser", user: "u@local.test" }, "bad-mailbox"],
    [new MailboxUnavailable({ user: "u@local.test", detail: "owner node n2 does not answer" }), { _tag: "MailboxUnavailable", user: "u@local.test", error: "MailboxUnavailable", detail: "owner node n2 does not answer" }, "other"],
    [new NotOwner({ user: "u@local.test", node: "n3" }), { _tag: "MailboxUnavailable", user: "u@local.test", error: "NotOwner", detail: "not the owner node (n3)" }, "other"],
    [new StoreError({ operation: "deliver", detail: "MDB_MAP_FULL" }), { _tag: "MailboxUnavailable", user: "u@local.test", error: "StoreError", detail: "MDB_MAP_FULL" }, "other"],
  ];
  for (const [error, failure, category] of cases) {
    const attempt = await run(makeDispatch(deps({ mailboxes: mailboxes(() => Effect.fail(error)).router })), localEntry);
    assert.deepEqual(attempt, { server: "mailbox/u@local.test", results: [{ recipient: "u@local.test", result: failure }] }, error._tag);
    const d = decided(localEntry, attempt);
    assert.deepEqual(d.outcomes.map((o) => [o.status, o.category]), [["deferred", category]], error._tag);
    assert.equal(d.next?.reason, "mailbox-unavailable", error._tag);
    assert.equal(d.notices.length, 0, `${error._tag}: no bounce before the queue lifetime`);
  }
});

test("DNS: a temporary failure defers as dns, a permanent one fails as bad-domain, both as values with the resolver's rcode and server", async () => {
  const temporary = new DnsTemporaryFailure({ domain: "remote.test", detail: "MX remote.test: SERVFAIL from 192.0.2.53:53", rcode: "SERVFAIL", server: "192.0.2.53:53" });
  const deferred = await run(makeDispatch(deps({ resolve: () => Effect.fail(temporary) })), remoteEntry);
  assert.equal(deferred.server, "dns");
  assert.deepEqual(deferred.results.map((r) => r.result), [
    { _tag: "DnsTemporary", domain: "remote.test", detail: "MX remote.test: SERVFAIL from 192.0.2.53:53", rcode: "SERVFAIL", server: "192.0.2.53:53" },
    { _tag: "DnsTemporary", domain: "remote.test", detail: "MX remote.test: SERVFAIL from 192.0.2.53:53", rcode: "SERVFAIL", server: "192.0.2.53:53" },
  ]);
  const waiting = decided(remoteEntry, deferred);
  assert.deepEqual(waiting.outcomes.map((o) => [o.status, o.category]), [["deferred", "dns"], ["deferred", "dns"]]);
  assert.equal(waiting.next?.reason, "dns-temporary");
  assert.equal(waiting.notices.length, 0);

  const permanent = new DnsPermanentFailure({ domain: "remote.test", reason: "null-mx", detail: "null MX: remote.test accepts no mail (RFC 7505)" });
  const failed = await run(makeDispatch(deps({ resolve: () => Effect.fail(permanent) })), remoteEntry);
  assert.deepEqual(failed.results[0]!.result, { _tag: "DnsPermanent", domain: "remote.test", reason: "null-mx", detail: "null MX: remote.test accepts no mail (RFC 7505)" });
  const bounced = decided(remoteEntry, failed);
  assert.deepEqual(bounced.outcomes.map((o) => [o.status, o.category]), [["failed", "bad-domain"], ["failed", "bad-domain"]]);
  assert.equal(bounced.next, undefined);
  assert.deepEqual(bounced.notices[0]!.recipients.map((r) => r.status), ["5.1.10", "5.1.10"]);

  // A failure from a resolver older than `reason` is read as NXDOMAIN.
  const older = await run(makeDispatch(deps({ resolve: () => Effect.fail(new DnsPermanentFailure({ domain: "remote.test", detail: "NXDOMAIN" })) })), remoteEntry);
  assert.equal(decided(remoteEntry, older).notices[0]!.recipients[0]!.status, "5.1.2");
});

test("a remote route reaches the site actors with the resolved route, the envelope, DSN parameters and the TLS policy; the body is loaded only by them", async () => {
  const { sites: stub, jobs } = sites();
  let loads = 0;
  const dispatch = makeDispatch(deps({ sites: stub, requireTls: (domain) => domain === "remote.test" }));
  const attempt = await run(dispatch, remoteEntry, () => (loads++, body));
  assert.equal(loads, 0, "dispatch does not load the body for a remote route");
  assert.equal(jobs.length, 1);
  const job = jobs[0]!;
  assert.deepEqual(job.route, route);
  assert.equal(job.sender, "s@origin.test");
  assert.deepEqual(job.recipients, ["a@remote.test", "b@remote.test"]);
  assert.equal(job.tls, "require");
  assert.equal(job.dsn.ret, "HDRS");
  assert.equal(job.dsn.envid, "ENV+1", "as stored: smtp-server decoded it from xtext already");
  assert.deepEqual(job.body(), body);
  assert.equal(loads, 1);
  assert.deepEqual(attempt.mx, { host: "mx.remote.test", ip: "192.0.2.1" });

  const other = await run(makeDispatch(deps({ sites: stub, requireTls: () => false })), { ...remoteEntry, route: { kind: "remote", domain: "other.test" } });
  assert.equal(jobs[1]!.tls, "opportunistic");
  assert.equal(other.results.length, 2);
});

test("a route is remembered for five seconds of the node's clock: one resolver ask per domain, not per message", async () => {
  let asks = 0;
  const dispatch = makeDispatch(deps({ resolve: () => Effect.sync(() => (asks++, route)) }));
  await Effect.runPromise(
    Effect.gen(function* () {
      yield* dispatch(remoteEntry, message, () => body, mayStart);
      yield* dispatch(remoteEntry, message, () => body, mayStart);
      assert.equal(asks, 1, "the second message uses the remembered route");
      yield* TestClock.adjust("4999 millis");
      yield* dispatch(remoteEntry, message, () => body, mayStart);
      assert.equal(asks, 1);
      yield* TestClock.adjust("1 second");
      yield* dispatch(remoteEntry, message, () => body, mayStart);
      assert.equal(asks, 2, "asked again once the memo is stale");
    }).pipe(Effect.provide(TestClock.layer())),
  );
  // Failures are not remembered: the next message asks again.
  let failures = 0;
  const failing = makeDispatch(deps({ resolve: () => Effect.suspend(() => (failures++, Effect.fail(new DnsTemporaryFailure({ domain: "remote.test", detail: "timeout" })))) }));
  await run(failing, remoteEntry);
  await run(failing, remoteEntry);
  assert.equal(failures, 2);
});

// ---- IP pools with a cold address (warm-up caps per provider) ----

const cold = { address: "192.0.2.10", ehlo: "new.example.org", weight: 1_000_000, warmup: { schedule: "test", since: "2026-01-01", startDay: parseDay("2026-01-01")!, curve: { daily: [2] } } };
const warmSource = { address: "192.0.2.20", ehlo: "old.example.org", weight: 1 };
const pooled: MessageRecord = { ...message, attributes: { pool: "bulk" } };
const gmailRoute: MailRoute = { domain: "gmail.test", implicitMx: false, hosts: [{ name: "gmail-smtp-in.l.google.com", preference: 5, addresses: ["192.0.2.5"] }] };

/** Dispatches `count` messages of the bulk pool at 10:00 UTC on warm-up day 1; returns each attempt's source (or "wait"). */
const warmupRun = async (overflow: "warm" | "wait", count: number, answer?: (job: DeliveryJob) => Attempt) => {
  const { sites: stub, jobs } = sites(answer);
  const usage = makeWarmupUsage(memoryUsageStore(), t0);
  const dispatch = makeDispatch(
    deps({
      sites: stub,
      resolve: () => Effect.succeed(gmailRoute),
      pools: { pools: { bulk: [cold, warmSource] }, rules: [], defaultPool: undefined, overflow: { bulk: overflow } },
      warmup: { usage, providers: starterProviders },
    }),
  );
  const attempts: Attempt[] = [];
  await Effect.runPromise(
    Effect.gen(function* () {
      yield* TestClock.setTime(t0 + 10 * HOUR);
      for (let n = 0; n < count; n++) attempts.push(yield* dispatch(remoteEntry, pooled, () => body, mayStart));
    }).pipe(Effect.provide(TestClock.layer())),
  );
  return { attempts, usage, jobs };
};

test("a cold pool address sends its cap for the provider, then the attempt leaves from the warm address (overflow warm)", async () => {
  const { attempts, usage, jobs } = await warmupRun("warm", 4);
  assert.deepEqual(attempts.map((a) => a.results[0]!.result._tag), ["Reply", "Reply", "Reply", "Reply"]);
  assert.deepEqual(jobs.map((job) => job.source?.address), [cold.address, cold.address, warmSource.address, warmSource.address]);
  assert.deepEqual(usage.used(cold.address, "gmail", t0 + 10 * HOUR), { day: 2, hour: 2 }, "the Google MX host makes it gmail's cap");
});

test("overflow wait: past the cap every recipient defers with the cap's value, the entry waits for midnight UTC without counting an attempt or holding the queue", async () => {
  const { attempts, jobs } = await warmupRun("wait", 3);
  assert.deepEqual(jobs.map((job) => job.source?.address), [cold.address, cold.address], "the third is not sent");
  const waited = attempts[2]!;
  const until = t0 + 24 * HOUR;
  assert.deepEqual(waited, {
    server: "warm-up",
    source: cold.address,
    results: remoteEntry.recipients.map((recipient) => ({ recipient, result: { _tag: "WarmupCap", source: cold.address, provider: "gmail", window: "day", cap: 2, until } })),
  });
  const d = decide(remoteEntry, waited, t0 + 10 * HOUR, 0.5, policy, dsnParamsOf(undefined));
  assert.deepEqual(d.outcomes.map((o) => [o.status, o.category]), [["deferred", "rate-limited"], ["deferred", "rate-limited"]]);
  assert.equal(d.next?.reason, "warmup-cap");
  assert.equal(d.next?.attempts, remoteEntry.attempts, "no delivery attempt was made");
  assert.equal(d.next?.nextAttemptAt, until + 3_600_000, "due once the day opens, spread over its first two hours (random 0.5: one hour in)");
  assert.equal(d.holdQueue, undefined, "other pools' mail for the destination goes on");
  assert.equal(d.record.via, "warm-up");
  assert.match(renderResult(waited.results[0]!.result), /^4\.4\.5 source address 192\.0\.2\.10 is warming up and sent its cap of 2 this day to gmail; waits until 2026-01-02T00:00:00\.000Z$/);
});

test("an attempt the remote server refused spends nothing of the cap", async () => {
  const refuse = (job: DeliveryJob): Attempt => ({ server: "mx", results: job.recipients.map((recipient) => ({ recipient, result: { _tag: "Reply", code: 451, enhanced: "4.7.28", text: "slow down" } })) });
  const { usage } = await warmupRun("wait", 3, refuse);
  assert.deepEqual(usage.used(cold.address, "gmail", t0 + 10 * HOUR), { day: 0, hour: 0 });
});

test("a sender domain a reputation threshold pauses: every recipient defers unsent and unresolved, no attempt counted, no queue held, back once the pause ends", async () => {
  const { sites: stub, jobs } = sites();
  const until = t0 + 2 * HOUR;
  let resolved = 0;
  const holds: ReputationHolds = {
    ...NO_HOLDS,
    sender: (domain, now) => (domain === "origin.test" && now < until ? { _tag: "ReputationHold", dimension: "sender_domain", key: domain, rule: "domain-bounces", action: "pause", until } : undefined),
  };
  const dispatch = makeDispatch(deps({ sites: stub, holds, resolve: () => Effect.sync(() => (resolved++, route)) }));
  const held = await run(dispatch, remoteEntry);
  assert.deepEqual(held, {
    server: "reputation",
    results: remoteEntry.recipients.map((recipient) => ({ recipient, result: { _tag: "ReputationHold", dimension: "sender_domain", key: "origin.test", rule: "domain-bounces", action: "pause", until } })),
  });
  assert.deepEqual([jobs.length, resolved], [0, 0], "neither resolved nor sent");
  const d = decide(remoteEntry, held, t0, 0.5, policy, dsnParamsOf(undefined));
  assert.deepEqual(d.outcomes.map((o) => [o.status, o.category]), [["deferred", "rate-limited"], ["deferred", "rate-limited"]]);
  assert.equal(d.next?.reason, "reputation-hold");
  assert.equal(d.next?.attempts, remoteEntry.attempts, "no delivery attempt was made");
  assert.equal(d.next?.nextAttemptAt, until + 30_000, "due once the pause ends, spread over a minute (random 0.5)");
  assert.equal(d.holdQueue, undefined, "other senders' mail for the destination goes on");
  assert.match(renderResult(held.results[0]!.result), /^4\.4\.5 not attempted: sender domain origin\.test is paused until 2026-01-01T02:00:00\.000Z \(reputation threshold domain-bounces\)$/);
  // A local route is never held, and once the pause is over the mail goes.
  assert.equal((await run(dispatch, localEntry)).results[0]!.result._tag, "Stored");
  const later = await Effect.runPromise(Effect.gen(function* () {
    yield* TestClock.setTime(until);
    return yield* dispatch(remoteEntry, message, () => body, mayStart);
  }).pipe(Effect.provide(TestClock.layer())));
  assert.equal(later.results[0]!.result._tag, "Reply");
  assert.equal(jobs.length, 1);
});

test("a slowed sender domain's message that is not its turn comes back exactly at its turn", () => {
  const turn = t0 + 120_000;
  const held: Attempt = { server: "reputation", results: [{ recipient: "a@remote.test", result: { _tag: "ReputationHold", dimension: "sender_domain", key: "origin.test", rule: "slow", action: "slow", until: turn } }] };
  const d = decide({ ...remoteEntry, recipients: ["a@remote.test"] }, held, t0, 0.9, policy, dsnParamsOf(undefined));
  assert.equal(d.next?.nextAttemptAt, turn);
  assert.equal(d.next?.reason, "reputation-hold");
  assert.match(renderResult(held.results[0]!.result), /not attempted yet: sender domain origin\.test is slowed \(reputation threshold slow\); its turn comes at 2026-01-01T00:02:00\.000Z/);
});

test("mail from the null sender (a DSN) is stored with Return-Path: <>", async () => {
  const { router, stored } = mailboxes(() => Effect.succeed("7.2"));
  await run(makeDispatch(deps({ mailboxes: router })), { ...localEntry, sender: "" });
  assert.match(stored[0]!.text, /^Return-Path: <>\r\nDelivered-To: u@local\.test\r\nSubject: x\r\n/);
});
