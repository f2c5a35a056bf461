// POP3 retriever (RFC 1939, with CAPA and response codes from RFC 2449 / RFC 3206).
// One TCP connection = one session: AUTHORIZATION -> TRANSACTION -> UPDATE (on QUIT).
// Wire parsing lives in protocol/pop3.ts; mailbox work is asked of MaildropAccess.
import * as net from "node:net";
import { Cause, Effect, Exit, Result } from "effect";
import {
  byteStuff,
  describeParseError,
  isPop3ParseError,
  parsePop3Command,
  topOfMessage,
  type Pop3Command,
} from "../../protocol/pop3.ts";
import type { MaildropAccess, MaildropEntry, MailboxUnavailable, NoSuchMessage } from "./maildrop.ts";

export interface Pop3ServerOptions {
  readonly host: string;
  readonly port: number;
  /** Name shown in the greeting and sign-off. */
  readonly hostname: string;
  readonly access: MaildropAccess;
  readonly log?: (fields: Record<string, unknown>) => void;
  /** RFC 1939 §3: the autologout timer must be at least 10 minutes; lower only for tests. */
  readonly idleTimeoutMs?: number;
}

export interface Pop3Server {
  /** The port actually bound (useful when started on port 0). */
  readonly port: number;
  /** Stops listening and ends open sessions without entering UPDATE. */
  readonly close: () => Promise<void>;
}

const DEFAULT_IDLE_TIMEOUT_MS = 10 * 60 * 1000;
/** Far above any legal command (255 octets); a peer sending more is not speaking POP3. */
const MAX_BUFFERED_LINE_OCTETS = 8192;

export const startPop3Server = async (options: Pop3ServerOptions): Promise<Pop3Server> => {
  const sockets = new Set<net.Socket>();
  const locks = new Set<string>();
  let connectionCount = 0;
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
    runSession(socket, { ...options, conn: ++connectionCount, locks });
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(options.port, options.host, () => {
      server.off("error", reject);
      resolve();
    });
  });
  const address = server.address() as net.AddressInfo;
  let closing: Promise<void> | undefined;
  const close = () =>
    (closing ??= new Promise<void>((resolve) => {
      server.close(() => resolve());
      for (const socket of sockets) socket.destroy();
    }));
  return { port: address.port, close };
};

// ---------------------------------------------------------------------------
// Session

interface SessionContext extends Pop3ServerOptions {
  readonly conn: number;
  /** RFC 1939 §4: exclusive access to a maildrop, per user, within this server. */
  readonly locks: Set<string>;
}

interface MaildropMessage extends MaildropEntry {
  deleted: boolean;
}

type SessionState =
  | { readonly phase: "authorization"; readonly user: string | undefined }
  | { readonly phase: "transaction"; readonly user: string; readonly messages: ReadonlyArray<MaildropMessage> }
  | { readonly phase: "closed" };

interface Reply {
  /** Status line (and for multi-line answers, the stuffed body after it). */
  readonly text: string;
  readonly body?: Buffer;
  readonly close?: boolean;
}

const runSession = (socket: net.Socket, context: SessionContext): void => {
  let state: SessionState = { phase: "authorization", user: undefined };
  const log = (fields: Record<string, unknown>) => context.log?.({ actor: "pop3", conn: context.conn, ...fields });
  const releaseLock = () => {
    if (state.phase === "transaction") context.locks.delete(state.user);
  };

  socket.setTimeout(context.idleTimeoutMs ?? DEFAULT_IDLE_TIMEOUT_MS);
  // RFC 1939 §3: on autologout, close without UPDATE and without a reply.
  socket.on("timeout", () => {
    log({ event: "idle-timeout" });
    socket.destroy();
  });
  socket.on("error", (error) => log({ event: "socket-error", detail: error.message }));
  socket.on("close", () => {
    // A dropped session never reaches UPDATE: DELE marks are simply forgotten.
    releaseLock();
    state = { phase: "closed" };
    log({ event: "close" });
  });

  const handleLine = async (line: string): Promise<boolean> => {
    const reply = await answer(line);
    await writeReply(socket, reply);
    if (reply.close) {
      releaseLock();
      state = { phase: "closed" };
      socket.end();
    }
    return !reply.close;
  };

  const answer = async (line: string): Promise<Reply> => {
    const parsed = parsePop3Command(line);
    if (isPop3ParseError(parsed)) return err(describeParseError(parsed));
    const outcome = await dispatch(state, parsed, context, log);
    if (state.phase === "closed") {
      // The peer left while the maildrop was being asked: undo a login that raced the drop.
      if (outcome.next?.phase === "transaction") context.locks.delete(outcome.next.user);
      return outcome.reply;
    }
    if (outcome.next !== undefined) state = outcome.next;
    return outcome.reply;
  };

  log({ event: "connect", remote: socket.remoteAddress });
  void writeReply(socket, ok(`${context.hostname} POP3 ready`));
  readLines(socket, handleLine, (error) => {
    // A bug in this session (or a MaildropAccess that throws) ends this connection, not the server.
    log({ event: "session-defect", detail: String(error) });
    socket.destroy();
  });
};

