// The POP3 retriever driven by clients nobody here wrote (Python's poplib, curl),
// plus a raw socket for input no polite client would send.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import * as net from "node:net";
import { promisify } from "node:util";
import { Effect } from "effect";
import { MailboxUnavailable, NoSuchMessage, type MaildropAccess } from "../../actors/retriever/maildrop.ts";
import { startPop3Server, type Pop3Server } from "../../actors/retriever/pop3-server.ts";

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
  readonly removeCalls: Array<{ user: string; uids: ReadonlyArray<string> }>;
}

interface MaildropFaults {
  readonly listFails?: boolean;
  readonly removeFails?: boolean;
  /** retrieve dies with a defect (a bug downstream), not a typed failure. */
  readonly retrieveDies?: boolean;
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
  const removeCalls: Array<{ user: string; uids: ReadonlyArray<string> }> = [];
  const unavailable = (user: string) => new MailboxUnavailable({ user, detail: "owner node unreachable" });
  return {
    removeCalls,
    messagesOf: (user) => [...boxOf(user).keys()],
    authenticate: (user, password) => {
      if (faults.authenticateThrows) throw new Error("broken MaildropAccess");
      const account = accounts.get(user);
      return Effect.succeed(account !== undefined && account.password === password ? account.address : null);
    },
    list: (user) =>
      faults.listFails
        ? Effect.fail(unavailable(user))
        : Effect.succeed([...boxOf(user)].map(([uid, content]) => ({ uid, size: content.length }))),
    retrieve: (user, uid) => {
      if (faults.retrieveDies) return Effect.die(new Error("store exploded"));
      const content = boxOf(user).get(uid);
      return content === undefined ? Effect.fail(new NoSuchMessage({ user, uid })) : Effect.succeed(content);
    },
    remove: (user, uids) => {
      if (faults.removeFails) return Effect.fail(unavailable(user));
      removeCalls.push({ user, uids });
      for (const uid of uids) boxOf(user).delete(uid);
      return Effect.void;
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
  setup: { faults?: MaildropFaults; idleTimeoutMs?: number },
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
    ...(setup.idleTimeoutMs !== undefined && { idleTimeoutMs: setup.idleTimeoutMs }),
    log: (fields) => {
      entries.push(fields);
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
import base64, json, poplib, sys
host, port, user, password = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
steps = json.loads(sys.argv[5])
text = lambda b: b.decode("latin-1")
out = []
try:
    box = poplib.POP3(host, port, timeout=10)
    out.append(["welcome", text(box.getwelcome())])
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

const poplib = async (port: number, user: string, password: string, steps: ReadonlyArray<PoplibStep>) => {
  const { stdout } = await run(
    "python3",
    ["-c", POPLIB_SCRIPT, "127.0.0.1", String(port), user, password, JSON.stringify(steps)],
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
      ["capa", ["AUTH-RESP-CODE", "RESP-CODES", "TOP", "UIDL", "USER"]],
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
    assert.deepEqual(maildrop.removeCalls, [{ user: "alice@example.test", uids: ["a-2"] }]);

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
    assert.deepEqual(maildrop.removeCalls, []);
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

interface RawSession {
  readonly send: (text: string | Buffer) => void;
  /** The next `count` reply lines, without their CRLF. */
  readonly lines: (count: number) => Promise<string[]>;
  /** Resolves when the server closes the connection; yields what arrived but was not read. */
  readonly closed: Promise<string>;
  readonly socket: net.Socket;
}

const connectRaw = async (port: number): Promise<RawSession> => {
  const socket = net.connect(port, "127.0.0.1");
  let received = "";
  let wake = () => {};
  socket.on("data", (chunk: Buffer) => {
    received += chunk.toString("latin1");
    wake();
  });
  const closed = new Promise<string>((resolve) => socket.on("close", () => resolve(received)));
  socket.on("close", () => wake());
  const lines = async (count: number): Promise<string[]> => {
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
  await new Promise<void>((resolve, reject) => socket.once("connect", resolve).once("error", reject));
  return { send: (text) => socket.write(text), lines, closed, socket };
};

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
    assert.deepEqual(await session.lines(10), [
      "+OK pop.example.test POP3 ready",
      "+OK capability list follows",
      "USER",
      "UIDL",
      "TOP",
      "RESP-CODES",
      "AUTH-RESP-CODE",
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
    await logged((fields) => fields.event === "close");
    assert.deepEqual(maildrop.removeCalls, []);
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
  withServer({ faults: { listFails: true } }, async ({ server }) => {
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
  withServer({ faults: { removeFails: true } }, async ({ server, maildrop }) => {
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
    await logged((fields) => fields.event === "maildrop-unavailable" && fields.operation === "authenticate");
  }));

test("raw: an idle session is closed silently", () =>
  withServer({ idleTimeoutMs: 150 }, async ({ server, logged }) => {
    const session = await loginRaw(server.port);
    session.send("DELE 1\r\n");
    assert.deepEqual(await session.lines(1), ["+OK message 1 deleted"]);
    assert.equal(await session.closed, "", "RFC 1939 §3: no reply on autologout");
    await logged((fields) => fields.event === "idle-timeout");
  }));

test("close() ends open sessions", () =>
  withServer({}, async ({ server }) => {
    const session = await loginRaw(server.port);
    await server.close();
    await session.closed;
  }));
