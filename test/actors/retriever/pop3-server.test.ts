// The POP3 retriever driven by clients nobody here wrote (Python's poplib, curl),
// plus a raw socket for input no polite client would send.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as tls from "node:tls";
import * as net from "node:net";
import { promisify } from "node:util";
import { Effect } from "effect";
import { LockLost, MailboxUnavailable, MaildropInUse, NoSuchMessage, type MaildropAccess, type OpenMaildrop } from "../../../actors/retriever/maildrop.ts";
import { topOfMessage, type LoginOutcome } from "../../../protocol/pop3.ts";
import { connectPop3, type RawPop3 } from "../../support/pop3.ts";
import { loadTlsCredentials, type TlsCredentials } from "../../../nodes/tls.ts";
import { startPop3Server, type Pop3Server, type Pop3ServerOptions } from "../../../actors/retriever/pop3-server.ts";
import { defaultAccountDelay, makeLoginAccounts, makeLoginThrottle } from "../../../actors/users/login-throttle.ts";

const run = promisify(execFile);

// ---------------------------------------------------------------------------
// An in-memory maildrop

const ALICE_MESSAGES: ReadonlyArray<readonly [uid: string, content: string]> = [
  ["a-1", "From: bob@example.test\r\nSubject: hello\r\n\r\nHi Alice.\r\n"],
  // A line that starts with "." and a line that is only ".": both must survive stuffing.
  ["a-2", "Subject: dots\r\n\r\n.leading dot\r\n.\r\n..two dots\r\nend\r\n"],
  ["a-3", "Subject: three\r\n\r\nfirst\r\nsecond\r\nthird\r\n"],
];
const BOB_MESSAGES: ReadonlyArray<readonly [uid: string, content: string]> = [
  ["b-1", "Subject: for bob\r\n\r\nHello Bob.\r\n"],
];

interface MemoryMaildrop extends MaildropAccess {
  readonly messagesOf: (user: string) => ReadonlyArray<string>;
  readonly commitCalls: Array<{ user: string; remove: ReadonlyArray<string>; seen: ReadonlyArray<string> }>;
  /** Who holds each user's lock now. */
  readonly locks: Map<string, string>;
  readonly renewals: { count: number };
}

interface MaildropFaults {
  readonly openFails?: boolean;
  readonly commitFails?: boolean;
  /** retrieve dies with a defect (a bug downstream), not a typed failure. */
  readonly retrieveDies?: boolean;
  /** retrieve finds the lock gone (the owner node restarted). */
  readonly retrieveLosesLock?: boolean;
  /** keepAlive finds the lock gone; renewals come every `renewEveryMs`. */
  readonly keepAliveLosesLock?: boolean;
  readonly renewEveryMs?: number;
  /** authenticate throws before returning an Effect at all. */
  readonly authenticateThrows?: boolean;
}

const makeMemoryMaildrop = (faults: MaildropFaults = {}): MemoryMaildrop => {
  const accounts = new Map([
    ["alice", { password: "open sesame", address: "alice@example.test" }],
    ["bob", { password: "bob-secret", address: "bob@example.test" }],
  ]);
  const boxes = new Map<string, Map<string, Buffer>>([
    ["alice@example.test", new Map(ALICE_MESSAGES.map(([uid, text]) => [uid, Buffer.from(text, "latin1")]))],
    ["bob@example.test", new Map(BOB_MESSAGES.map(([uid, text]) => [uid, Buffer.from(text, "latin1")]))],
  ]);
  const boxOf = (user: string) => boxes.get(user) ?? new Map<string, Buffer>();
  const commitCalls: MemoryMaildrop["commitCalls"] = [];
  const locks = new Map<string, string>();
  const renewals = { count: 0 };
  const unavailable = (user: string) => new MailboxUnavailable({ user, detail: "owner node unreachable" });
  const openMaildrop = (user: string, holder: string): OpenMaildrop => {
    const release = () => {
      if (locks.get(user) === holder) locks.delete(user);
    };
    return {
      messages: [...boxOf(user)].map(([uid, content]) => ({ uid, size: content.length })),
      renewEveryMs: faults.renewEveryMs ?? 60_000,
      retrieve: (uid, topLines) => {
        if (faults.retrieveDies) return Effect.die(new Error("store exploded"));
        if (faults.retrieveLosesLock) return Effect.fail(new LockLost({ user }));
        const content = boxOf(user).get(uid);
        if (content === undefined) return Effect.fail(new NoSuchMessage({ user, uid }));
        return Effect.succeed(topLines === undefined ? content : topOfMessage(content, topLines));
      },
      keepAlive: () => {
        renewals.count++;
        return faults.keepAliveLosesLock ? Effect.fail(new LockLost({ user })) : Effect.void;
      },
      commit: ({ remove, seen }) => {
        if (faults.commitFails) return Effect.fail(unavailable(user));
        commitCalls.push({ user, remove, seen });
        for (const uid of remove) boxOf(user).delete(uid);
        release();
        return Effect.void;
      },
      release: () => Effect.sync(release),
    };
  };
  return {
    commitCalls,
    locks,
    renewals,
    messagesOf: (user) => [...boxOf(user).keys()],
    authenticate: (user, password) => {
      if (faults.authenticateThrows) throw new Error("broken MaildropAccess");
      const account = accounts.get(user);
      return Effect.succeed(account !== undefined && account.password === password ? account.address : null);
    },
    open: (user, holder) => {
      if (faults.openFails) return Effect.fail(unavailable(user));
      const current = locks.get(user);
      if (current !== undefined) return Effect.fail(new MaildropInUse({ user, holder: current }));
      locks.set(user, holder);
      return Effect.succeed(openMaildrop(user, holder));
    },
  };
};

