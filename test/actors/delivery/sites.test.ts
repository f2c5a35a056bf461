// Site actors and the SMTP client against scripted loopback SMTP servers: per-recipient
// outcomes, MX fallback, broken and stalled servers, required TLS, rate limits,
// connection reuse and limits, DSN parameters, 8-bit downgrade.
import { after, test } from "node:test";
import assert from "node:assert/strict";
import { performance } from "node:perf_hooks";
import { Effect, Exit, Scope } from "effect";
import { TestClock } from "effect/testing";
import { makeConnectionBudget, type ConnectionBudget } from "../../../actors/delivery/connections.ts";
import { makeClassifier } from "../../../actors/delivery/classify.ts";
import { dsnParamsOf } from "../../../actors/delivery/dsn.ts";
import { makeSites, type DeliveryJob, type SiteOptions } from "../../../actors/delivery/sites.ts";
import { NO_HOLDS, type ReputationHolds, type SourceHold } from "../../../actors/delivery/reputation-holds.ts";
import { makeSupervisor } from "../../../actors/runtime/supervisor.ts";
import { enhancedStatus, renderResult, statusOfResult } from "../../../protocol/delivery.ts";
import type { MailRoute } from "../../../protocol/route.ts";
import type { RecipientAttempt } from "../../../actors/delivery/attempt.ts";
import { SMTPServer } from "smtp-server";
import { startScriptedSmtp, type Script, type ScriptedServer } from "../../support/scripted-smtp.ts";

const servers: ScriptedServer[] = [];
const stops: Array<() => Promise<void>> = [];
after(async () => {
  await Promise.all(stops.map((stop) => stop()));
  await Promise.all(servers.map((s) => s.close()));
});

const serve = async (script: Script, port = 0, host = "127.0.0.1") => {
  const server = await startScriptedSmtp(script, port, host);
  servers.push(server);
  return server;
};

const options = (port: number, extra: Partial<SiteOptions> = {}): SiteOptions => ({
  heloName: "tern.test",
  port,
  connectTimeoutMs: 1_000,
  greetingTimeoutMs: 1_000,
  socketTimeoutMs: 2_000,
  messagesPerConnection: 100,
  maxRecipientsPerTransaction: 100,
  connectionsPerSite: 2,
  siteConnections: {},
  idleMs: 2_000,
  maxQueueWaitMs: 60_000,
  ...extra,
});

/** Sites in a scope of their own, closed (which stops them) when the tests are done. */
const sitesWith = (port: number, extra: Partial<SiteOptions>, budget: ConnectionBudget) => {
  const scope = Scope.makeUnsafe();
  const sites = Effect.runSync(makeSites(options(port, extra), budget, makeSupervisor()).pipe(Scope.provide(scope)));
  stops.push(() => Effect.runPromise(Scope.close(scope, Exit.void)));
  return sites;
};

const sitesFor = (port: number, extra: Partial<SiteOptions> = {}, maxConnections = 50) => sitesWith(port, extra, makeConnectionBudget(maxConnections));

