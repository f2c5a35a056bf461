// Reputation figures and thresholds of a node (actors/delivery/reputation.ts), fed with
// outcomes as the scheduler records them, under TestClock: what is counted for which key,
// the bounded table of sender domains, and thresholds that pause or slow a sender domain
// or source address, with the holds delivery reads, then let go on the clock.
import { test } from "node:test";
import assert from "node:assert/strict";
import { Effect } from "effect";
import { TestClock } from "effect/testing";
import type { Attempt } from "../../../actors/delivery/attempt.ts";
import { makeClassifier } from "../../../actors/delivery/classify.ts";
import { dsnParamsOf } from "../../../actors/delivery/dsn.ts";
import { decide, type OutcomePolicy } from "../../../actors/delivery/outcome.ts";
import { starterProviders } from "../../../actors/delivery/providers.ts";
import { makeReputation, type ActionEvent, type Dimension, type Reputation, type ReputationOptions } from "../../../actors/delivery/reputation.ts";
import type { Threshold } from "../../../actors/delivery/reputation-rules.ts";
import type { WindowName } from "../../../actors/delivery/reputation-window.ts";
import type { QueueEntry } from "../../../actors/queue/entry.ts";
import type { RecipientResult } from "../../../protocol/delivery.ts";
import { parseReply } from "../../../protocol/smtp-reply.ts";

const MINUTE = 60_000;
const policy: OutcomePolicy = { maxAgeMs: 120 * 60 * MINUTE, delayNoticeMs: 4 * 60 * MINUTE, retry: { baseMs: MINUTE, maxMs: 60 * MINUTE }, classify: makeClassifier() };

const entry = (sender: string, recipients: ReadonlyArray<string>, route: QueueEntry["route"] = { kind: "remote", domain: "gmail.com" }): QueueEntry => ({
  id: "M1.0",
  messageId: "M1",
  route,
  sender,
  recipients,
  createdAt: 0,
  attempts: 0,
  nextAttemptAt: 0,
  reason: "received",
});

const OK = parseReply("250 2.0.0 ok")!;
const NO_USER = parseReply("550 5.1.1 no such user")!;
const LATER = parseReply("451 4.3.0 try later")!;

/** One attempt at Gmail's MX from `source`, one result per recipient. */
const sent = (rep: Reputation, sender: string, results: ReadonlyArray<RecipientResult>, source?: string, mx = "gmail-smtp-in.l.google.com") =>
  Effect.gen(function* () {
    const queued = entry(sender, results.map((_, n) => `r${n}@gmail.com`));
    const attempt: Attempt = { server: `${mx}[192.0.2.1]`, mx: { host: mx, ip: "192.0.2.1" }, ...(source ? { source } : {}), results: queued.recipients.map((recipient, n) => ({ recipient, result: results[n]! })) };
    const now = yield* TestClockNow;
    rep.recorded(queued, attempt, decide(queued, attempt, now, 0.5, policy, dsnParamsOf(undefined)));
  });
const TestClockNow = Effect.clockWith((clock) => clock.currentTimeMillis);

const row = (rep: Reputation, dimension: Dimension, key: string, window: WindowName = "1h") => rep.figures(window, dimension).find((f) => f.key === key)?.counts;

const make = (options: Partial<ReputationOptions>, events: ActionEvent[] = []) =>
  makeReputation({
    maxSenderDomains: 100,
    thresholds: [],
    providers: starterProviders,
    gapMs: 1_000,
    observer: { changed: (e) => events.push(e), full: () => undefined },
    ...options,
  });

const run = <A>(body: Effect.Effect<A, never, import("effect").Scope.Scope>) => Effect.runPromise(Effect.scoped(body).pipe(Effect.provide(TestClock.layer())));