// ---------------------------------------------------------------------------
// A server per test, closed whatever happens

interface Harness {
  readonly server: Pop3Server;
  readonly maildrop: MemoryMaildrop;
  /** Resolves once the server has logged an entry matching `predicate`. */
  readonly logged: (predicate: (fields: Record<string, unknown>) => boolean) => Promise<void>;
}

const withServer = async (
  setup: { faults?: MaildropFaults; idleTimeoutMs?: number; server?: Partial<Pop3ServerOptions> },
  body: (harness: Harness) => Promise<void>,
): Promise<void> => {
  const maildrop = makeMemoryMaildrop(setup.faults);
  const entries: Array<Record<string, unknown>> = [];
  const watchers = new Set<() => void>();
  const server = await startPop3Server({
    host: "127.0.0.1",
    port: 0,
    hostname: "pop.example.test",
    access: maildrop,
    failureDelayMs: 0,
    ...(setup.idleTimeoutMs !== undefined && { idleTimeoutMs: setup.idleTimeoutMs }),
    ...setup.server,
    log: (event, fields) => {
      entries.push({ event, ...fields });
      for (const watcher of watchers) watcher();
    },
  });
  const logged = (predicate: (fields: Record<string, unknown>) => boolean) =>
    new Promise<void>((resolve) => {
      const check = () => {
        if (!entries.some(predicate)) return;
        watchers.delete(check);
        resolve();
      };
      watchers.add(check);
      check();
    });
  try {
    await body({ server, maildrop, logged });
  } finally {
    await server.close();
  }
};

// ---------------------------------------------------------------------------
// Python's poplib

const POPLIB_SCRIPT = `
import base64, json, poplib, ssl, sys
host, port, user, password = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
steps = json.loads(sys.argv[5])
use_stls = len(sys.argv) > 6 and sys.argv[6] == "stls"
text = lambda b: b.decode("latin-1")
out = []
try:
    box = poplib.POP3(host, port, timeout=10)
    out.append(["welcome", text(box.getwelcome())])
    if use_stls:
        out.append(["capa-before", sorted(box.capa().keys())])
        out.append(["stls", text(box.stls(ssl._create_unverified_context()))])
        out.append(["cipher", box.sock.version()])
    box.user(user)
    out.append(["pass", text(box.pass_(password))])
    for name, *args in steps:
        if name == "stat":
            out.append(["stat", list(box.stat())])
        elif name in ("list", "uidl") and args:
            out.append([name, text(getattr(box, name)(*args))])
        elif name in ("list", "uidl"):
            resp, lines, _ = getattr(box, name)()
            out.append([name, text(resp), [text(line) for line in lines]])
        elif name in ("retr", "top"):
            resp, lines, _ = getattr(box, name)(*args)
            body = b"\\r\\n".join(lines) + b"\\r\\n"
            out.append([name, text(resp), base64.b64encode(body).decode()])
        elif name == "capa":
            out.append(["capa", sorted(box.capa().keys())])
        else:
            out.append([name, text(getattr(box, name)(*args))])
except poplib.error_proto as error:
    out.append(["error", text(error.args[0])])
print(json.dumps(out))
`;

type PoplibStep = readonly [name: string, ...args: Array<string | number>];

const poplib = async (port: number, user: string, password: string, steps: ReadonlyArray<PoplibStep>, mode: "plain" | "stls" = "plain") => {
  const { stdout } = await run(
    "python3",
    ["-c", POPLIB_SCRIPT, "127.0.0.1", String(port), user, password, JSON.stringify(steps), mode],
    { timeout: 15_000 },
  );
  return JSON.parse(stdout) as Array<[string, ...unknown[]]>;
};

const decoded = (base64: unknown): string => Buffer.from(String(base64), "base64").toString("latin1");

const messageText = (messages: ReadonlyArray<readonly [string, string]>, index: number): string => {
  const entry = messages[index];
  assert.ok(entry, `fixture message ${index} exists`);
  return entry[1];
};

