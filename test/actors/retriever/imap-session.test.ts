// One IMAP session against an in-memory mailbox and a connection whose socket the test
// controls: what the session does while the client reads slowly, after the client has
// gone, when change notices arrive, with \Recent messages, and when its selected folder
// is made anew. The wire is tested in test/e2e/imap*.test.ts.
import { test } from "node:test";
import assert from "node:assert/strict";
import { Clock, Context, Effect, Fiber, ManagedRuntime } from "effect";
import { TestClock } from "effect/testing";
import { makeImapSession, type ImapSession, type ImapSessionConfig } from "../../../actors/retriever/imap-session.ts";
import type { ImapAccess } from "../../../actors/retriever/imap-access.ts";
import { makeMimeCache } from "../../../actors/retriever/imap-mime.ts";
import { loginAccountsOn, makeLoginThrottle } from "../../../actors/users/login-throttle.ts";
import { parseCommand } from "../../../protocol/imap/parse.ts";
import { UidValidityChanged, type MessageInfo } from "../../../protocol/mailbox.ts";

interface Harness {
  readonly session: ImapSession;
  readonly written: string[];
  readonly calls: string[];
  /** The socket's room: while closed, `writable` waits; `gone` makes it answer false. */
  readonly socket: { full: boolean; gone: boolean; release: () => void };
  /** The change notice callbacks subscribed and not yet unsubscribed. */
  readonly watchers: Set<() => void>;
  readonly messages: MessageInfo[];
  /** The folder as the owner has it: its UIDVALIDITY, and the first UID no session claimed as \Recent. */
  readonly folderState: { uidValidity: number; recentFrom: number };
  /** How many times the session asked the connection to close. */
  readonly closed: boolean[];
  readonly run: (line: string) => Promise<string>;
}

const body = (n: number) => Buffer.from(`Subject: m${n}\r\n\r\n${"x".repeat(1_000)}\r\n`);

/**
 * `options.viewDelayMs` is read at each call, so a test may change it between commands;
 * `fork` is the server's (by default the plain runtime's, with the real clock).
 */
const harness = (count: number, options: { viewDelayMs?: number; fork?: ImapSessionConfig["fork"]; failureDelayMs?: number } = {}): Harness => {
  const written: string[] = [];
  const calls: string[] = [];
  const watchers = new Set<() => void>();
  const messages: MessageInfo[] = Array.from({ length: count }, (_, index) => ({
    uid: index + 1, size: body(index + 1).length, internalDate: 1_700_000_000_000, flags: [], body: `h${index + 1}`, modSeq: 1,
  }));
  let waiting: Array<(ok: boolean) => void> = [];
  const socket = {
    full: false,
    gone: false,
    release: () => {
      socket.full = false;
      const now = waiting;
      waiting = [];
      now.forEach((resolve) => resolve(!socket.gone));
    },
  };
  const closed: boolean[] = [];
  // Nothing claimed yet: every message starts \Recent to the first SELECT.
  const folderState = { uidValidity: 7, recentFrom: 1 };
  const uidNext = () => (messages.length > 0 ? messages[messages.length - 1]!.uid + 1 : 1);
  const folder = () => ({ name: "INBOX", uidValidity: folderState.uidValidity, uidNext: uidNext(), messages: messages.length, bytes: 0, unseen: 0, highestModSeq: 1 });
  const access: ImapAccess = {
    authenticate: (login, password) => Effect.succeed(login === "u" && password === "pw" ? "u" : null),
    call: ((op: string, request: { uid?: number; uidValidity?: number; claimRecent?: boolean }) =>
      Effect.gen(function* () {
        calls.push(op);
        if (request.uidValidity !== undefined && request.uidValidity !== folderState.uidValidity)
          return yield* new UidValidityChanged({ user: "u", folder: "INBOX", uidValidity: folderState.uidValidity });
        switch (op) {
          case "view": {
            if (options.viewDelayMs) yield* Effect.sleep(options.viewDelayMs).pipe(Effect.onInterrupt(() => Effect.sync(() => calls.push("view-interrupted"))));
            const recent = { from: folderState.recentFrom, to: uidNext() };
            if (request.claimRecent) folderState.recentFrom = uidNext();
            return { value: { folder: folder(), messages: messages.map((m) => ({ ...m })), recent } };
          }
          case "folders":
            return { value: { folders: [folder()] } };
          case "body":
            return { value: { size: 0 }, attachment: body(request.uid!) };
          case "flags": {
            const { uids, flags } = request as unknown as { uids: number[]; flags: string[] };
            messages.forEach((message, index) => {
              if (uids.includes(message.uid)) messages[index] = { ...message, flags: [...new Set([...message.flags, ...flags])].sort() };
            });
            return { value: { messages: messages.filter((m) => uids.includes(m.uid)).map(({ uid, flags: now }) => ({ uid, flags: now })) } };
          }
          default:
            return { value: {} };
        }
      })) as unknown as ImapAccess["call"],
    watch: (_user, onChange) => {
      watchers.add(onChange);
      return () => watchers.delete(onChange);
    },
  };
  const session = makeImapSession(
    {
      hostname: "test",
      access,
      throttle: makeLoginThrottle(loginAccountsOn(Context.get(Context.empty(), Clock.Clock), () => undefined)),
      failureDelayMs: options.failureDelayMs ?? 0,
      maxFailuresPerConnection: 3,
      mimeTree: makeMimeCache(100),
      fork: options.fork ?? ((effect) => Effect.runFork(effect)),
    },
    {
      remoteAddress: "127.0.0.1",
      secure: () => false,
      tlsAvailable: false,
      plaintextLoginAllowed: true,
      left: Effect.never,
      write: (data) => void written.push(data.toString()),
      writable: Effect.promise(
        () => new Promise<boolean>((resolve) => (socket.gone ? resolve(false) : socket.full ? waiting.push(resolve) : resolve(true))),
      ),
      close: () => void closed.push(true),
      log: () => undefined,
    },
  );
  const run = async (line: string) => {
    await Effect.runPromise(session.handle(parseCommand(Buffer.from(line))));
    return written.join("");
  };
  return { session, written, calls, socket, watchers, messages, folderState, closed, run };
};