// ---------------------------------------------------------------------------
// Line reading: pipelined commands are answered strictly one after another.

const readLines = (
  socket: net.Socket,
  handleLine: (line: string) => Promise<boolean>,
  onDefect: (error: unknown) => void,
): void => {
  let pending: Buffer = Buffer.alloc(0);
  const drain = async (): Promise<void> => {
    let lf: number;
    while ((lf = pending.indexOf(0x0a)) !== -1) {
      const raw = pending.subarray(0, lf);
      pending = pending.subarray(lf + 1);
      if (raw.length > MAX_BUFFERED_LINE_OCTETS) return refuseOverlong(socket);
      if (!(await handleLine(stripCr(raw).toString("utf8")))) return;
    }
    if (pending.length > MAX_BUFFERED_LINE_OCTETS) return refuseOverlong(socket);
    if (!socket.destroyed) socket.resume();
  };
  socket.on("data", (chunk: Buffer) => {
    // Reading pauses while commands run, so a flood of pipelined input waits in the kernel.
    socket.pause();
    pending = pending.length === 0 ? chunk : Buffer.concat([pending, chunk]);
    drain().catch(onDefect);
  });
};

const stripCr = (line: Buffer): Buffer => (line.at(-1) === 0x0d ? line.subarray(0, -1) : line);

const refuseOverlong = async (socket: net.Socket): Promise<void> => {
  await writeReply(socket, err("line too long"));
  socket.destroy();
};

const writeReply = (socket: net.Socket, reply: Reply): Promise<void> => {
  if (socket.destroyed || !socket.writable) return Promise.resolve();
  const status = Buffer.from(`${reply.text}\r\n`, "utf8");
  const bytes = reply.body === undefined ? status : Buffer.concat([status, reply.body]);
  return new Promise<void>((resolve) => {
    // Waiting for the write callback keeps a large RETR from piling up in memory.
    socket.write(bytes, () => resolve());
  });
};

const ok = (text: string, body?: Buffer): Reply => ({
  text: text === "" ? "+OK" : `+OK ${printable(text)}`,
  ...(body && { body }),
});
const err = (text: string): Reply => ({ text: `-ERR ${printable(text)}` });

/** Echoed client input must not smuggle a CR/LF (or other controls) into the reply line. */
const printable = (text: string): string => text.replace(/[\x00-\x1f\x7f]/g, "?");

const multiLine = (lines: ReadonlyArray<string>): Buffer =>
  byteStuff(Buffer.from(lines.map((line) => `${line}\r\n`).join(""), "utf8"));

// ---------------------------------------------------------------------------
// Commands: a guard on the session phase, then one handler per verb.

interface Outcome {
  readonly reply: Reply;
  readonly next?: SessionState;
}

type Log = (fields: Record<string, unknown>) => void;

const dispatch = async (
  state: SessionState,
  command: Pop3Command,
  context: SessionContext,
  log: Log,
): Promise<Outcome> => {
  if (command._tag === "Capa") return { reply: ok("capability list follows", multiLine(CAPABILITIES)) };
  switch (state.phase) {
    case "authorization":
      return authorizationCommand(state.user, command, context, log);
    case "transaction":
      return transactionCommand(state, command, context, log);
    case "closed":
      return { reply: { ...err("session closed"), close: true } };
  }
};

