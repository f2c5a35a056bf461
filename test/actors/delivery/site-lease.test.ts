// Site actors under a cluster-wide budget, against a scripted loopback SMTP server: two
// nodes' site actors (two holders) share one owner's ledger in process; the server counts
// the connections open at once. Covers the connection limit, the message rate, and a lease
// that lapses when its owner stops answering; the lease's own renewal and lapse timing is
// driven by TestClock, without sites or sleeps.
import { after, test } from "node:test";
import assert from "node:assert/strict";
import { performance } from "node:perf_hooks";
import { Clock, Effect, Exit, ManagedRuntime, Scope } from "effect";
import { TestClock } from "effect/testing";
import { BudgetLedger } from "../../../actors/delivery/budget-ledger.ts";
import { makeConnectionBudget } from "../../../actors/delivery/connections.ts";
import { dsnParamsOf } from "../../../actors/delivery/dsn.ts";
import { makeSiteLease, type LeaseOptions, type SiteLease } from "../../../actors/delivery/site-lease.ts";
import { makeSites, type DeliveryJob, type Sites } from "../../../actors/delivery/sites.ts";
import { makeSupervisor } from "../../../actors/runtime/supervisor.ts";
import { statusOfResult } from "../../../protocol/delivery.ts";
import type { MailRoute } from "../../../protocol/route.ts";
import type { BudgetLimits, LeaseAsk, LeaseGrant } from "../../../protocol/site-budget.ts";
import { startScriptedSmtp, type Script, type ScriptedServer } from "../../support/scripted-smtp.ts";

const BUDGET = "mx.remote.test";
const TTL = 400;

const servers: ScriptedServer[] = [];
const scopes: Scope.Closeable[] = [];
after(async () => {
  await Promise.all(scopes.map((scope) => Effect.runPromise(Scope.close(scope, Exit.void))));
  await Promise.all(servers.map((s) => s.close()));
});

const serve = async (script: Script) => {
  const server = await startScriptedSmtp(script);
  servers.push(server);
  return server;
};

const inScope = <A>(effect: Effect.Effect<A, never, Scope.Scope>): A => {
  const scope = Scope.makeUnsafe();
  scopes.push(scope);
  return Effect.runSync(effect.pipe(Scope.provide(scope)));
};

/** The owner, in process: `answering` false makes every ask fail as an unreachable owner would. */
const makeOwner = () => {
  const ledger = new BudgetLedger(TTL);
  const owner = {
    answering: true,
    ask: (ask: LeaseAsk): Effect.Effect<LeaseGrant, { readonly _tag: "RemoteUnavailable" }> =>
      Effect.suspend(() =>
        owner.answering ? Effect.succeed(ledger.grant(ask, Date.now(), { alone: true }).grant) : Effect.fail({ _tag: "RemoteUnavailable" as const }),
      ),
  };
  return owner;
};

/** One node's site actors, holding a lease on the budget from `owner`. */
const nodeWith = (holder: string, port: number, limits: BudgetLimits, owner: ReturnType<typeof makeOwner>): { sites: Sites; lease: SiteLease } => {
  const lease = inScope(makeSiteLease({ budget: BUDGET, holder, limits, ask: owner.ask, renewMs: TTL / 5 }));
  const sites = inScope(
    makeSites(
      {
        heloName: `${holder}.tern.test`,
        port,
        connectTimeoutMs: 1_000,
        greetingTimeoutMs: 1_000,
        socketTimeoutMs: 2_000,
        messagesPerConnection: 100,
        maxRecipientsPerTransaction: 100,
        connectionsPerSite: 4,
        siteConnections: {},
        idleMs: 10_000,
        maxQueueWaitMs: 60_000,
      },
      makeConnectionBudget(50),
      makeSupervisor(),
      (route) => (route.hosts.some((host) => host.name === BUDGET) ? lease : undefined),
    ),
  );
  return { sites, lease };
};

const route: MailRoute = { domain: "remote.test", implicitMx: false, hosts: [{ name: BUDGET, preference: 10, addresses: ["127.0.0.1"] }] };

const job = (n: number): DeliveryJob => ({
  route,
  sender: "sender@origin.test",
  recipients: [`r${n}@remote.test`],
  body: () => Buffer.from(`From: sender@origin.test\r\nSubject: ${n}\r\n\r\nhello\r\n`),
  dsn: dsnParamsOf(undefined),
  tls: "opportunistic",
});

const deliverAll = (sites: Sites, from: number, count: number) =>
  Promise.all(Array.from({ length: count }, (_, i) => Effect.runPromise(sites.deliver(job(from + i)))));