const loggedInAndSelected = async (h: Harness) => {
  await h.run("a LOGIN u pw");
  await h.run("b SELECT INBOX");
  h.calls.length = 0;
  h.written.length = 0;
};

test("FETCH waits for a slow reader: no body is read while the socket is full", async () => {
  const h = harness(50);
  await loggedInAndSelected(h);
  h.socket.full = true;
  const fetching = h.run("c FETCH 1:* BODY.PEEK[]");
  await new Promise((resolve) => setTimeout(resolve, 50));
  assert.equal(h.calls.filter((op) => op === "body").length, 1, "one message read and written, then it waits");
  assert.equal(h.written.filter((line) => line.includes(" FETCH (")).length, 1);
  // The reader catches up: each write may fill the socket again; here it does not.
  h.socket.release();
  const out = await fetching;
  assert.equal(h.calls.filter((op) => op === "body").length, 50);
  assert.match(out, /c OK FETCH completed\r\n$/);
});

test("FETCH stops once the client has gone", async () => {
  const h = harness(50);
  await loggedInAndSelected(h);
  h.socket.full = true;
  const fetching = h.run("c FETCH 1:* BODY.PEEK[]");
  await new Promise((resolve) => setTimeout(resolve, 20));
  h.socket.gone = true;
  h.socket.release();
  const out = await fetching;
  assert.equal(h.calls.filter((op) => op === "body").length, 1);
  assert.doesNotMatch(out, /c OK/);
});

test("a command still running when the connection ends does not revive the session or leave a change subscription", async () => {
  const h = harness(3, { viewDelayMs: 50 });
  await h.run("a LOGIN u pw");
  assert.equal(h.watchers.size, 1);
  const selecting = h.run("b SELECT INBOX");
  await new Promise((resolve) => setTimeout(resolve, 10));
  h.session.end();
  assert.equal(h.watchers.size, 0);
  await selecting;
  assert.equal(h.session.state().phase, "logout");
  assert.equal(h.watchers.size, 0, "no subscription left behind");
});

