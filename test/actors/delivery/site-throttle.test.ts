// Automatic back-off in the site actors, against scripted loopback SMTP servers: a
// throttling reply slows the site for that source address (fewer connections, a gap
// between messages) or pauses it (jobs come back deferred, unsent), every change is
// reported, and quiet time brings it back step by step, even across the site actor being
// stopped for idleness.
import { after, test } from "node:test";
import assert from "node:assert/strict";
import { performance } from "node:perf_hooks";
import { Effect, Exit, Scope } from "effect";
import { TestClock } from "effect/testing";
import { makeConnectionBudget } from "../../../actors/delivery/connections.ts";
import { dsnParamsOf } from "../../../actors/delivery/dsn.ts";
import type { ThrottleEvent, ThrottleOptions } from "../../../actors/delivery/site-throttle.ts";
import { makeSites, type DeliveryJob, type SiteOptions } from "../../../actors/delivery/sites.ts";
import { makeThrottleMatcher, starterThrottleRules } from "../../../actors/delivery/throttle-rules.ts";
import { makeSupervisor } from "../../../actors/runtime/supervisor.ts";
import { renderResult, statusOfResult } from "../../../protocol/delivery.ts";
import type { MailRoute } from "../../../protocol/route.ts";
import { startScriptedSmtp, type Script, type ScriptedServer } from "../../support/scripted-smtp.ts";

const servers: ScriptedServer[] = [];
const stops: Array<() => Promise<void>> = [];
after(async () => {
  await Promise.all(stops.map((stop) => stop()));
  await Promise.all(servers.map((s) => s.close()));
});

const serve = async (script: Script) => {
  const server = await startScriptedSmtp(script);
  servers.push(server);
  return server;
};

const UNUSUAL_RATE = "421 4.7.28 [127.0.0.1] Our system has detected an unusual rate of unsolicited mail originating from your IP address.";

/** Throttle options with the starter rules, reporting to `seen`. */
const throttle = (seen: { events: ThrottleEvent[]; replies: string[] }, policy = { recoveryMs: 60_000, gapMs: 1_000 }): ThrottleOptions => ({
  match: makeThrottleMatcher(starterThrottleRules),
  policy,
  observer: { changed: (event) => seen.events.push(event), replied: (rule) => seen.replies.push(rule) },
});

const options = (port: number, extra: Partial<SiteOptions>): SiteOptions => ({
  heloName: "tern.test",
  port,
  connectTimeoutMs: 1_000,
  greetingTimeoutMs: 1_000,
  socketTimeoutMs: 2_000,
  messagesPerConnection: 100,
  maxRecipientsPerTransaction: 100,
  connectionsPerSite: 4,
  siteConnections: {},
  idleMs: 2_000,
  maxQueueWaitMs: 60 * 60_000,
  ...extra,
});

const route: MailRoute = { domain: "remote.test", implicitMx: false, hosts: [{ name: "mx.remote.test", preference: 10, addresses: ["127.0.0.1"] }] };

const job = (recipient: string, extra: Partial<DeliveryJob> = {}): DeliveryJob => ({
  route,
  sender: "sender@origin.test",
  recipients: [recipient],
  body: () => Buffer.from("From: sender@origin.test\r\nSubject: hi\r\n\r\nhello\r\n"),
  dsn: dsnParamsOf(undefined),
  tls: "opportunistic",
  ...extra,
});