const eventually = async (check: () => boolean, what: string, timeoutMs = 5_000) => {
  const deadline = performance.now() + timeoutMs;
  while (!check()) {
    if (performance.now() > deadline) assert.fail(`timed out waiting until ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
};

test("two nodes that could open 4 connections each keep a budget of 3 together, and both send", async () => {
  const server = await serve({ dataReplyDelayMs: 50 });
  const owner = makeOwner();
  const one = nodeWith("one", server.port, { connections: 3 }, owner);
  const two = nodeWith("two", server.port, { connections: 3 }, owner);
  const attempts = (await Promise.all([deliverAll(one.sites, 0, 30), deliverAll(two.sites, 100, 30)])).flat();
  assert.ok(attempts.every((a) => statusOfResult(a.results[0]!.result) === "delivered"));
  assert.equal(server.accepted.length, 60);
  assert.ok(server.peakConnections() <= 3, `${server.peakConnections()} connections at once`);
  assert.ok(server.peakConnections() >= 2, "the budget was hardly used");
});

test("a message rate: 15 messages at 5 per second take two seconds, whatever the connections allow", async () => {
  const server = await serve({});
  const owner = makeOwner();
  const { sites } = nodeWith("one", server.port, { messagesPerSecond: 5 }, owner);
  const started = performance.now();
  await deliverAll(sites, 0, 15);
  const elapsed = performance.now() - started;
  assert.equal(server.accepted.length, 15);
  // One second's worth at once, then five a second: 2 s for the other ten.
  assert.ok(elapsed >= 1_500, `15 messages in ${Math.round(elapsed)} ms`);
});

test("a lease whose owner stops answering lapses: idle connections close, and nothing is sent until an owner answers", async () => {
  const server = await serve({});
  const owner = makeOwner();
  const { sites, lease } = nodeWith("one", server.port, { connections: 2 }, owner);
  await deliverAll(sites, 0, 4);
  assert.equal(server.open(), 2, "two connections kept for reuse");
  owner.answering = false;
  await eventually(() => server.open() === 0, "the lapsed lease's connections are closed");
  assert.equal(lease.state().granted, 0);
  const waiting = Effect.runPromise(sites.deliver(job(10)));
  await new Promise((resolve) => setTimeout(resolve, TTL));
  assert.equal(server.accepted.length, 4, "sent without a lease");
  owner.answering = true;
  assert.equal(statusOfResult((await waiting).results[0]!.result), "delivered");
  assert.equal(server.accepted.length, 5);
});

test("messages per connection of a budget: a connection carries at most that many, then a new one is opened", async () => {
  const server = await serve({});
  const { sites } = nodeWith("one", server.port, { messagesPerConnection: 2 }, makeOwner());
  for (let n = 0; n < 12; n++) await Effect.runPromise(sites.deliver(job(n)));
  assert.equal(server.accepted.length, 12);
  const perConnection = new Map<number, number>();
  for (const mail of server.accepted) perConnection.set(mail.connection, (perConnection.get(mail.connection) ?? 0) + 1);
  assert.equal(Math.max(...perConnection.values()), 2, `messages per connection: ${[...perConnection.values()].join(", ")}`);
});

test("new connections per minute: once the minute's allowance is opened, the next connection waits", async () => {
  const server = await serve({});
  const { sites, lease } = nodeWith("one", server.port, { connectionsPerMinute: 2, messagesPerConnection: 1 }, makeOwner());
  // One message per connection: four messages need four connections; two may open this minute.
  const sending = deliverAll(sites, 0, 4);
  await eventually(() => server.accepted.length === 2, "two messages sent");
  await new Promise((resolve) => setTimeout(resolve, 2 * TTL));
  assert.equal(server.accepted.length, 2, "the other two wait for the next minute");
  assert.equal(server.connections(), 2);
  assert.equal(lease.state().opens, 0);
  assert.ok(lease.state().waitingConnections >= 1, "a connection waits for the allowance");
  void sending.catch(() => undefined); // deferred when the test's scopes close
});

/** Runs `body` on a TestClock: `lease` makes a lease in a scope closed afterwards, `advance` moves the clock. */
const onTestClock = async (
  body: (clock: { readonly lease: (options: LeaseOptions) => Promise<SiteLease>; readonly advance: (ms: number) => Promise<void> }) => Promise<void>,
) => {
  const runtime = ManagedRuntime.make(TestClock.layer());
  const scope = Scope.makeUnsafe();
  try {
    await body({
      lease: (options) => runtime.runPromise(makeSiteLease(options).pipe(Scope.provide(scope))),
      advance: (ms) => runtime.runPromise(TestClock.adjust(ms)),
    });
  } finally {
    await runtime.runPromise(Scope.close(scope, Exit.void));
    await runtime.dispose();
  }
};

test("TestClock: a lease in use is renewed every renewMs and holds; once its owner stops answering it lapses one TTL after the last grant, closing idle connections, and comes back when the owner answers", async () => {
  await onTestClock(async ({ lease: leaseOf, advance }) => {
    const RENEW_MS = TTL / 4;
    const ledger = new BudgetLedger(TTL);
    const asks: number[] = [];
    let answering = true;
    const ask = (request: LeaseAsk) =>
      Effect.gen(function* () {
        const now = yield* Clock.currentTimeMillis;
        asks.push(now);
        if (!answering) return yield* Effect.fail({ _tag: "RemoteUnavailable" as const });
        return ledger.grant(request, now, { alone: true }).grant;
      });
    const lease = await leaseOf({ budget: BUDGET, holder: "one", limits: { connections: 2 }, ask, renewMs: RENEW_MS });
    lease.attach(() => 1, 2); // one job waiting for this budget's sites

    await advance(RENEW_MS);
    assert.deepEqual(asks, [RENEW_MS], "the first ask, at the clock's first renewal");
    assert.ok((lease.state().granted ?? 0) > 0);
    const narrowed = lease.narrow(makeConnectionBudget(50));
    const release = await narrowed.acquire();
    let closed = false;
    narrowed.idle(() => {
      closed = true;
      release();
    });

    // Ten lease lifetimes: renewed every RENEW_MS, never lapsing.
    await advance(10 * TTL);
    assert.equal(asks.length, 1 + (10 * TTL) / RENEW_MS);
    assert.ok(asks.every((at, n) => at === (n + 1) * RENEW_MS), "one ask every renewMs");
    assert.equal(closed, false);
    assert.ok((lease.state().granted ?? 0) > 0);

    // The last grant was just now: the lease holds for one TTL more, then lapses.
    answering = false;
    await advance(TTL - 1);
    assert.equal(closed, false, "still within the last grant's lifetime");
    assert.ok((lease.state().granted ?? 0) > 0);
    await advance(1);
    assert.equal(closed, true, "the idle connection is closed when the lease lapses");
    assert.equal(lease.state().granted, 0);
    assert.equal(lease.state().open, 0);

    // Without a lease no connection opens; the next grant lets the waiting one in.
    let opened = false;
    void narrowed.acquire().then(() => (opened = true));
    await advance(TTL);
    assert.equal(opened, false);
    answering = true;
    await advance(RENEW_MS);
    await eventually(() => opened, "the waiting connection opens under the new grant");
    assert.ok((lease.state().granted ?? 0) > 0);
  });
});

test("TestClock: an ask granted whose answer is lost is sent again with its id, and the owner answers with the same grant", async () => {
  await onTestClock(async ({ lease: leaseOf, advance }) => {
    const RENEW_MS = TTL / 4;
    const ledger = new BudgetLedger(TTL);
    const asked: LeaseAsk[] = [];
    const ask = (request: LeaseAsk) =>
      Effect.gen(function* () {
        const now = yield* Clock.currentTimeMillis;
        asked.push(request);
        const grant = ledger.grant(request, now, { alone: true }).grant;
        // The first answer is lost on the way back: the owner granted and counted it.
        if (asked.length === 1) return yield* Effect.fail({ _tag: "RemoteUnavailable" as const });
        return grant;
      });
    const lease = await leaseOf({ budget: BUDGET, holder: "one", limits: { messagesPerHour: 100 }, ask, renewMs: RENEW_MS });
    lease.attach(() => 100, 1); // a hundred messages waiting for this budget's sites

    await advance(RENEW_MS);
    assert.equal(asked.length, 1);
    assert.equal(lease.state().messages, 0, "the grant never arrived");
    await advance(RENEW_MS);
    assert.equal(asked.length, 2);
    assert.equal(asked[1], asked[0], "the same ask, sent again");
    assert.equal(lease.state().messages, 100, "the hour's 100, granted once");
    // Renewed later: a new ask, and the hour has nothing more.
    await advance(RENEW_MS);
    assert.equal(asked.length, 3);
    assert.notEqual(asked[2]!.askId, asked[0]!.askId);
    assert.equal(asked[2]!.unusedMessages, 100, "what is left of the grant goes back");
    assert.equal(lease.state().messages, 100);
  });
});