test("poplib: STAT, LIST, UIDL, RETR and TOP see the maildrop exactly", () =>
  withServer({}, async ({ server }) => {
    const [m1, m2, m3] = [0, 1, 2].map((index) => messageText(ALICE_MESSAGES, index)) as [string, string, string];
    const total = m1.length + m2.length + m3.length;
    const out = await poplib(server.port, "alice", "open sesame", [
      ["capa"],
      ["stat"],
      ["list"],
      ["list", 2],
      ["uidl"],
      ["uidl", 3],
      ["retr", 1],
      ["retr", 2],
      ["top", 3, 1],
      ["noop"],
      ["quit"],
    ]);
    assert.deepEqual(out, [
      ["welcome", "+OK pop.example.test POP3 ready"],
      ["pass", `+OK maildrop has 3 messages (${total} octets)`],
      ["capa", ["AUTH-RESP-CODE", "PIPELINING", "RESP-CODES", "SASL", "TOP", "UIDL", "USER"]],
      ["stat", [3, total]],
      ["list", `+OK 3 messages (${total} octets)`, [`1 ${m1.length}`, `2 ${m2.length}`, `3 ${m3.length}`]],
      ["list", `+OK 2 ${m2.length}`],
      ["uidl", `+OK 3 messages (${total} octets)`, ["1 a-1", "2 a-2", "3 a-3"]],
      ["uidl", "+OK 3 a-3"],
      ["retr", `+OK ${m1.length} octets`, Buffer.from(m1, "latin1").toString("base64")],
      ["retr", `+OK ${m2.length} octets`, Buffer.from(m2, "latin1").toString("base64")],
      ["top", "+OK top of message follows", Buffer.from("Subject: three\r\n\r\nfirst\r\n").toString("base64")],
      ["noop", "+OK"],
      ["quit", "+OK pop.example.test POP3 signing off (3 messages left)"],
    ]);
    assert.equal(decoded((out[9] as unknown[])[2]), m2, "dot lines come back byte for byte");
  }));

test("poplib: DELE then QUIT removes; the next session sees the deletion", () =>
  withServer({}, async ({ server, maildrop }) => {
    const [m1, m3] = [messageText(ALICE_MESSAGES, 0), messageText(ALICE_MESSAGES, 2)];
    const first = await poplib(server.port, "alice", "open sesame", [
      ["dele", 2],
      ["stat"],
      ["list"],
      ["retr", 2],
    ]);
    assert.deepEqual(first.slice(2), [
      ["dele", "+OK message 2 deleted"],
      ["stat", [2, m1.length + m3.length]],
      ["list", `+OK 2 messages (${m1.length + m3.length} octets)`, [`1 ${m1.length}`, `3 ${m3.length}`]],
      ["error", "-ERR message 2 already deleted"],
    ]);
    // The error above ended that script without QUIT: nothing may be removed.
    assert.deepEqual(maildrop.messagesOf("alice@example.test"), ["a-1", "a-2", "a-3"]);

    const second = await poplib(server.port, "alice", "open sesame", [["dele", 2], ["quit"]]);
    assert.deepEqual(second.slice(2), [
      ["dele", "+OK message 2 deleted"],
      ["quit", "+OK pop.example.test POP3 signing off (2 messages left)"],
    ]);
    assert.deepEqual(maildrop.commitCalls, [{ user: "alice@example.test", remove: ["a-2"], seen: [] }]);

    const third = await poplib(server.port, "alice", "open sesame", [["uidl"], ["retr", 2], ["quit"]]);
    assert.deepEqual(third.slice(1, 4), [
      ["pass", `+OK maildrop has 2 messages (${m1.length + m3.length} octets)`],
      ["uidl", `+OK 2 messages (${m1.length + m3.length} octets)`, ["1 a-1", "2 a-3"]],
      ["retr", `+OK ${m3.length} octets`, Buffer.from(m3, "latin1").toString("base64")],
    ]);
  }));

test("poplib: RSET undeletes", () =>
  withServer({}, async ({ server, maildrop }) => {
    const out = await poplib(server.port, "bob", "bob-secret", [["dele", 1], ["stat"], ["rset"], ["stat"], ["quit"]]);
    const size = messageText(BOB_MESSAGES, 0).length;
    assert.deepEqual(out.slice(2), [
      ["dele", "+OK message 1 deleted"],
      ["stat", [0, 0]],
      ["rset", `+OK maildrop has 1 messages (${size} octets)`],
      ["stat", [1, size]],
      ["quit", "+OK pop.example.test POP3 signing off (1 messages left)"],
    ]);
    assert.deepEqual(maildrop.commitCalls, [{ user: "bob@example.test", remove: [], seen: [] }]);
  }));

test("poplib: a wrong password is refused with [AUTH]", () =>
  withServer({}, async ({ server }) => {
    const wrongPassword = await poplib(server.port, "alice", "open sesame!", []);
    assert.deepEqual(wrongPassword, [
      ["welcome", "+OK pop.example.test POP3 ready"],
      ["error", "-ERR [AUTH] invalid user name or password"],
    ]);
    const unknownUser = await poplib(server.port, "mallory", "open sesame", []);
    assert.deepEqual(unknownUser.at(-1), ["error", "-ERR [AUTH] invalid user name or password"]);
  }));

test("poplib: each user sees only their own maildrop", () =>
  withServer({}, async ({ server }) => {
    const bobMessage = messageText(BOB_MESSAGES, 0);
    const out = await poplib(server.port, "bob", "bob-secret", [["uidl"], ["retr", 1], ["quit"]]);
    assert.deepEqual(out.slice(1, 4), [
      ["pass", `+OK maildrop has 1 messages (${bobMessage.length} octets)`],
      ["uidl", `+OK 1 messages (${bobMessage.length} octets)`, ["1 b-1"]],
      ["retr", `+OK ${bobMessage.length} octets`, Buffer.from(bobMessage, "latin1").toString("base64")],
    ]);
  }));