/** Waits for a socket-level effect (a peer seeing a close), polling: this is I/O, not a schedule. */
const eventually = async (check: () => boolean, what: string, timeoutMs = 3_000) => {
  const deadline = performance.now() + timeoutMs;
  while (!check()) {
    if (performance.now() > deadline) assert.fail(`timed out waiting until ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
};

const route = (...hosts: Array<[string, string]>): MailRoute => ({
  domain: "remote.test",
  implicitMx: false,
  hosts: hosts.map(([name, address], n) => ({ name, preference: 10 * (n + 1), addresses: [address] })),
});

const job = (r: MailRoute, recipients: string[], extra: Partial<DeliveryJob> = {}): DeliveryJob => ({
  route: r,
  sender: "sender@origin.test",
  recipients,
  body: () => Buffer.from("From: sender@origin.test\r\nSubject: hi\r\n\r\nhello\r\n"),
  dsn: dsnParamsOf(undefined),
  tls: "opportunistic",
  ...extra,
});

const classify = makeClassifier();
const status = (r: RecipientAttempt) => statusOfResult(r.result);

test("5xx for one recipient and 2xx for another in the same transaction", async () => {
  const server = await serve({ rcpt: (to) => (to.startsWith("nobody@") ? "550 5.1.1 no such user here" : undefined) });
  const sites = sitesFor(server.port);
  const attempt = await Effect.runPromise(sites.deliver(job(route(["mx.remote.test", "127.0.0.1"]), ["nobody@remote.test", "fine@remote.test"])));
  const byRcpt = Object.fromEntries(attempt.results.map((r) => [r.recipient, r]));
  assert.equal(status(byRcpt["nobody@remote.test"]!), "failed");
  assert.deepEqual(byRcpt["nobody@remote.test"]!.result, { _tag: "Reply", code: 550, enhanced: "5.1.1", text: "no such user here" });
  assert.equal(classify(byRcpt["nobody@remote.test"]!.result), "bad-mailbox");
  assert.equal(status(byRcpt["fine@remote.test"]!), "delivered");
  assert.equal(server.finished.length, 1, "one transaction");
  assert.deepEqual(server.accepted[0]!.to.map((t) => t.address), ["fine@remote.test"]);
  assert.deepEqual(attempt.mx, { host: "mx.remote.test", ip: "127.0.0.1" });
});

test("the first MX refuses connections, the second takes the mail", async () => {
  const server = await serve({});
  const sites = sitesFor(server.port);
  // Nothing listens on 127.0.0.2 at that port: connection refused.
  const attempt = await Effect.runPromise(sites.deliver(job(route(["mx1.remote.test", "127.0.0.2"], ["mx2.remote.test", "127.0.0.1"]), ["a@remote.test"])));
  assert.equal(status(attempt.results[0]!), "delivered");
  assert.equal(attempt.mx?.host, "mx2.remote.test");
  assert.equal(server.accepted.length, 1);
});

test("a 4xx greeting sends delivery to the next MX; when every MX greets 4xx the mail is deferred, never bounced", async () => {
  const busy = await serve({ greeting: () => "421 4.3.2 busy, try another" }, 0, "127.0.0.3");
  const good = await serve({}, busy.port, "127.0.0.1");
  const sites = sitesFor(busy.port);
  const attempt = await Effect.runPromise(sites.deliver(job(route(["mx1.remote.test", "127.0.0.3"], ["mx2.remote.test", "127.0.0.1"]), ["a@remote.test"])));
  assert.equal(status(attempt.results[0]!), "delivered");
  assert.equal(attempt.mx?.host, "mx2.remote.test");
  assert.equal(busy.connections(), 1);
  assert.equal(good.accepted.length, 1);

  const alone = sitesFor(busy.port);
  const deferred = await Effect.runPromise(alone.deliver(job(route(["mx1.remote.test", "127.0.0.3"]), ["b@remote.test"])));
  assert.equal(status(deferred.results[0]!), "deferred");
  const refused = deferred.results[0]!.result;
  assert.equal(refused._tag, "ConnectionFailed");
  assert.equal(refused._tag === "ConnectionFailed" ? refused.reply?.code : undefined, 421, "the greeting's reply is kept");
  assert.equal(enhancedStatus(refused), "4.3.2");
  assert.equal(renderResult(refused), "4.3.2 connection failed: refused at the greeting; the host said: 421 4.3.2 busy, try another");
});

test("a connection dropped in the middle of DATA defers the message (never delivered, never failed); the next attempt delivers it once", async () => {
  const server = await serve({ duringData: (ctx) => (ctx.connection === 0 ? { afterBytes: 10, action: { close: true } } : undefined) });
  const sites = sitesFor(server.port);
  const body = () => Buffer.from(`Subject: big\r\n\r\n${"x".repeat(5_000)}\r\n`);
  const first = await Effect.runPromise(sites.deliver(job(route(["mx.remote.test", "127.0.0.1"]), ["a@remote.test"], { body })));
  assert.equal(status(first.results[0]!), "deferred");
  assert.equal(first.results[0]!.result._tag, "ConnectionFailed");
  assert.equal(server.accepted.length, 0);
  const second = await Effect.runPromise(sites.deliver(job(route(["mx.remote.test", "127.0.0.1"]), ["a@remote.test"], { body })));
  assert.equal(status(second.results[0]!), "delivered");
  assert.equal(server.accepted.length, 1);
});

test("a server that stops answering times out and the mail is deferred", async () => {
  const server = await serve({ mail: () => ({ stall: true }) });
  const sites = sitesFor(server.port, { socketTimeoutMs: 300 });
  const started = performance.now();
  const attempt = await Effect.runPromise(sites.deliver(job(route(["mx.remote.test", "127.0.0.1"]), ["a@remote.test"])));
  assert.equal(status(attempt.results[0]!), "deferred");
  assert.equal(attempt.results[0]!.result._tag, "Timeout");
  assert.ok(performance.now() - started < 5_000);
  const silent = await serve({ greeting: () => ({ stall: true }) });
  const greeting = await Effect.runPromise(sitesFor(silent.port, { greetingTimeoutMs: 300 }).deliver(job(route(["mx.remote.test", "127.0.0.1"]), ["a@remote.test"])));
  assert.equal(status(greeting.results[0]!), "deferred");
  assert.equal(greeting.results[0]!.result._tag, "Timeout");
});

test("TLS required but not offered: nothing is sent, the mail is deferred as a TLS problem", async () => {
  const server = await serve({ extensions: ["PIPELINING", "8BITMIME"] });
  const sites = sitesFor(server.port);
  const attempt = await Effect.runPromise(sites.deliver(job(route(["mx.remote.test", "127.0.0.1"]), ["a@remote.test"], { tls: "require" })));
  assert.equal(status(attempt.results[0]!), "deferred");
  assert.equal(attempt.results[0]!.result._tag, "TlsFailed");
  assert.equal(classify(attempt.results[0]!.result), "tls");
  assert.ok(!server.commands.some((c) => c.startsWith("MAIL")), "no MAIL FROM over plaintext");
});

test("TLS required and offered: the mail goes over STARTTLS; opportunistic TLS is used when offered too", async () => {
  const secure: boolean[] = [];
  // smtp-server offers STARTTLS with its built-in self-signed certificate (not verified: opportunistic, RFC 7435).
  const server = new SMTPServer({
    authOptional: true,
    logger: false,
    closeTimeout: 200,
    onData: (stream, session, callback) => {
      secure.push(session.secure);
      stream.resume();
      stream.on("end", () => callback());
    },
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  stops.push(() => new Promise<void>((resolve) => server.close(() => resolve())));
  const port = (server.server.address() as { port: number }).port;
  const sites = sitesFor(port);
  const r = route(["mx.remote.test", "127.0.0.1"]);
  const required = await Effect.runPromise(sites.deliver(job(r, ["a@remote.test"], { tls: "require" })));
  assert.equal(status(required.results[0]!), "delivered");
  const opportunistic = await Effect.runPromise(sitesFor(port).deliver(job(r, ["b@remote.test"])));
  assert.equal(status(opportunistic.results[0]!), "delivered");
  assert.deepEqual(secure, [true, true]);
});

test("a rate-limit reply defers and is classified as rate limited", async () => {
  const server = await serve({ mail: () => "451 4.7.1 Rate limit exceeded, slow down" });
  const sites = sitesFor(server.port);
  const attempt = await Effect.runPromise(sites.deliver(job(route(["mx.remote.test", "127.0.0.1"]), ["a@remote.test", "b@remote.test"])));
  assert.deepEqual(attempt.results.map((r) => status(r)), ["deferred", "deferred"]);
  assert.equal(classify(attempt.results[0]!.result), "rate-limited");
});

test("connections are reused across messages, up to messagesPerConnection; RSET only after a refused transaction", async () => {
  const server = await serve({ rcpt: (to) => (to.startsWith("nobody@") ? "550 5.1.1 no such user" : undefined) });
  const sites = sitesFor(server.port, { connectionsPerSite: 1, messagesPerConnection: 3 });
  const r = route(["mx.remote.test", "127.0.0.1"]);
  const statuses = [];
  for (const rcpt of ["r1", "nobody", "r2", "r3"]) statuses.push(status((await Effect.runPromise(sites.deliver(job(r, [`${rcpt}@remote.test`])))).results[0]!));
  assert.deepEqual(statuses, ["delivered", "failed", "delivered", "delivered"]);
  assert.equal(server.accepted.length, 3);
  assert.equal(server.connections(), 2, "three messages on the first connection, the fourth on a new one");
  assert.deepEqual(server.commands.filter((c) => /^(MAIL|RSET)/.test(c)).map((c) => c.slice(0, 4)), ["MAIL", "MAIL", "RSET", "MAIL", "MAIL"]);
});

test("per-site and per-node connection limits hold with many messages at once", async () => {
  const server = await serve({ data: () => undefined });
  const sites = sitesFor(server.port, { connectionsPerSite: 3 });
  const r = route(["mx.remote.test", "127.0.0.1"]);
  const attempts = await Effect.runPromise(Effect.all(Array.from({ length: 30 }, (_, n) => sites.deliver(job(r, [`r${n}@remote.test`]))), { concurrency: "unbounded" }));
  assert.ok(attempts.every((a) => status(a.results[0]!) === "delivered"));
  assert.ok(server.peakConnections() <= 3, `at most 3 connections, saw ${server.peakConnections()}`);

  const other = await serve({});
  const capped = sitesFor(other.port, { connectionsPerSite: 10 }, 2);
  const more = await Effect.runPromise(Effect.all(Array.from({ length: 20 }, (_, n) => capped.deliver(job(r, [`s${n}@remote.test`]))), { concurrency: "unbounded" }));
  assert.ok(more.every((a) => status(a.results[0]!) === "delivered"));
  assert.ok(other.peakConnections() <= 2, `node limit of 2 connections, saw ${other.peakConnections()}`);
});

test("siteConnections overrides the limit for sites with a matching MX host", async () => {
  const server = await serve({});
  const sites = sitesFor(server.port, { connectionsPerSite: 5, siteConnections: { ".limited.test": 1 } });
  const r = route(["mx.limited.test", "127.0.0.1"]);
  await Effect.runPromise(Effect.all(Array.from({ length: 8 }, (_, n) => sites.deliver(job(r, [`r${n}@remote.test`]))), { concurrency: "unbounded" }));
  assert.equal(server.peakConnections(), 1);
  assert.equal(server.accepted.length, 8);
});

test("ENVID, RET, NOTIFY and ORCPT go to a host that speaks DSN; recipients with different NOTIFY go in separate transactions", async () => {
  const server = await serve({});
  const sites = sitesFor(server.port);
  const dsn = dsnParamsOf({
    // As stored: decoded from xtext (smtp-server decodes it); encoded again on the wire.
    dsn: { ret: "HDRS", envid: "env+1" },
    recipientDsn: { "a@remote.test": { notify: ["SUCCESS", "FAILURE"], orcpt: "rfc822;orig+a@remote.test" }, "b@remote.test": { notify: ["NEVER"] } },
  });
  const attempt = await Effect.runPromise(sites.deliver(job(route(["mx.remote.test", "127.0.0.1"]), ["a@remote.test", "b@remote.test", "c@remote.test"], { dsn })));
  assert.ok(attempt.results.every((r) => status(r) === "delivered"));
  assert.equal(attempt.peerDsn, true);
  assert.equal(server.accepted.length, 3);
  const a = server.accepted.find((t) => t.to[0]!.address === "a@remote.test")!;
  assert.match(a.mailParams, /RET=HDRS/);
  assert.match(a.mailParams, /ENVID=env\+2B1/);
  assert.match(a.to[0]!.params, /NOTIFY=SUCCESS,FAILURE/);
  assert.match(a.to[0]!.params, /ORCPT=rfc822;orig\+2Ba@remote\.test/);
  const b = server.accepted.find((t) => t.to[0]!.address === "b@remote.test")!;
  assert.match(b.to[0]!.params, /NOTIFY=NEVER/);
  const c = server.accepted.find((t) => t.to[0]!.address === "c@remote.test")!;
  assert.doesNotMatch(c.to[0]!.params, /NOTIFY/);
});

test("8-bit mail to a host without 8BITMIME: a single-part message is sent as quoted-printable, a multipart one fails with 5.6.3", async () => {
  const server = await serve({ extensions: ["PIPELINING"] });
  const sites = sitesFor(server.port);
  const r = route(["mx.remote.test", "127.0.0.1"]);
  const text = () => Buffer.from("Subject: caf\r\nContent-Type: text/plain; charset=utf-8\r\n\r\ncafé\r\n", "utf8");
  const sent = await Effect.runPromise(sites.deliver(job(r, ["a@remote.test"], { body: text })));
  assert.equal(status(sent.results[0]!), "delivered");
  const body = server.accepted[0]!.body.toString("latin1");
  assert.match(body, /Content-Transfer-Encoding: quoted-printable/);
  assert.match(body, /caf=C3=A9/);
  assert.ok(![...server.accepted[0]!.body].some((byte) => byte >= 0x80), "7-bit on the wire");

  const multipart = () => Buffer.from('Subject: m\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n\r\ncafé\r\n--b--\r\n', "utf8");
  const refused = await Effect.runPromise(sites.deliver(job(r, ["b@remote.test"], { body: multipart })));
  assert.equal(status(refused.results[0]!), "failed");
  assert.equal(refused.results[0]!.result._tag, "ConversionFailed");
  assert.equal(enhancedStatus(refused.results[0]!.result), "5.6.3");
  assert.equal(server.accepted.length, 1);
});

test("552 to RCPT (too many recipients) defers as 452, as RFC 5321 asks; 552 to DATA still fails", async () => {
  const server = await serve({
    // A host that takes one recipient per transaction, and has no room for mail to "big@".
    rcpt: (to) => (to.startsWith("a@") || to.startsWith("big@") ? undefined : "552 5.5.3 Too many recipients"),
    data: (mail) => (mail.to.some((t) => t.address.startsWith("big@")) ? "552 5.3.4 Message too big for system" : undefined),
  });
  const sites = sitesFor(server.port);
  const r = route(["mx.remote.test", "127.0.0.1"]);
  const attempt = await Effect.runPromise(sites.deliver(job(r, ["a@remote.test", "b@remote.test", "c@remote.test"])));
  const byRcpt = Object.fromEntries(attempt.results.map((one) => [one.recipient, one.result]));
  assert.equal(statusOfResult(byRcpt["a@remote.test"]!), "delivered");
  for (const over of ["b@remote.test", "c@remote.test"]) {
    assert.equal(statusOfResult(byRcpt[over]!), "deferred", over);
    assert.deepEqual(byRcpt[over], { _tag: "Reply", code: 452, enhanced: "4.5.3", text: "Too many recipients" });
  }
  const big = await Effect.runPromise(sites.deliver(job(r, ["big@remote.test"])));
  assert.equal(status(big.results[0]!), "failed", "552 to DATA: the message is refused for good");
  assert.equal(big.results[0]!.result._tag === "Reply" && big.results[0]!.result.code, 552);
});

test("a refusal at DATA is the outcome of the recipients the host took at RCPT; one it refused at RCPT keeps its own reply", async () => {
  const server = await serve({
    rcpt: (to) => (to.startsWith("busy@") ? "452 4.2.1 Mailbox busy, try later" : to.startsWith("nobody@") ? "550 5.1.1 No such user" : undefined),
    data: () => "554 5.7.1 Message refused",
  });
  const sites = sitesFor(server.port);
  const attempt = await Effect.runPromise(sites.deliver(job(route(["mx.remote.test", "127.0.0.1"]), ["a@remote.test", "busy@remote.test", "nobody@remote.test"])));
  const byRcpt = Object.fromEntries(attempt.results.map((one) => [one.recipient, one.result]));
  assert.deepEqual(byRcpt["a@remote.test"], { _tag: "Reply", code: 554, enhanced: "5.7.1", text: "Message refused" });
  assert.deepEqual(byRcpt["busy@remote.test"], { _tag: "Reply", code: 452, enhanced: "4.2.1", text: "Mailbox busy, try later" });
  assert.equal(statusOfResult(byRcpt["busy@remote.test"]!), "deferred", "never part of the refused message");
  assert.deepEqual(byRcpt["nobody@remote.test"], { _tag: "Reply", code: 550, enhanced: "5.1.1", text: "No such user" });
});

test("a body gone from the spool when the host is ready: no transaction, the recipient deferred, the connection kept", async () => {
  const server = await serve({});
  const sites = sitesFor(server.port);
  const r = route(["mx.remote.test", "127.0.0.1"]);
  const gone = await Effect.runPromise(sites.deliver(job(r, ["a@remote.test"], { body: () => undefined })));
  assert.equal(status(gone.results[0]!), "deferred");
  assert.deepEqual(gone.results[0]!.result, { _tag: "Internal", detail: "the message body is gone from the spool" });
  assert.equal(server.accepted.length, 0, "no message, not even an empty one");
  const next = await Effect.runPromise(sites.deliver(job(r, ["b@remote.test"])));
  assert.equal(status(next.results[0]!), "delivered");
  assert.equal(server.connections(), 1, "the same connection carried the next message");
});

/** A job whose body cannot be produced: the site handler dies in the middle of sending it. */
const crashing = (r: MailRoute) =>
  job(r, ["boom@remote.test"], {
    body: () => {
      throw new Error("body vanished");
    },
  });

test("a site worker that crashes while holding a connection closes it; its successor opens a fresh one", async () => {
  const server = await serve({});
  const budget = makeConnectionBudget(50);
  // A long idle time: only the crash can close the connection within the test.
  const sites = sitesWith(server.port, { connectionsPerSite: 1, idleMs: 600_000 }, budget);
  const r = route(["mx.remote.test", "127.0.0.1"]);
  const first = await Effect.runPromise(sites.deliver(job(r, ["a@remote.test"])));
  assert.equal(status(first.results[0]!), "delivered");
  await eventually(() => server.open() === 1, "the peer sees one open connection");
  assert.equal(budget.open(), 1);

  const crashed = await Effect.runPromise(sites.deliver(crashing(r)));
  assert.equal(status(crashed.results[0]!), "deferred", "a crash defers, never bounces");
  assert.match(renderResult(crashed.results[0]!.result), /ActorCrashed/);
  await eventually(() => server.open() === 0, "the crashed worker's connection is closed at the peer");
  await eventually(() => budget.open() === 0, "its permit is back");

  const after = await Effect.runPromise(sites.deliver(job(r, ["b@remote.test"])));
  assert.equal(status(after.results[0]!), "delivered");
  assert.equal(server.connections(), 2, "the successor opened a fresh connection");
  assert.equal(server.open(), 1);
  assert.deepEqual(server.accepted.map((t) => t.to[0]!.address), ["a@remote.test", "b@remote.test"]);
});

test("a site that spent its restart budget defers at once, is reported escalated, and is rebuilt after the slower delay", () =>
  Effect.runPromise(
    Effect.scoped(
      Effect.gen(function* () {
        const server = yield* Effect.promise(() => serve({}));
        const supervisor = makeSupervisor();
        const restart = { baseDelayMs: 10, maxDelayMs: 10, maxRestarts: 0, windowMs: 60_000, rebuildBaseDelayMs: 30_000, rebuildMaxDelayMs: 120_000 };
        const sites = yield* makeSites(options(server.port, { connectionsPerSite: 1, restart }), makeConnectionBudget(50), supervisor);
        const r = route(["mx.remote.test", "127.0.0.1"]);

        const crashed = yield* sites.deliver(crashing(r));
        assert.equal(status(crashed.results[0]!), "deferred");
        yield* TestClock.adjust(1); // lets the actor escalate
        const escalation = supervisor.escalated().get("delivery/mx.remote.test");
        assert.ok(escalation, "the supervisor reports the site escalated");

        const refused = yield* sites.deliver(job(r, ["a@remote.test"]));
        assert.equal(status(refused.results[0]!), "deferred", "the job defers instead of waiting behind a broken site");
        assert.match(renderResult(refused.results[0]!.result), /ActorEscalated/);
        assert.equal(server.accepted.length, 0);

        yield* TestClock.setTime(escalation.nextRebuildAt);
        const served = yield* sites.deliver(job(r, ["a@remote.test"]));
        assert.equal(status(served.results[0]!), "delivered", "rebuilt, the site serves again");
        assert.equal(supervisor.escalated().size, 0, "and is no longer reported escalated");
        assert.equal(server.accepted.length, 1);
      }),
    ).pipe(Effect.provide(TestClock.layer())),
  ));

test("closing the Sites scope lets in-flight deliveries finish, then closes every connection", async () => {
  const server = await serve({ dataReplyDelayMs: 300 });
  const scope = Scope.makeUnsafe();
  const budget = makeConnectionBudget(50);
  const sites = Effect.runSync(makeSites(options(server.port, { connectionsPerSite: 2, idleMs: 600_000, stopGraceMs: 5_000 }), budget, makeSupervisor()).pipe(Scope.provide(scope)));
  const r = route(["mx.remote.test", "127.0.0.1"]);
  const inFlight = Effect.runPromise(Effect.all([sites.deliver(job(r, ["a@remote.test"])), sites.deliver(job(r, ["b@remote.test"]))], { concurrency: "unbounded" }));
  await eventually(() => server.commands.filter((c) => c === "DATA").length === 2, "both messages are in DATA");
  await Effect.runPromise(Scope.close(scope, Exit.void));
  const attempts = await inFlight;
  assert.deepEqual(attempts.map((a) => status(a.results[0]!)), ["delivered", "delivered"]);
  await eventually(() => server.open() === 0, "every connection is closed");
  // The server counts a connection closed at QUIT; Tern gives its permit back once its own
  // socket has closed, which may be a moment later.
  await eventually(() => budget.open() === 0, "every connection permit is back");
  const late = await Effect.runPromise(sites.deliver(job(r, ["c@remote.test"])));
  assert.equal(status(late.results[0]!), "deferred", "after the stop, jobs defer");
});

test("an unused connection is closed after idleMs, and an unused site is stopped by the sweep (on the clock)", () =>
  Effect.runPromise(
    Effect.scoped(
      Effect.gen(function* () {
        const server = yield* Effect.promise(() => serve({}));
        const budget = makeConnectionBudget(50);
        const sites = yield* makeSites(options(server.port, { idleMs: 30_000 }), budget, makeSupervisor());
        const r = route(["mx.remote.test", "127.0.0.1"]);
        assert.equal(status((yield* sites.deliver(job(r, ["a@remote.test"]))).results[0]!), "delivered");
        assert.deepEqual(sites.list(), [{ site: "mx.remote.test", connections: 1, queued: 0 }]);
        yield* TestClock.adjust(29_000);
        assert.equal(sites.list()[0]!.connections, 1, "still open before idleMs");
        yield* TestClock.adjust(2_000);
        assert.equal(sites.list()[0]!.connections, 0, "closed after idleMs");
        yield* Effect.promise(() => eventually(() => server.open() === 0 && budget.open() === 0, "the peer sees the idle connection closed"));
        yield* TestClock.adjust(6 * 60_000);
        assert.deepEqual(sites.list(), [], "the idle site was stopped");
      }),
    ).pipe(Effect.provide(TestClock.layer())),
  ));

test("a source address a reputation threshold holds: paused, its jobs come back unsent on every site; slowed, its sites use fewer connections; other addresses go on", async () => {
  let hold: SourceHold | undefined;
  const listeners = new Set<(key: string) => void>();
  const holds: ReputationHolds = {
    ...NO_HOLDS,
    source: (address) => (address === "127.0.0.1" ? hold : undefined),
    onSourceChange: (listener) => (listeners.add(listener), () => void listeners.delete(listener)),
  };
  const change = (next: SourceHold | undefined) => {
    hold = next;
    for (const listener of listeners) listener("127.0.0.1");
  };
  const server = await serve({});
  const sites = sitesFor(server.port, { connectionsPerSite: 4, holds, throttle: { match: () => undefined, policy: { recoveryMs: 60_000, gapMs: 10 } } });
  const A = { address: "127.0.0.1", ehlo: "a.tern.test", weight: 1 };
  const B = { address: "127.0.0.2", ehlo: "b.tern.test", weight: 1 };
  const remote = route(["mx.remote.test", "127.0.0.1"]);
  const from = (source: typeof A, n: number) => Effect.runPromise(sites.deliver(job(remote, [`r${n}@remote.test`], { source })));

  assert.equal(statusOfResult((await from(A, 0)).results[0]!.result), "delivered");
  const until = Date.now() + 3_600_000;
  change({ pausedUntil: until, level: 0, rule: "ip-bounces" });
  const mails = server.finished.length;
  const held = await from(A, 1);
  assert.deepEqual(held.results[0]!.result, { _tag: "ReputationHold", dimension: "source", key: "127.0.0.1", rule: "ip-bounces", action: "pause", until });
  assert.equal(held.source, "127.0.0.1");
  assert.equal(statusOfResult(held.results[0]!.result), "deferred", "held, never bounced");
  const otherSite = await Effect.runPromise(sites.deliver(job({ ...route(["mx.other.test", "127.0.0.1"]), domain: "other.test" }, ["x@other.test"], { source: A })));
  assert.equal(otherSite.results[0]!.result._tag, "ReputationHold", "every site of the address");
  assert.equal(server.finished.length, mails, "nothing was sent from the paused address");
  assert.equal(statusOfResult((await from(B, 2)).results[0]!.result), "delivered", "another address goes on");

  // Slowed to level 2: a quarter of the site's 4 connections.
  change({ pausedUntil: 0, level: 2, rule: "ip-bounces" });
  const slowed = await Promise.all(Array.from({ length: 6 }, (_, n) => from(A, 10 + n)));
  assert.ok(slowed.every((a) => statusOfResult(a.results[0]!.result) === "delivered"));
  assert.equal(server.peakConnections("127.0.0.1"), 1, "one connection at level 2");

  change(undefined);
  const free = await Promise.all(Array.from({ length: 8 }, (_, n) => from(A, 20 + n)));
  assert.ok(free.every((a) => statusOfResult(a.results[0]!.result) === "delivered"));
});