test("IDLE: a burst of change notices makes one resync at a time, not one each, and the last change is reported", async () => {
  const h = harness(3, { viewDelayMs: 20 });
  await loggedInAndSelected(h);
  await h.run("c IDLE");
  h.calls.length = 0;
  for (let n = 0; n < 50; n++) {
    if (n === 49) h.messages.push({ uid: 4, size: 10, internalDate: 0, flags: [], body: "h4", modSeq: 2 });
    h.watchers.forEach((notify) => notify());
  }
  await new Promise((resolve) => setTimeout(resolve, 200));
  const views = h.calls.filter((op) => op === "view").length;
  assert.ok(views >= 1 && views <= 2, `${views} resyncs for 50 notices`);
  assert.match(h.written.join(""), /\* 4 EXISTS\r\n/);
  await Effect.runPromise(h.session.idleLine("DONE"));
  assert.match(h.written.join(""), /c OK IDLE terminated\r\n$/);
});

test("\\Recent: the first SELECT has the new messages as recent (FETCH FLAGS, SEARCH RECENT/NEW/OLD); the next SELECT has none, EXAMINE takes none", async () => {
  const h = harness(3);
  await h.run("a LOGIN u pw");
  assert.match(await h.run("b SELECT INBOX"), /\* 3 EXISTS\r\n\* 3 RECENT\r\n/);
  h.written.length = 0;
  assert.match(await h.run("c FETCH 1 FLAGS"), /\* 1 FETCH \(FLAGS \(\\Recent\)\)\r\n/);
  h.written.length = 0;
  assert.match(await h.run("d SEARCH RECENT"), /\* SEARCH 1 2 3\r\n/);
  h.written.length = 0;
  await h.run("e STORE 2 +FLAGS (\\Seen)");
  assert.match(h.written.join(""), /\* 2 FETCH \(FLAGS \(\\Seen \\Recent\)\)\r\n/, "\\Recent stays while the session lasts");
  h.written.length = 0;
  assert.match(await h.run("f SEARCH NEW"), /\* SEARCH 1 3\r\n/);
  h.written.length = 0;
  assert.match(await h.run("g SEARCH OLD"), /\* SEARCH\r\n/);

  // A message arriving while selected is recent to the session that claims it on its resync.
  h.messages.push({ uid: 4, size: 10, internalDate: 0, flags: [], body: "h4", modSeq: 2 });
  h.written.length = 0;
  assert.match(await h.run("h NOOP"), /\* 4 EXISTS\r\n\* 4 RECENT\r\nh OK/);

  h.written.length = 0;
  assert.match(await h.run("i SELECT INBOX"), /\* 4 EXISTS\r\n\* 0 RECENT\r\n/, "claimed by the first SELECT");
  h.messages.push({ uid: 5, size: 10, internalDate: 0, flags: [], body: "h5", modSeq: 3 });
  h.written.length = 0;
  assert.match(await h.run("j EXAMINE INBOX"), /\* 5 EXISTS\r\n\* 1 RECENT\r\n/, "EXAMINE shows what nobody claimed");
  h.written.length = 0;
  assert.match(await h.run("k SELECT INBOX"), /\* 1 RECENT\r\n/, "and leaves it to the next SELECT");
});

test("the selected folder made anew (new UIDVALIDITY): the ask is refused, the session says BYE and closes instead of acting on the new folder", async () => {
  const h = harness(3);
  await loggedInAndSelected(h);
  h.folderState.uidValidity = 8;
  const out = await Effect.runPromise(h.session.handle(parseCommand(Buffer.from("c STORE 1 +FLAGS (\\Deleted)"))));
  assert.equal(out, "close");
  assert.match(h.written.join(""), /^\* BYE [^\r]*UIDVALIDITY[^\r]*\r\n$/, "BYE and nothing after it, no tagged answer");
  assert.deepEqual(h.calls, ["flags"], "the store was asked with the old UIDVALIDITY and refused");
  assert.equal(h.session.state().phase, "logout");
});

test("the selected folder made anew while idling: BYE, and the connection is closed", async () => {
  const h = harness(2);
  await loggedInAndSelected(h);
  await h.run("c IDLE");
  h.written.length = 0;
  h.folderState.uidValidity = 9;
  h.watchers.forEach((notify) => notify());
  await new Promise((resolve) => setTimeout(resolve, 50));
  assert.match(h.written.join(""), /^\* BYE /);
  assert.equal(h.closed.length, 1);
});