test("each remote outcome counts for its source address, sender domain and provider; holds, local mail and the null sender's domain do not", () =>
  run(
    Effect.gen(function* () {
      const rep = yield* make({});
      yield* sent(rep, "news@Shop.example", [OK, OK, NO_USER, LATER], "192.0.2.10");
      yield* sent(rep, "news@shop.example", [OK]);
      // Not attempted by this node: a reputation hold, a paused site, a warm-up cap.
      yield* sent(rep, "news@shop.example", [{ _tag: "ReputationHold", dimension: "sender_domain", key: "shop.example", rule: "r", action: "pause", until: 1 }]);
      yield* sent(rep, "news@shop.example", [{ _tag: "BackedOff", rule: "r", until: 1, reply: LATER as never }]);
      // A DNS failure reached no host from no address: the sender domain's only.
      const dnsEntry = entry("news@shop.example", ["x@nxdomain.example"], { kind: "remote", domain: "nxdomain.example" });
      const dns: Attempt = { server: "dns", results: [{ recipient: "x@nxdomain.example", result: { _tag: "DnsPermanent", domain: "nxdomain.example", reason: "nxdomain", detail: "NXDOMAIN" } }] };
      rep.recorded(dnsEntry, dns, decide(dnsEntry, dns, 0, 0.5, policy, dsnParamsOf(undefined)));
      // Local delivery, and a bounce to the null sender.
      const local = entry("news@shop.example", ["me@localhost"], { kind: "local", user: "me@localhost" });
      const stored: Attempt = { server: "mailbox/me@localhost", results: [{ recipient: "me@localhost", result: { _tag: "Stored", uid: "1" } }] };
      rep.recorded(local, stored, decide(local, stored, 0, 0.5, policy, dsnParamsOf(undefined)));
      yield* sent(rep, "", [OK]);

      assert.deepEqual(row(rep, "source", "192.0.2.10"), { delivered: 2, deferred: 1, complained: 0, bounced: 1, bounces: { "bad-mailbox": 1 } });
      assert.deepEqual(row(rep, "source", "default"), { delivered: 2, deferred: 0, complained: 0, bounced: 0, bounces: {} });
      assert.deepEqual(row(rep, "sender_domain", "shop.example"), { delivered: 3, deferred: 1, complained: 0, bounced: 2, bounces: { "bad-mailbox": 1, "bad-domain": 1 } });
      assert.deepEqual(row(rep, "provider", "gmail"), { delivered: 4, deferred: 1, complained: 0, bounced: 1, bounces: { "bad-mailbox": 1 } });
      assert.deepEqual(rep.figures("1h").map((f) => `${f.dimension}:${f.key}`), ["source:192.0.2.10", "source:default", "sender_domain:shop.example", "provider:gmail"]);
      // A complaint reported later counts where it is said to belong.
      rep.recordComplaint({ senderDomain: "shop.example", source: "192.0.2.10", provider: "gmail" });
      assert.equal(row(rep, "sender_domain", "shop.example")!.complained, 1);
      assert.equal(row(rep, "source", "192.0.2.10", "24h")!.complained, 1);
      // An hour later the 1 h window is empty; the day's still holds it all.
      yield* TestClock.adjust(60 * MINUTE);
      assert.deepEqual(rep.figures("1h"), []);
      assert.equal(row(rep, "provider", "gmail", "24h")!.delivered, 4);
    }),
  ));

test("sender domains beyond maxSenderDomains count together as other, until a tracked one has been idle a day", () =>
  run(
    Effect.gen(function* () {
      let full = 0;
      const rep = yield* makeReputation({ maxSenderDomains: 2, thresholds: [], providers: starterProviders, gapMs: 1_000, observer: { changed: () => undefined, full: () => full++ } });
      yield* sent(rep, "a@one.example", [OK]);
      yield* TestClock.adjust(2 * 60 * MINUTE);
      yield* sent(rep, "a@two.example", [OK]);
      yield* sent(rep, "a@three.example", [NO_USER]);
      yield* sent(rep, "a@four.example", [OK]);
      assert.deepEqual(rep.figures("24h", "sender_domain").map((f) => [f.key, f.counts.delivered + f.counts.bounced]), [["one.example", 1], ["other", 2], ["two.example", 1]]);
      assert.equal(full, 1, "reported once when the table filled");
      // one.example is idle for a day: forgotten at the next sweep, and a new domain takes its place.
      yield* TestClock.adjust(23 * 60 * MINUTE);
      yield* sent(rep, "a@five.example", [OK]);
      assert.deepEqual(rep.figures("24h", "sender_domain").map((f) => f.key), ["five.example", "other", "two.example"]);
    }),
  ));

const domainPause: Threshold = { name: "domain-bounces", dimension: "sender_domain", window: "1h", limits: { bounce: 0.2 }, minMessages: 20, action: { _tag: "pause", ms: 10 * MINUTE }, recoverRatio: 0.8 };
const ipSlow: Threshold = { name: "ip-bounces", dimension: "source", window: "1h", limits: { bounce: 0.2 }, minMessages: 20, action: { _tag: "slow", level: 3 }, recoverRatio: 0.8 };

