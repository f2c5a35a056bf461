// The POP3 session's time-dependent parts under TestClock, no sleeps: the pause before a
// failed login is answered, and the maildrop lock's lease kept alive by renewal while the
// client is idle (and lost, ending the session, when it is not renewed). The mailbox side
// is the real local mailbox actors over LMDB.
import { after, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Effect, Exit, Fiber, ManagedRuntime, Scope } from "effect";
import { TestClock } from "effect/testing";
import { open } from "lmdb";
import { makeLocalMailboxes, type LocalMailboxes } from "../../../actors/mailbox/actor.ts";
import type { MailboxRouter } from "../../../actors/mailbox/router.ts";
import { openMailboxStore } from "../../../actors/mailbox/store.ts";
import { makeMaildropAccess } from "../../../actors/retriever/access.ts";
import { makeLoginAccounts, makeLoginThrottle } from "../../../actors/users/login-throttle.ts";
import type { MaildropAccess } from "../../../actors/retriever/maildrop.ts";
import {
  answerLine,
  initialState,
  keepLockAlive,
  type ConnectionView,
  type Outcome,
  type SessionConfig,
  type SessionState,
  type TransactionState,
} from "../../../actors/retriever/pop3-session.ts";
import { makeSupervisor } from "../../../actors/runtime/supervisor.ts";

const LEASE_MS = 30_000;
const FAILURE_DELAY_MS = 1_000;

const runtime = ManagedRuntime.make(TestClock.layer());
after(() => runtime.dispose());
const run = <A, E>(effect: Effect.Effect<A, E>) => runtime.runPromise(effect);
const advance = (ms: number) => run(TestClock.adjust(ms));

/** The router's shape over this node's mailboxes only (every mailbox is local here). */
const localRouter = (local: LocalMailboxes): MailboxRouter => ({
  deliver: (user, entryId, body) => Effect.map(local.deliver({ user, entryId }, body), (reply) => reply.value.uid),
  call: (op, request, attachment) => (local[op] as (request: unknown, attachment?: Uint8Array) => Effect.Effect<never>)(request, attachment),
  serve: () => Effect.void,
});

const users = { verify: async (login: string, password: string) => (password === "secret" ? login : undefined) };

const connection = (conn: number): ConnectionView => ({
  conn,
  remoteAddress: "127.0.0.1",
  secure: () => false,
  tlsAvailable: false,
  plaintextLoginAllowed: true,
  left: Effect.never,
  log: () => {},
});

interface Harness {
  readonly access: MaildropAccess;
  readonly config: SessionConfig;
}

const withSession = async (body: (harness: Harness) => Promise<void>) => {
  const dir = await mkdtemp(join(tmpdir(), "tern-pop3-session-"));
  const root = open({ path: join(dir, "db") });
  const scope = Scope.makeUnsafe();
  try {
    const local = await run(
      makeLocalMailboxes({
        store: openMailboxStore(root),
        supervisor: makeSupervisor(),
        knows: () => true,
        quotaOf: () => undefined,
        idleMs: 600_000,
        askTimeoutMs: 5_000,
        stopGraceMs: 0,
      }).pipe(Scope.provide(scope)),
    );
    await run(local.deliver({ user: "alice@x", entryId: "E1" }, Buffer.from("Subject: hi\r\n\r\nbody\r\n")));
    const access = makeMaildropAccess(users as never, localRouter(local), { leaseMs: LEASE_MS });
    const config: SessionConfig = {
      hostname: "pop.test",
      access,
      throttle: makeLoginThrottle(await run(makeLoginAccounts(() => undefined))),
      failureDelayMs: FAILURE_DELAY_MS,
      maxFailuresPerConnection: 3,
      holderPrefix: "n1/pop3",
    };
    await body({ access, config });
  } finally {
    await run(Scope.close(scope, Exit.void));
    await root.close();
    await rm(dir, { recursive: true, force: true });
  }
};

/** Answers `lines` one after another, as the server would, and returns the last outcome and state. */
const converse = async (config: SessionConfig, view: ConnectionView, lines: ReadonlyArray<string>, from: SessionState = initialState) => {
  let state = from;
  let outcome: Outcome | undefined;
  for (const line of lines) {
    outcome = await run(answerLine(state, line, config, view));
    state = outcome.next ?? state;
  }
  return { outcome: outcome!, state };
};

const logIn = async (config: SessionConfig, conn: number): Promise<TransactionState> => {
  const { outcome, state } = await converse(config, connection(conn), ["USER alice@x", "PASS secret"]);
  assert.match(outcome.reply.text, /^\+OK maildrop has 1 messages/);
  assert.equal(state.phase, "transaction");
  return state as TransactionState;
};

test("a failed login is answered only after the configured pause", () =>
  withSession(async ({ config }) => {
    const { state } = await converse(config, connection(1), ["USER alice@x"]);
    const answering = runtime.runFork(answerLine(state, "PASS wrong", config, connection(1)));
    await advance(FAILURE_DELAY_MS - 1);
    assert.equal(answering.pollUnsafe(), undefined, "not answered before the pause is over");
    await advance(1);
    const outcome = await run(Fiber.join(answering));
    assert.equal(outcome.reply.text, "-ERR [AUTH] invalid user name or password");
  }));

test("an idle session that renews keeps its lock far past one lease; another session stays out", () =>
  withSession(async ({ config }) => {
    const state = await logIn(config, 1);
    const renewing = runtime.runFork(keepLockAlive(state, connection(1)));
    for (let n = 0; n < 6; n++) await advance(LEASE_MS / 2); // three leases long, no command from the client
    const second = await converse(config, connection(2), ["USER alice@x", "PASS secret"]);
    assert.equal(second.outcome.reply.text, "-ERR [IN-USE] maildrop already locked");
    assert.equal(state.lockLost, false);
    await run(Fiber.interrupt(renewing));

    // The session still works, and its commit releases the lock.
    const { outcome } = await converse(config, connection(1), ["STAT", "QUIT"], state);
    assert.match(outcome.reply.text, /^\+OK pop\.test POP3 signing off/);
    await logIn(config, 3);
  }));

test("a lock that is not renewed expires: another session takes it, and the first one learns so and ends", () =>
  withSession(async ({ config }) => {
    const state = await logIn(config, 1);
    await advance(LEASE_MS - 1);
    assert.equal((await converse(config, connection(2), ["USER alice@x", "PASS secret"])).outcome.reply.text, "-ERR [IN-USE] maildrop already locked");
    await advance(1);
    await logIn(config, 2); // the lease ran out: the maildrop is the second session's now

    // The first session's next renewal finds the lock gone; its next command ends it, changing nothing.
    const renewing = runtime.runFork(keepLockAlive(state, connection(1)));
    await advance(state.maildrop.renewEveryMs);
    await run(Fiber.join(renewing));
    assert.equal(state.lockLost, true);
    const { outcome } = await converse(config, connection(1), ["DELE 1"], state);
    assert.match(outcome.reply.text, /^-ERR \[SYS\/TEMP\] maildrop lock lost/);
    assert.equal(outcome.reply.close, true);
  }));