const CAPABILITIES = ["USER", "UIDL", "TOP", "RESP-CODES", "AUTH-RESP-CODE"];

const authorizationCommand = async (
  pendingUser: string | undefined,
  command: Pop3Command,
  context: SessionContext,
  log: Log,
): Promise<Outcome> => {
  switch (command._tag) {
    case "User":
      // Always +OK: telling unknown users apart here would let a client probe for names.
      return { reply: ok("send PASS"), next: { phase: "authorization", user: command.name } };
    case "Pass":
      if (pendingUser === undefined) return { reply: err("USER first") };
      return login(pendingUser, command.password, context, log);
    case "Quit":
      return { reply: { ...ok(`${context.hostname} POP3 signing off`), close: true } };
    default:
      return { reply: err(`${command._tag.toUpperCase()} not allowed before login`) };
  }
};

const login = async (user: string, password: string, context: SessionContext, log: Log): Promise<Outcome> => {
  // Whatever happens, a new PASS needs a new USER (RFC 1939 §7).
  const restart: SessionState = { phase: "authorization", user: undefined };
  const authenticated = await runAccess(() => context.access.authenticate(user, password));
  if (authenticated._tag !== "Success") {
    return { reply: temporaryFailure(log, "authenticate", detailOf(authenticated)), next: restart };
  }
  const mailbox = authenticated.value;
  if (mailbox === null) {
    log({ event: "login-failed", user });
    return { reply: err("[AUTH] invalid user name or password"), next: restart };
  }
  if (context.locks.has(mailbox)) return { reply: err("[IN-USE] maildrop already locked"), next: restart };
  // Taken before listing, so two sessions logging in at once cannot both get the maildrop.
  context.locks.add(mailbox);
  const listing = await runAccess(() => context.access.list(mailbox));
  if (listing._tag !== "Success") {
    context.locks.delete(mailbox);
    return { reply: temporaryFailure(log, "list", detailOf(listing)), next: restart };
  }
  const messages = listing.value.map((entry) => ({ uid: entry.uid, size: entry.size, deleted: false }));
  log({ event: "login", user: mailbox, messages: messages.length });
  const { count, octets } = totals(messages);
  return {
    reply: ok(`maildrop has ${count} messages (${octets} octets)`),
    next: { phase: "transaction", user: mailbox, messages },
  };
};

type TransactionState = Extract<SessionState, { phase: "transaction" }>;

const transactionCommand = async (
  state: TransactionState,
  command: Pop3Command,
  context: SessionContext,
  log: Log,
): Promise<Outcome> => {
  switch (command._tag) {
    case "Stat": {
      const { count, octets } = totals(state.messages);
      return { reply: ok(`${count} ${octets}`) };
    }
    case "List":
      return { reply: listing(state.messages, command.msg, (message) => String(message.size)) };
    case "Uidl":
      return { reply: listing(state.messages, command.msg, (message) => message.uid) };
    case "Retr":
      return { reply: await retrieve(state, command.msg, undefined, context, log) };
    case "Top":
      return { reply: await retrieve(state, command.msg, command.lines, context, log) };
    case "Dele":
      return { reply: markDeleted(state.messages, command.msg) };
    case "Rset": {
      for (const message of state.messages) message.deleted = false;
      const { count, octets } = totals(state.messages);
      return { reply: ok(`maildrop has ${count} messages (${octets} octets)`) };
    }
    case "Noop":
      return { reply: ok("") };
    case "Quit":
      return { reply: await update(state, context, log) };
    default:
      return { reply: err(`${command._tag.toUpperCase()} not allowed after login`) };
  }
};

const totals = (messages: ReadonlyArray<MaildropMessage>): { count: number; octets: number } => {
  const kept = messages.filter((message) => !message.deleted);
  return { count: kept.length, octets: kept.reduce((sum, message) => sum + message.size, 0) };
};

/** The live message numbered `msg`, or the -ERR explaining why there is none. */
const findMessage = (messages: ReadonlyArray<MaildropMessage>, msg: number): MaildropMessage | Reply => {
  const message = messages[msg - 1];
  if (message === undefined) return err("no such message");
  if (message.deleted) return err(`message ${msg} already deleted`);
  return message;
};