/** 20 messages of one recipient each, every 4th bounced (25 %). */
const quarterBounced = (rep: Reputation, sender: string, source?: string) =>
  Effect.forEach(Array.from({ length: 20 }, (_, n) => n), (n) => sent(rep, sender, [n % 4 === 3 ? NO_USER : OK], source), { discard: true });

test("a sender domain over its bounce threshold is paused: its mail is held until the pause ends, then judged on new outcomes only", () =>
  run(
    Effect.gen(function* () {
      const events: ActionEvent[] = [];
      const rep = yield* make({ thresholds: [domainPause] }, events);
      const t0 = yield* TestClockNow;
      yield* Effect.forEach(Array.from({ length: 19 }, (_, n) => n), (n) => sent(rep, "news@shop.example", [n % 4 === 3 ? NO_USER : OK]), { discard: true });
      assert.equal(events.length, 0, "19 messages: too few to judge");
      yield* sent(rep, "news@shop.example", [NO_USER]);
      assert.deepEqual(events.map((e) => [e.change, e.dimension, e.key, e.rule, e.kind, e.rate, e.limit, e.messages, e.pausedUntil]), [
        ["paused", "sender_domain", "shop.example", "domain-bounces", "bounce", 0.25, 0.2, 20, t0 + 10 * MINUTE],
      ]);
      assert.deepEqual(rep.holds.sender("SHOP.example", t0), { _tag: "ReputationHold", dimension: "sender_domain", key: "shop.example", rule: "domain-bounces", action: "pause", until: t0 + 10 * MINUTE });
      assert.equal(rep.holds.sender("other.example", t0), undefined);
      assert.equal(rep.holds.source(undefined), undefined, "a sender domain's hold is not its source address's");
      assert.deepEqual(rep.actions().map((a) => [a.dimension, a.key, a.action, a.pausedUntil]), [["sender_domain", "shop.example", "pause", t0 + 10 * MINUTE]]);

      // The timer ends the pause at its time, without traffic.
      yield* TestClock.adjust(10 * MINUTE);
      assert.deepEqual(events.map((e) => e.change), ["paused", "resumed"]);
      assert.equal(rep.holds.sender("shop.example", t0 + 10 * MINUTE), undefined);
      assert.deepEqual(rep.actions(), []);
      // The old bounces are still in the window, but only what came after the pause is judged.
      yield* Effect.forEach(Array.from({ length: 19 }, (_, n) => n), () => sent(rep, "news@shop.example", [OK]), { discard: true });
      yield* TestClock.adjust(MINUTE);
      yield* sent(rep, "news@shop.example", [OK]);
      assert.deepEqual(events.map((e) => e.change), ["paused", "resumed"]);
    }),
  ));

test("a source address over its bounce threshold is slowed for every site (listeners hear it) and recovers when the bad outcomes leave the window", () =>
  run(
    Effect.gen(function* () {
      const events: ActionEvent[] = [];
      const rep = yield* make({ thresholds: [ipSlow, domainPause] }, events);
      const heard: string[] = [];
      rep.holds.onSourceChange((key) => heard.push(key));
      yield* quarterBounced(rep, "news@shop.example", "192.0.2.10");
      assert.deepEqual(events.map((e) => [e.change, e.dimension, e.key]).sort(), [["paused", "sender_domain", "shop.example"], ["slowed", "source", "192.0.2.10"]]);
      assert.deepEqual(rep.holds.source("192.0.2.10"), { pausedUntil: 0, level: 3, rule: "ip-bounces" });
      assert.equal(rep.holds.source("192.0.2.11"), undefined);
      assert.deepEqual(heard, ["192.0.2.10"]);
      // Under the limit but not under 80 % of it (16 %): still slowed.
      yield* Effect.forEach(Array.from({ length: 8 }, (_, n) => n), () => sent(rep, "a@other.example", [OK], "192.0.2.10"), { discard: true });
      assert.equal(rep.holds.source("192.0.2.10")?.level, 3, "5 of 28 is 17.9 %");
      // An hour on, the bad minute has left the window: the sweep lets the address go.
      yield* TestClock.adjust(60 * MINUTE);
      assert.deepEqual(events.filter((e) => e.dimension === "source").map((e) => [e.change, e.rate]), [["slowed", 0.25], ["recovered", 0]]);
      assert.equal(rep.holds.source("192.0.2.10"), undefined);
      assert.deepEqual(heard, ["192.0.2.10", "192.0.2.10"]);
    }),
  ));