// ---------------------------------------------------------------------------
// curl

const curl = async (url: string, credentials: string): Promise<Buffer> => {
  const { stdout } = await run("curl", ["--silent", "--show-error", "--max-time", "10", "--user", credentials, url], {
    encoding: "buffer",
    timeout: 15_000,
  });
  return stdout;
};

test("curl: retrieves a message byte for byte, dot lines included", () =>
  withServer({}, async ({ server }) => {
    for (const number of [1, 2]) {
      const body = await curl(`pop3://127.0.0.1:${server.port}/${number}`, "alice:open sesame");
      assert.equal(body.toString("latin1"), messageText(ALICE_MESSAGES, number - 1));
    }
  }));

test("curl: lists the maildrop", () =>
  withServer({}, async ({ server }) => {
    const body = await curl(`pop3://127.0.0.1:${server.port}/`, "alice:open sesame");
    const sizes = ALICE_MESSAGES.map(([, text], index) => `${index + 1} ${text.length}\r\n`).join("");
    assert.equal(body.toString("latin1"), sizes);
  }));

test("curl: a wrong password fails the transfer", () =>
  withServer({}, async ({ server }) => {
    await assert.rejects(curl(`pop3://127.0.0.1:${server.port}/1`, "alice:nope"), (error: { code?: number }) => {
      assert.equal(error.code, 67, "curl exit 67: login denied");
      return true;
    });
  }));

// ---------------------------------------------------------------------------
// Raw sockets

type RawSession = RawPop3;

/** A raw session that has not read the greeting yet. */
const connectRaw = (port: number, localAddress?: string): Promise<RawSession> =>
  connectPop3(port, { ...(localAddress && { localAddress }), readGreeting: false });

const loginRaw = async (port: number, user = "alice", password = "open sesame"): Promise<RawSession> => {
  const session = await connectRaw(port);
  session.send(`USER ${user}\r\nPASS ${password}\r\n`);
  const [greeting, userReply, passReply] = await session.lines(3);
  assert.equal(greeting, "+OK pop.example.test POP3 ready");
  assert.equal(userReply, "+OK send PASS");
  assert.match(passReply ?? "", /^\+OK maildrop has \d+ messages/);
  return session;
};

test("raw: bad input gets -ERR and the session carries on (pipelined in one chunk)", () =>
  withServer({}, async ({ server }) => {
    const session = await connectRaw(server.port);
    session.send(
      [
        "STAT",
        "NOOP",
        "PASS early",
        "FROB",
        "USER alice",
        "PASS open sesame",
        "RETR abc",
        "RETR 99",
        "RETR 0",
        "DELE",
        "USER bob",
        "list 1",
        "",
      ].join("\r\n"),
    );
    assert.deepEqual(await session.lines(13), [
      "+OK pop.example.test POP3 ready",
      "-ERR STAT not allowed before login",
      "-ERR NOOP not allowed before login",
      "-ERR USER first",
      "-ERR unknown command FROB",
      "+OK send PASS",
      `+OK maildrop has 3 messages (${ALICE_MESSAGES.reduce((sum, [, text]) => sum + text.length, 0)} octets)`,
      "-ERR invalid message number for RETR: abc",
      "-ERR no such message",
      "-ERR invalid message number for RETR: 0",
      "-ERR DELE needs an argument",
      "-ERR USER not allowed after login",
      `+OK 1 ${messageText(ALICE_MESSAGES, 0).length}`,
    ]);
    session.send("QUIT\r\n");
    assert.deepEqual(await session.lines(1), ["+OK pop.example.test POP3 signing off (3 messages left)"]);
    assert.equal(await session.closed, "");
  }));

test("raw: bare LF line endings are accepted; control characters are not echoed", () =>
  withServer({}, async ({ server }) => {
    const session = await connectRaw(server.port);
    session.send("CAPA\nBAD\rVERB\nQUIT\n");
    assert.deepEqual(await session.lines(12), [
      "+OK pop.example.test POP3 ready",
      "+OK capability list follows",
      "USER",
      "SASL PLAIN",
      "TOP",
      "UIDL",
      "RESP-CODES",
      "AUTH-RESP-CODE",
      "PIPELINING",
      ".",
      "-ERR unknown command BAD?VERB",
      "+OK pop.example.test POP3 signing off",
    ]);
    await session.closed;
  }));

test("raw: a command over 255 octets is refused but the session lives", () =>
  withServer({}, async ({ server }) => {
    const session = await connectRaw(server.port);
    session.send(`USER ${"x".repeat(300)}\r\nNOOP\r\n`);
    assert.deepEqual(await session.lines(3), [
      "+OK pop.example.test POP3 ready",
      "-ERR command line too long (305 octets)",
      "-ERR NOOP not allowed before login",
    ]);
    session.socket.destroy();
  }));

test("raw: more than 8192 octets without a newline gets -ERR and the connection closes", () =>
  withServer({}, async ({ server }) => {
    const session = await connectRaw(server.port);
    assert.deepEqual(await session.lines(1), ["+OK pop.example.test POP3 ready"]);
    session.send("A".repeat(9000));
    assert.equal(await session.closed, "-ERR line too long\r\n");
  }));