const isReply = (value: MaildropMessage | Reply): value is Reply => "text" in value;

/** LIST and UIDL: one message on the status line, or every live message as a multi-line answer. */
const listing = (
  messages: ReadonlyArray<MaildropMessage>,
  msg: number | undefined,
  column: (message: MaildropMessage) => string,
): Reply => {
  if (msg !== undefined) {
    const message = findMessage(messages, msg);
    return isReply(message) ? message : ok(`${msg} ${column(message)}`);
  }
  // Deleted messages keep their numbers; they are only left out (RFC 1939 §5).
  const lines = messages.flatMap((message, index) => (message.deleted ? [] : [`${index + 1} ${column(message)}`]));
  const { count, octets } = totals(messages);
  return ok(`${count} messages (${octets} octets)`, multiLine(lines));
};

const markDeleted = (messages: ReadonlyArray<MaildropMessage>, msg: number): Reply => {
  const message = findMessage(messages, msg);
  if (isReply(message)) return message;
  message.deleted = true;
  return ok(`message ${msg} deleted`);
};

const retrieve = async (
  state: TransactionState,
  msg: number,
  topLines: number | undefined,
  context: SessionContext,
  log: Log,
): Promise<Reply> => {
  const message = findMessage(state.messages, msg);
  if (isReply(message)) return message;
  const fetched = await runAccess(() => context.access.retrieve(state.user, message.uid));
  if (fetched._tag === "Failure" && fetched.error._tag === "NoSuchMessage") return err(`message ${msg} has vanished`);
  if (fetched._tag !== "Success") return temporaryFailure(log, "retrieve", detailOf(fetched));
  const content = topLines === undefined ? fetched.value : topOfMessage(fetched.value, topLines);
  return ok(topLines === undefined ? `${message.size} octets` : "top of message follows", byteStuff(content));
};

/** UPDATE state (RFC 1939 §6): remove what was marked, then sign off either way. */
const update = async (state: TransactionState, context: SessionContext, log: Log): Promise<Reply> => {
  const doomed = state.messages.filter((message) => message.deleted).map((message) => message.uid);
  if (doomed.length > 0) {
    const removed = await runAccess(() => context.access.remove(state.user, doomed));
    if (removed._tag !== "Success") return { ...temporaryFailure(log, "remove", detailOf(removed)), close: true };
  }
  log({ event: "update", user: state.user, removed: doomed.length });
  const left = state.messages.length - doomed.length;
  return { ...ok(`${context.hostname} POP3 signing off (${left} messages left)`), close: true };
};

const temporaryFailure = (log: Log, operation: string, detail: string): Reply => {
  log({ event: "maildrop-unavailable", operation, detail });
  return err(`[SYS/TEMP] mailbox temporarily unavailable, try again later`);
};

// ---------------------------------------------------------------------------
// Running MaildropAccess effects at the socket edge.

type AccessOutcome<A, E> =
  | { readonly _tag: "Success"; readonly value: A }
  | { readonly _tag: "Failure"; readonly error: E }
  | { readonly _tag: "Defect"; readonly detail: string };

const runAccess = async <A, E>(ask: () => Effect.Effect<A, E>): Promise<AccessOutcome<A, E>> => {
  // suspend turns an access method that throws instead of failing into a defect we can answer.
  const exit = await Effect.runPromiseExit(Effect.suspend(ask));
  if (Exit.isSuccess(exit)) return { _tag: "Success", value: exit.value };
  const error = Cause.findError(exit.cause);
  // Defects are bugs or lost peers: the client still gets a temporary -ERR, never a crash.
  if (Result.isFailure(error)) return { _tag: "Defect", detail: Cause.pretty(exit.cause) };
  return { _tag: "Failure", error: error.success };
};

const detailOf = (outcome: AccessFailure): string => {
  if (outcome._tag === "Defect") return outcome.detail;
  return outcome.error._tag === "MailboxUnavailable" ? outcome.error.detail : outcome.error._tag;
};

type AccessFailure =
  | { readonly _tag: "Failure"; readonly error: MailboxUnavailable | NoSuchMessage }
  | { readonly _tag: "Defect"; readonly detail: string };