/** Waits for a socket-level effect, polling: this is I/O, not a schedule. */
const eventually = async (check: () => boolean, what: string, timeoutMs = 3_000) => {
  const deadline = performance.now() + timeoutMs;
  while (!check()) {
    if (performance.now() > deadline) assert.fail(`timed out waiting until ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
};

const summary = (event: ThrottleEvent) => `${event.change} ${event.previousLevel}->${event.level}`;

test("a slowing reply halves the site's connections and spaces its messages; other replies leave it alone", async () => {
  const arrivals: number[] = [];
  let answer: string | undefined = "451 4.7.1 Greylisted, please try again later";
  const server = await serve({
    rcpt: () => answer,
    data: () => void arrivals.push(performance.now()),
  });
  const seen = { events: [] as ThrottleEvent[], replies: [] as string[] };
  const scope = Scope.makeUnsafe();
  stops.push(() => Effect.runPromise(Scope.close(scope, Exit.void)));
  const sites = Effect.runSync(
    makeSites(options(server.port, { throttle: throttle(seen, { recoveryMs: 60_000, gapMs: 150 }) }), makeConnectionBudget(50), makeSupervisor()).pipe(Scope.provide(scope)),
  );

  const greylisted = await Effect.runPromise(sites.deliver(job("a@remote.test")));
  assert.equal(statusOfResult(greylisted.results[0]!.result), "deferred");
  assert.deepEqual(sites.throttled(), [], "greylisting is no throttling");

  answer = "450 4.7.0 [127.0.0.1] temporarily rate limited, please slow down";
  const limited = await Effect.runPromise(sites.deliver(job("b@remote.test")));
  assert.equal(statusOfResult(limited.results[0]!.result), "deferred", "the reply itself defers, as any 4xx");
  assert.deepEqual(seen.replies, ["gmail-rate-limited"]);
  assert.deepEqual(seen.events.map(summary), ["slowed 0->1"]);
  const [view] = sites.throttled();
  assert.equal(view?.site, "mx.remote.test");
  assert.equal(view?.source, undefined);
  assert.equal(view?.connections, 2);
  assert.equal(view?.gapMs, 150);
  assert.equal(view?.rule, "gmail-rate-limited");
  assert.equal(view?.reply?.code, 450);

  // The step closed the site's idle connections.
  await eventually(() => server.open() === 0, "the idle connections are closed");
  answer = undefined;
  const started = performance.now();
  let peak = 0;
  const sampler = setInterval(() => (peak = Math.max(peak, server.open())), 5);
  const sent = await Effect.runPromise(Effect.all(Array.from({ length: 6 }, (_, n) => sites.deliver(job(`r${n}@remote.test`))), { concurrency: "unbounded" }));
  clearInterval(sampler);
  assert.ok(sent.every((attempt) => statusOfResult(attempt.results[0]!.result) === "delivered"));
  assert.ok(peak <= 2, `at most 2 connections at level 1, saw ${peak}`);
  assert.ok(new Set(server.accepted.map((mail) => mail.connection)).size <= 2, "two connections carried the six messages");
  const gaps = arrivals.slice(1).map((at, n) => at - arrivals[n]!);
  // Sends start a gap apart (150 ms); an arrival also carries its connection's set-up and
  // whatever held up that one send, so one gap can shrink by as much as the one before it
  // grew (167 then 86 ms on a loaded CI machine). Unthrottled, the six arrive within a few ms
  // of each other: every gap over a third of the interval still shows them spaced, and the
  // next check shows the whole run takes five gaps.
  assert.ok(gaps.every((gap) => gap >= 50), `messages about the gap apart: ${gaps.map(Math.round).join(", ")} ms`);
  assert.ok(arrivals.at(-1)! - arrivals[0]! >= 4.5 * 150 && performance.now() - started >= 5 * 150, "six messages take five gaps");
});

test("a pausing reply holds the site for that source address: later jobs come back deferred and unsent; the pause ends and the level recovers on the clock", () =>
  Effect.runPromise(
    Effect.scoped(
      Effect.gen(function* () {
        // Only mail from this sender is refused, so the test can tell the source addresses apart.
        let throttling = true;
        const server = yield* Effect.promise(() => serve({ mail: (from) => (throttling && from === "bulk@origin.test" ? UNUSUAL_RATE : undefined) }));
        const seen = { events: [] as ThrottleEvent[], replies: [] as string[] };
        const sites = yield* makeSites(options(server.port, { throttle: throttle(seen), idleMs: 1_000 }), makeConnectionBudget(50), makeSupervisor());
        const A = { address: "127.0.0.1", ehlo: "a.tern.test", weight: 1 };
        const B = { address: "127.0.0.2", ehlo: "b.tern.test", weight: 1 };
        const bulk = (rcpt: string, source = A) => job(rcpt, { sender: "bulk@origin.test", source });
        const t0 = 0;

        const refused = yield* sites.deliver(bulk("a@remote.test"));
        assert.deepEqual(refused.results[0]!.result, { _tag: "Reply", code: 421, enhanced: "4.7.28", text: UNUSUAL_RATE.slice(11) });
        assert.deepEqual(seen.events.map(summary), ["paused 0->1"]);
        const pausedUntil = t0 + 15 * 60_000;
        assert.deepEqual(
          sites.throttled().map((v) => ({ site: v.site, source: v.source, level: v.level, pausedUntil: v.pausedUntil, rule: v.rule })),
          [{ site: "mx.remote.test", source: "127.0.0.1", level: 1, pausedUntil, rule: "gmail-unusual-rate" }],
        );

        const mails = () => server.commands.filter((c) => c.startsWith("MAIL")).length;
        const before = mails();
        const held = yield* sites.deliver(job("b@remote.test", { source: A }));
        const result = held.results[0]!.result;
        assert.equal(result._tag, "BackedOff");
        assert.equal(statusOfResult(result), "deferred", "held, never bounced");
        assert.equal(held.source, "127.0.0.1");
        assert.match(renderResult(result), /^4\.7\.28 not attempted: the site is paused for this source address until .* \(throttle rule gmail-unusual-rate\); the host said: 421 4\.7\.28/);
        assert.equal(mails(), before, "nothing was sent");

        // Another source address is not paused.
        const other = yield* sites.deliver(job("c@remote.test", { source: B }));
        assert.equal(statusOfResult(other.results[0]!.result), "delivered");

        // The idle sweep stops the site actor; the pause outlives it.
        yield* TestClock.adjust(7 * 60_000);
        assert.ok(!sites.list().some((site) => site.site === "mx.remote.test@127.0.0.1"), "the paused site's actor was stopped for idleness");
        assert.equal((yield* sites.deliver(job("d@remote.test", { source: A }))).results[0]!.result._tag, "BackedOff");

        // The pause ends: sending resumes at level 1.
        throttling = false;
        yield* TestClock.setTime(pausedUntil);
        assert.deepEqual(seen.events.map(summary), ["paused 0->1", "resumed 1->1"]);
        assert.equal(sites.throttled()[0]?.pausedUntil, undefined);
        assert.equal(sites.throttled()[0]?.connections, 2);
        const resumed = yield* sites.deliver(bulk("e@remote.test"));
        assert.equal(statusOfResult(resumed.results[0]!.result), "delivered");

        // A quiet period later: back to normal.
        yield* TestClock.adjust(60_000);
        assert.deepEqual(seen.events.map(summary), ["paused 0->1", "resumed 1->1", "recovered 1->0"]);
        assert.deepEqual(sites.throttled(), []);
        assert.deepEqual(seen.replies, ["gmail-unusual-rate"]);
        const last = seen.events.at(-1)!;
        assert.equal(last.at, pausedUntil + 60_000);
        assert.equal(last.connections, 4);
      }),
    ).pipe(Effect.provide(TestClock.layer())),
  ));

test("a burst of throttling replies on every open connection steps the site down once", async () => {
  let throttling = true;
  const server = await serve({ rcpt: () => (throttling ? "421 4.7.0 Too many connections from your IP" : undefined), dataReplyDelayMs: 0 });
  const seen = { events: [] as ThrottleEvent[], replies: [] as string[] };
  const scope = Scope.makeUnsafe();
  stops.push(() => Effect.runPromise(Scope.close(scope, Exit.void)));
  const sites = Effect.runSync(makeSites(options(server.port, { throttle: throttle(seen) }), makeConnectionBudget(50), makeSupervisor()).pipe(Scope.provide(scope)));
  // Four messages at once, at normal: four connections, four 421s for messages all started before the step.
  const attempts = await Effect.runPromise(Effect.all(Array.from({ length: 4 }, (_, n) => sites.deliver(job(`r${n}@remote.test`))), { concurrency: "unbounded" }));
  assert.ok(attempts.every((attempt) => statusOfResult(attempt.results[0]!.result) === "deferred"));
  assert.equal(seen.replies.length, 4, "every reply is counted");
  assert.deepEqual(seen.events.map(summary), ["slowed 0->1"], "but the site steps down once");
  throttling = false;
});