test("raw: a dropped connection after DELE deletes nothing", () =>
  withServer({}, async ({ server, maildrop, logged }) => {
    const session = await loginRaw(server.port);
    session.send("DELE 1\r\nDELE 2\r\n");
    assert.deepEqual(await session.lines(2), ["+OK message 1 deleted", "+OK message 2 deleted"]);
    session.socket.destroy();
    await logged((fields) => fields.event === "connection.closed");
    assert.deepEqual(maildrop.commitCalls, []);
    assert.deepEqual(maildrop.messagesOf("alice@example.test"), ["a-1", "a-2", "a-3"]);
    // The lock died with the connection, so a new session gets in and sees everything.
    const again = await loginRaw(server.port);
    again.send("STAT\r\nQUIT\r\n");
    const [stat] = await again.lines(2);
    assert.equal(stat, `+OK 3 ${ALICE_MESSAGES.reduce((sum, [, text]) => sum + text.length, 0)}`);
  }));

test("raw: a second concurrent session on the same maildrop is refused [IN-USE]", () =>
  withServer({}, async ({ server }) => {
    const first = await loginRaw(server.port);
    const second = await connectRaw(server.port);
    second.send("USER alice\r\nPASS open sesame\r\nUSER bob\r\nPASS bob-secret\r\n");
    assert.deepEqual(await second.lines(5), [
      "+OK pop.example.test POP3 ready",
      "+OK send PASS",
      "-ERR [IN-USE] maildrop already locked",
      "+OK send PASS",
      `+OK maildrop has 1 messages (${messageText(BOB_MESSAGES, 0).length} octets)`,
    ]);
    first.socket.destroy();
    second.socket.destroy();
  }));

test("raw: MailboxUnavailable from list answers -ERR [SYS/TEMP] at login", () =>
  withServer({ faults: { openFails: true } }, async ({ server }) => {
    const session = await connectRaw(server.port);
    session.send("USER alice\r\nPASS open sesame\r\nSTAT\r\nQUIT\r\n");
    assert.deepEqual(await session.lines(5), [
      "+OK pop.example.test POP3 ready",
      "+OK send PASS",
      "-ERR [SYS/TEMP] mailbox temporarily unavailable, try again later",
      "-ERR STAT not allowed before login",
      "+OK pop.example.test POP3 signing off",
    ]);
    await session.closed;
  }));

test("raw: a failed UPDATE answers -ERR [SYS/TEMP] and keeps the messages", () =>
  withServer({ faults: { commitFails: true } }, async ({ server, maildrop }) => {
    const session = await loginRaw(server.port);
    session.send("DELE 1\r\nQUIT\r\n");
    assert.deepEqual(await session.lines(2), [
      "+OK message 1 deleted",
      "-ERR [SYS/TEMP] mailbox temporarily unavailable, try again later",
    ]);
    await session.closed;
    assert.deepEqual(maildrop.messagesOf("alice@example.test"), ["a-1", "a-2", "a-3"]);
  }));

test("raw: a defect in retrieve answers -ERR [SYS/TEMP]; the session carries on", () =>
  withServer({ faults: { retrieveDies: true } }, async ({ server }) => {
    const session = await loginRaw(server.port);
    session.send("RETR 1\r\nNOOP\r\n");
    assert.deepEqual(await session.lines(2), [
      "-ERR [SYS/TEMP] mailbox temporarily unavailable, try again later",
      "+OK",
    ]);
    session.socket.destroy();
  }));

test("raw: a MaildropAccess that throws is answered like a defect", () =>
  withServer({ faults: { authenticateThrows: true } }, async ({ server, logged }) => {
    const session = await connectRaw(server.port);
    session.send("USER alice\r\nPASS open sesame\r\nQUIT\r\n");
    assert.deepEqual(await session.lines(4), [
      "+OK pop.example.test POP3 ready",
      "+OK send PASS",
      "-ERR [SYS/TEMP] mailbox temporarily unavailable, try again later",
      "+OK pop.example.test POP3 signing off",
    ]);
    await logged((fields) => fields.event === "pop3.maildrop.unavailable" && fields.operation === "authenticate");
  }));

test("raw: an idle session is closed silently", () =>
  withServer({ idleTimeoutMs: 150 }, async ({ server, logged }) => {
    const session = await loginRaw(server.port);
    session.send("DELE 1\r\n");
    assert.deepEqual(await session.lines(1), ["+OK message 1 deleted"]);
    assert.equal(await session.closed, "", "RFC 1939 §3: no reply on autologout");
    await logged((fields) => fields.event === "pop3.idle-timeout");
  }));

test("close() ends open sessions", () =>
  withServer({}, async ({ server }) => {
    const session = await loginRaw(server.port);
    await server.close();
    await session.closed;
  }));

// ---------------------------------------------------------------------------
// STLS, AUTH PLAIN, who may log in without TLS, failed-login limits, lost locks