/** Lets started fibers run until `done` holds (no timers: a few turns of the event loop). */
const settled = async (done: () => boolean, what: string) => {
  for (let turn = 0; turn < 1_000 && !done(); turn++) await new Promise((resolve) => setImmediate(resolve));
  assert.ok(done(), what);
};

test("IDLE: a resync runs with the server's services (its Clock), and the session's end interrupts one still running", async () => {
  const runtime = ManagedRuntime.make(TestClock.layer());
  try {
    const options: { viewDelayMs?: number; fork: ImapSessionConfig["fork"] } = { fork: (effect) => runtime.runFork(effect) };
    const h = harness(3, options);
    await loggedInAndSelected(h);
    await h.run("c IDLE");
    options.viewDelayMs = 60_000; // the owner answers a minute later, by the server's clock

    h.messages.push({ uid: 4, size: 10, internalDate: 0, flags: [], body: "h4", modSeq: 2 });
    h.watchers.forEach((notify) => notify());
    await settled(() => h.calls.includes("view"), "the resync asks for the view");
    assert.doesNotMatch(h.written.join(""), /EXISTS/);
    await runtime.runPromise(TestClock.adjust(60_000));
    await settled(() => /\* 4 EXISTS\r\n/.test(h.written.join("")), "the resync reports the new message once the test clock has moved");

    // A second change; the client leaves while its resync waits for the owner.
    h.calls.length = 0;
    h.messages.push({ uid: 5, size: 10, internalDate: 0, flags: [], body: "h5", modSeq: 3 });
    h.watchers.forEach((notify) => notify());
    await settled(() => h.calls.includes("view"), "the second resync asks for the view");
    h.session.end();
    await settled(() => h.calls.includes("view-interrupted"), "the session's end interrupts the resync");
    await runtime.runPromise(TestClock.adjust(60_000));
    assert.doesNotMatch(h.written.join(""), /\* 5 EXISTS/);
  } finally {
    await runtime.dispose();
  }
});

test("a failed login is answered only after the configured pause, on the server's clock; the third one closes the connection", async () => {
  const runtime = ManagedRuntime.make(TestClock.layer());
  try {
    const DELAY_MS = 1_000;
    const h = harness(0, { failureDelayMs: DELAY_MS });
    const login = (line: string) => runtime.runFork(h.session.handle(parseCommand(Buffer.from(line))));

    const first = login("a LOGIN u wrong");
    await runtime.runPromise(TestClock.adjust(DELAY_MS - 1));
    assert.equal(first.pollUnsafe(), undefined, "not answered before the pause is over");
    assert.equal(h.written.join(""), "");
    await runtime.runPromise(TestClock.adjust(1));
    assert.equal(await runtime.runPromise(Fiber.join(first)), "continue");
    assert.equal(h.written.join(""), "a NO [AUTHENTICATIONFAILED] invalid user name or password\r\n");

    const second = login("b LOGIN u wrong");
    await runtime.runPromise(TestClock.adjust(DELAY_MS));
    assert.equal(await runtime.runPromise(Fiber.join(second)), "continue");
    const third = login("c LOGIN u wrong");
    await runtime.runPromise(TestClock.adjust(DELAY_MS - 1));
    assert.equal(third.pollUnsafe(), undefined);
    await runtime.runPromise(TestClock.adjust(1));
    assert.equal(await runtime.runPromise(Fiber.join(third)), "close", "maxFailuresPerConnection (3) reached");
    assert.match(h.written.join(""), /c NO \[AUTHENTICATIONFAILED\] [^\r]*\r\n\* BYE too many failed logins\r\n$/);

    // A right password is answered at once: no pause.
    const other = harness(0, { failureDelayMs: DELAY_MS });
    const ok = runtime.runFork(other.session.handle(parseCommand(Buffer.from("d LOGIN u pw"))));
    assert.equal(await runtime.runPromise(Fiber.join(ok)), "continue");
    assert.match(other.written.join(""), /^d OK \[CAPABILITY [^\]]*\] logged in\r\n$/);
  } finally {
    await runtime.dispose();
  }
});