test("a slowed sender domain sends one message per gap; the others are given the next turns, at most 15 minutes ahead", () =>
  run(
    Effect.gen(function* () {
      const slowDomain: Threshold = { ...domainPause, name: "domain-slow", action: { _tag: "slow", level: 2 } };
      const rep = yield* make({ thresholds: [slowDomain], gapMs: 60_000 }, []);
      yield* quarterBounced(rep, "news@shop.example");
      const now = yield* TestClockNow;
      // Level 2: one message every 2 × gapMs.
      assert.equal(rep.holds.sender("shop.example", now), undefined, "the first goes");
      const turns = Array.from({ length: 9 }, () => rep.holds.sender("shop.example", now));
      assert.deepEqual(turns.map((t) => [t?.action, (t!.until - now) / MINUTE]), [
        ["slow", 2], ["slow", 4], ["slow", 6], ["slow", 8], ["slow", 10], ["slow", 12], ["slow", 14], ["slow", 15], ["slow", 15],
      ]);
      // The first turn comes: that message goes, and a newcomer is given the turn after the last one given out.
      assert.equal(rep.holds.sender("shop.example", now + 2 * MINUTE), undefined);
      assert.equal(rep.holds.sender("shop.example", now + 2 * MINUTE)?.until, now + 16 * MINUTE);
    }),
  ));

test("complaints over deliveries cross a complaint threshold", () =>
  run(
    Effect.gen(function* () {
      const events: ActionEvent[] = [];
      const complaints: Threshold = { name: "complaints", dimension: "sender_domain", window: "24h", limits: { complaint: 0.01 }, minMessages: 100, action: { _tag: "pause", ms: MINUTE }, recoverRatio: 0.8 };
      const rep = yield* make({ thresholds: [complaints] }, events);
      yield* Effect.forEach(Array.from({ length: 200 }, (_, n) => n), () => sent(rep, "a@shop.example", [OK]), { discard: true });
      rep.recordComplaint({ senderDomain: "shop.example", source: "default", provider: "gmail" });
      assert.equal(events.length, 0, "1 complaint in 200 deliveries: 0.5 %");
      rep.recordComplaint({ senderDomain: "shop.example" });
      assert.deepEqual(events.map((e) => [e.change, e.key, e.kind, e.rate, e.messages]), [["paused", "shop.example", "complaint", 0.01, 200]]);
      assert.equal(row(rep, "provider", "gmail", "24h")!.complained, 1);
    }),
  ));

test("what comes back later is judged like the rest: bounces after delivery cross a bounce threshold, complaints a source address's complaint threshold", () =>
  run(
    Effect.gen(function* () {
      const events: ActionEvent[] = [];
      const bounces: Threshold = { name: "domain-bounces", dimension: "sender_domain", window: "1h", limits: { bounce: 0.1 }, minMessages: 20, action: { _tag: "pause", ms: MINUTE }, recoverRatio: 0.8 };
      const complaints: Threshold = { name: "ip-complaints", dimension: "source", window: "24h", limits: { complaint: 0.05 }, minMessages: 20, action: { _tag: "slow", level: 3 }, recoverRatio: 0.8 };
      const rep = yield* make({ thresholds: [bounces, complaints] }, events);
      yield* Effect.forEach(Array.from({ length: 20 }, (_, n) => n), () => sent(rep, "a@shop.example", [OK], "192.0.2.10"), { discard: true });
      // Two bounces after delivery: 2 / 22 final outcomes, under 10 %; the third crosses.
      const later = { senderDomain: "shop.example", source: "192.0.2.10", provider: "gmail" };
      rep.recordOutcome(later, { _tag: "bounced", category: "bad-mailbox" });
      rep.recordOutcome(later, { _tag: "bounced", category: "quota" });
      assert.equal(events.length, 0);
      rep.recordOutcome(later, { _tag: "bounced", category: "bad-mailbox" });
      assert.deepEqual(events.map((e) => [e.change, e.dimension, e.key, e.kind, e.messages]), [["paused", "sender_domain", "shop.example", "bounce", 23]]);
      assert.deepEqual(row(rep, "sender_domain", "shop.example")!.bounces, { "bad-mailbox": 2, quota: 1 });
      // Complaints over the address's 20 deliveries: the first is 5 %, at the limit.
      rep.recordComplaint(later);
      assert.deepEqual(events.slice(1).map((e) => [e.change, e.dimension, e.key, e.kind, e.rate, e.level]), [["slowed", "source", "192.0.2.10", "complaint", 0.05, 3]]);
      assert.equal(rep.holds.source("192.0.2.10")?.level, 3);
    }),
  ));