let credentials: Promise<TlsCredentials> | undefined;
/** A self-signed certificate, made once for this file. */
const testCredentials = () =>
  (credentials ??= (async () => {
    const dir = await mkdtemp(join(tmpdir(), "tern-pop3-tls-"));
    try {
      return await loadTlsCredentials({}, dir, "pop.example.test", () => undefined);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  })());

const withTlsServer = async (server: Partial<Pop3ServerOptions>, body: (harness: Harness) => Promise<void>) => {
  const { key, cert } = await testCredentials();
  return withServer({ server: { tls: { key, cert }, ...server } }, body);
};

/** Reads CRLF lines from any stream (plain or TLS). */
const lineReader = (socket: net.Socket) => {
  let received = "";
  let wake = () => {};
  socket.on("data", (chunk: Buffer) => {
    received += chunk.toString("latin1");
    wake();
  });
  socket.on("close", () => wake());
  return async (count: number): Promise<string[]> => {
    for (;;) {
      const parts = received.split("\r\n");
      if (parts.length > count) {
        received = parts.slice(count).join("\r\n");
        return parts.slice(0, count);
      }
      if (socket.destroyed) throw new Error(`connection closed; got only ${JSON.stringify(received)}`);
      await new Promise<void>((resolve) => (wake = resolve));
    }
  };
};

const b64 = (text: string) => Buffer.from(text, "utf8").toString("base64");

test("poplib over STLS: STLS offered before, USER and SASL only after; the session runs over TLS", () =>
  withTlsServer({ plaintextLoginNetworks: [] }, async ({ server }) => {
    const m1 = messageText(ALICE_MESSAGES, 0);
    const out = await poplib(server.port, "alice", "open sesame", [["capa"], ["retr", 1], ["quit"]], "stls");
    assert.deepEqual(out, [
      ["welcome", "+OK pop.example.test POP3 ready"],
      ["capa-before", ["AUTH-RESP-CODE", "PIPELINING", "RESP-CODES", "STLS", "TOP", "UIDL"]],
      ["stls", "+OK begin TLS negotiation"],
      ["cipher", "TLSv1.3"],
      ["pass", `+OK maildrop has 3 messages (${ALICE_MESSAGES.reduce((sum, [, text]) => sum + text.length, 0)} octets)`],
      ["capa", ["AUTH-RESP-CODE", "PIPELINING", "RESP-CODES", "SASL", "TOP", "UIDL", "USER"]],
      ["retr", `+OK ${m1.length} octets`, Buffer.from(m1, "latin1").toString("base64")],
      ["quit", "+OK pop.example.test POP3 signing off (3 messages left)"],
    ]);
  }));

test("without TLS, USER, PASS and AUTH are refused where plaintext login is not allowed", () =>
  withTlsServer({ plaintextLoginNetworks: [] }, async ({ server, maildrop }) => {
    const refusal = "-ERR [AUTH] plaintext login is not allowed on this connection: use STLS first";
    const session = await connectRaw(server.port);
    session.send(`USER alice\r\nPASS open sesame\r\nAUTH PLAIN ${b64("\0alice\0open sesame")}\r\nSTAT\r\n`);
    assert.deepEqual(await session.lines(5), ["+OK pop.example.test POP3 ready", refusal, refusal, refusal, "-ERR STAT not allowed before login"]);
    assert.equal(maildrop.locks.size, 0);
    session.socket.destroy();
    // poplib, which does not try STLS on its own, gets the same answer.
    const plain = await poplib(server.port, "alice", "open sesame", []);
    assert.deepEqual(plain.at(-1), ["error", refusal]);
  }));

test("STLS: what was pipelined after it in the clear is dropped; STLS twice, after login or without TLS is refused", async () => {
  await withTlsServer({ plaintextLoginNetworks: [] }, async ({ server }) => {
    const plain = net.connect(server.port, "127.0.0.1");
    const readPlain = lineReader(plain);
    assert.deepEqual(await readPlain(1), ["+OK pop.example.test POP3 ready"]);
    // An attacker in the middle appends a USER to the client's STLS.
    plain.write("STLS\r\nUSER mallory\r\n");
    assert.deepEqual(await readPlain(1), ["+OK begin TLS negotiation"]);
    plain.removeAllListeners("data");
    const secure = tls.connect({ socket: plain, rejectUnauthorized: false });
    await new Promise<void>((resolve, reject) => secure.once("secureConnect", resolve).once("error", reject));
    const read = lineReader(secure);
    secure.write("PASS open sesame\r\nSTLS\r\nUSER alice\r\nPASS open sesame\r\nSTLS\r\nQUIT\r\n");
    assert.deepEqual(await read(6), [
      "-ERR USER first",
      "-ERR TLS already active",
      "+OK send PASS",
      "+OK maildrop has 3 messages (" + ALICE_MESSAGES.reduce((sum, [, text]) => sum + text.length, 0) + " octets)",
      "-ERR STLS not allowed after login",
      "+OK pop.example.test POP3 signing off (3 messages left)",
    ]);
    secure.destroy();
  });
  await withServer({}, async ({ server }) => {
    const session = await connectRaw(server.port);
    session.send("CAPA\r\nSTLS\r\n");
    const lines = await session.lines(11);
    assert.ok(!lines.includes("STLS"), "STLS is not offered without a certificate");
    assert.equal(lines.at(-1), "-ERR STLS not available");
    session.socket.destroy();
  });
});

test("AUTH PLAIN: with an initial response, after a continuation, cancelled, malformed, wrong, or for someone else", () =>
  withServer({}, async ({ server }) => {
    const session = await connectRaw(server.port);
    session.send(
      [
        "AUTH",
        "AUTH CRAM-MD5",
        "AUTH PLAIN",
        "*",
        "AUTH PLAIN",
        "!!!",
        `AUTH PLAIN ${b64("\0alice\0wrong")}`,
        `AUTH PLAIN ${b64("bob\0alice\0open sesame")}`,
        "AUTH PLAIN",
        b64("alice\0alice\0open sesame"),
        "QUIT",
        "",
      ].join("\r\n"),
    );
    assert.deepEqual(await session.lines(13), [
      "+OK pop.example.test POP3 ready",
      "+OK SASL mechanisms follow",
      "PLAIN",
      ".",
      "-ERR unsupported authentication mechanism CRAM-MD5",
      "+ ",
      "-ERR authentication cancelled",
      "+ ",
      "-ERR PLAIN response is not base64",
      "-ERR [AUTH] invalid user name or password",
      "-ERR [AUTH] invalid user name or password",
      "+ ",
      `+OK maildrop has 3 messages (${ALICE_MESSAGES.reduce((sum, [, text]) => sum + text.length, 0)} octets)`,
    ]);
    assert.deepEqual(await session.lines(1), ["+OK pop.example.test POP3 signing off (3 messages left)"]);
  }));

test("curl over STLS logs in with AUTH PLAIN and retrieves", () =>
  withTlsServer({ plaintextLoginNetworks: [] }, async ({ server, logged }) => {
    const { stdout, stderr } = await run(
      "curl",
      ["--silent", "--show-error", "--verbose", "--ssl-reqd", "--insecure", "--max-time", "10", "--user", "alice:open sesame", `pop3://127.0.0.1:${server.port}/2`],
      { encoding: "buffer", timeout: 15_000 },
    );
    assert.equal(stdout.toString("latin1"), messageText(ALICE_MESSAGES, 1));
    assert.match(stderr.toString(), /> STLS/);
    assert.match(stderr.toString(), /> AUTH PLAIN/);
    await logged((fields) => fields.event === "auth.succeeded" && fields.protocol === "pop3" && fields.tls === true);
  }));

test("failed logins: refused per (user, IP); slowed per account from new addresses; a user's known address still gets in at once", () => {
  const outcomes: LoginOutcome[] = [];
  const accounts = Effect.runSync(
    makeLoginAccounts((login) => (login === "alice" ? "alice@example.test" : undefined), {
      ...defaultAccountDelay,
      afterFailures: 3,
      delayMs: 300,
      maxDelayMs: 300,
    }),
  );
  const throttle = makeLoginThrottle(accounts, { windowMs: 60_000, maxFailuresPerIp: 100, maxFailuresPerAccountAndIp: 2 });
  return withServer({ server: { throttle, onLogin: (outcome) => outcomes.push(outcome) } }, async ({ server }) => {
    const attempt = async (from: string, password: string) => {
      const session = await connectRaw(server.port, from);
      const started = Date.now();
      session.send(`USER alice\r\nPASS ${password}\r\n`);
      const [, , reply] = await session.lines(3);
      session.socket.destroy();
      return { reply, ms: Date.now() - started };
    };
    const invalid = "-ERR [AUTH] invalid user name or password";
    assert.match((await attempt("127.0.0.2", "open sesame")).reply!, /^\+OK/, "alice's usual address");
    await new Promise((resolve) => setTimeout(resolve, 50)); // let the lock go
    assert.equal((await attempt("127.0.0.3", "guess1")).reply, invalid);
    assert.equal((await attempt("127.0.0.3", "guess2")).reply, invalid);
    const pair = await attempt("127.0.0.3", "open sesame");
    assert.equal(pair.reply, "-ERR [AUTH] too many failed logins, try again later", "the pair's limit: even the right password is not checked");
    const third = await attempt("127.0.0.4", "guess3");
    assert.equal(third.reply, invalid);
    assert.ok(third.ms < 250, `not slowed yet (${third.ms} ms)`);
    const slowed = await attempt("127.0.0.5", "open sesame");
    assert.match(slowed.reply!, /^\+OK/, "three failures from anywhere slow the account but never lock it");
    assert.ok(slowed.ms >= 300, `answered after ${slowed.ms} ms`);
    await new Promise((resolve) => setTimeout(resolve, 50));
    const usual = await attempt("127.0.0.2", "open sesame");
    assert.match(usual.reply!, /^\+OK/);
    assert.ok(usual.ms < 250, `alice's known address is not slowed (${usual.ms} ms)`);
    assert.deepEqual(outcomes, ["ok", "failed", "failed", "throttled", "failed", "ok", "ok"]);
  });
});

test("parallel logins from one IP that hang up during the account's delay: only the per-IP limit's worth are admitted, and no password is checked", () => {
  const outcomes: LoginOutcome[] = [];
  const accounts = Effect.runSync(
    makeLoginAccounts((login) => (login === "alice" ? "alice@example.test" : undefined), {
      ...defaultAccountDelay,
      afterFailures: 1,
      delayMs: 2_000,
      maxDelayMs: 2_000,
    }),
  );
  const throttle = makeLoginThrottle(accounts, { windowMs: 60_000, maxFailuresPerIp: 5, maxFailuresPerAccountAndIp: 100 });
  const memory = makeMemoryMaildrop();
  let passwordChecks = 0;
  const access: MaildropAccess = {
    ...memory,
    authenticate: (user, password) => {
      passwordChecks++;
      return memory.authenticate(user, password);
    },
  };
  return withServer({ server: { access, throttle, onLogin: (outcome) => outcomes.push(outcome) } }, async ({ server }) => {
    /** USER/PASS, then the PASS reply, or undefined when none came within `waitMs` (the client hangs up then). */
    const attempt = async (from: string, password: string, waitMs: number) => {
      const session = await connectRaw(server.port, from);
      session.send(`USER alice\r\nPASS ${password}\r\n`);
      const timeout = new Promise<undefined>((resolve) => setTimeout(() => resolve(undefined), waitMs));
      const reply = await Promise.race([session.lines(3).then(([, , pass]) => pass), timeout]);
      session.socket.destroy();
      return reply;
    };
    assert.equal(await attempt("127.0.0.2", "first guess", 10_000), "-ERR [AUTH] invalid user name or password");
    assert.equal(passwordChecks, 1);
    // From now on every attempt for alice waits 2 s; twenty at once from one address, each hanging up after 1 s.
    const replies = await Promise.all(Array.from({ length: 20 }, (_, n) => attempt("127.0.0.3", `guess ${n}`, 1_000)));
    assert.equal(replies.filter((reply) => reply === "-ERR [AUTH] too many failed logins, try again later").length, 15, JSON.stringify(replies));
    assert.equal(replies.filter((reply) => reply === undefined).length, 5, "the admitted ones were still waiting");
    await new Promise((resolve) => setTimeout(resolve, 1_500)); // past the end of every delay
    assert.equal(passwordChecks, 1, "no password was checked for a client that left");
    assert.deepEqual(outcomes.filter((outcome) => outcome === "abandoned").length, 5);
  });
});

test("a failed login is answered after a delay; the third on one connection closes it", () =>
  withServer({ server: { failureDelayMs: 200 } }, async ({ server }) => {
    const session = await connectRaw(server.port);
    const started = Date.now();
    session.send("USER alice\r\nPASS a\r\nUSER alice\r\nPASS b\r\nUSER alice\r\nPASS c\r\n");
    assert.deepEqual((await session.lines(7)).filter((line) => line.startsWith("-ERR")), [
      "-ERR [AUTH] invalid user name or password",
      "-ERR [AUTH] invalid user name or password",
      "-ERR [AUTH] invalid user name or password",
    ]);
    assert.ok(Date.now() - started >= 600, `three failures took only ${Date.now() - started} ms`);
    await session.closed;
  }));

test("a session whose lock is lost ends at once, without UPDATE", () =>
  withServer({ faults: { retrieveLosesLock: true } }, async ({ server, maildrop }) => {
    const session = await loginRaw(server.port);
    session.send("DELE 1\r\nRETR 2\r\nQUIT\r\n");
    assert.deepEqual(await session.lines(2), [
      "+OK message 1 deleted",
      "-ERR [SYS/TEMP] maildrop lock lost (mailbox node restarted?); nothing was changed, log in again",
    ]);
    assert.equal(await session.closed, "");
    assert.deepEqual(maildrop.commitCalls, []);
  }));

test("the lock is renewed while the session idles; a renewal that finds it lost ends the session at the next command", async () => {
  await withServer({ faults: { renewEveryMs: 20 } }, async ({ server, maildrop }) => {
    const session = await loginRaw(server.port);
    await new Promise((resolve) => setTimeout(resolve, 150));
    assert.ok(maildrop.renewals.count >= 3, `only ${maildrop.renewals.count} renewals`);
    session.socket.destroy();
    await new Promise((resolve) => setTimeout(resolve, 60));
    const after = maildrop.renewals.count;
    await new Promise((resolve) => setTimeout(resolve, 60));
    assert.equal(maildrop.renewals.count, after, "renewals stop with the session");
  });
  await withServer({ faults: { renewEveryMs: 20, keepAliveLosesLock: true } }, async ({ server, logged }) => {
    const session = await loginRaw(server.port);
    await new Promise((resolve) => setTimeout(resolve, 80));
    session.send("NOOP\r\n");
    assert.deepEqual(await session.lines(1), ["-ERR [SYS/TEMP] maildrop lock lost (mailbox node restarted?); nothing was changed, log in again"]);
    await session.closed;
    await logged((fields) => fields.event === "connection.closed");
  });
});

test("a client that stalls in the TLS handshake after STLS is timed out like an idle one", async () => {
  const { key, cert } = await testCredentials();
  await withServer({ idleTimeoutMs: 200, server: { tls: { key, cert } } }, async ({ server, logged }) => {
    const session = await connectRaw(server.port);
    session.send("STLS\r\n");
    assert.deepEqual(await session.lines(2), ["+OK pop.example.test POP3 ready", "+OK begin TLS negotiation"]);
    await session.closed;
    await logged((fields) => fields.event === "pop3.idle-timeout");
  });
});
