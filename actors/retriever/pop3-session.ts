// One POP3 session's conversation (RFC 1939 with CAPA, RESP-CODES, STLS and AUTH PLAIN):
// a guard on the session phase, then one handler per verb. No sockets here: the server
// (pop3-server.ts) reads lines, runs `answerLine`, writes the reply, and performs the TLS
// upgrade the outcome asks for. Mailbox work goes through MaildropAccess.
// Everything here is an Effect, so its waits (the pause after a failed login, the lock's
// renewal) run on the Clock of whoever runs it: the socket edge, or TestClock in tests.
import { Cause, Effect, Exit, Result } from "effect";
import {
  byteStuff,
  decodeSaslPlain,
  describeParseError,
  isPop3ParseError,
  parsePop3Command,
  SASL_CANCEL,
  type LoginOutcome,
  type Pop3Command,
} from "../../protocol/pop3.ts";
import { waitDelay, type LoginThrottle } from "../users/login-throttle.ts";
import type { MaildropAccess, MaildropEntry, OpenMaildrop } from "./maildrop.ts";
import type { Log } from "../../protocol/log.ts";

export interface SessionConfig {
  /** Name shown in the greeting and sign-off. */
  readonly hostname: string;
  readonly access: MaildropAccess;
  readonly throttle: LoginThrottle;
  /** Pause before answering a failed login, so guessing over one connection is slow. */
  readonly failureDelayMs: number;
  /** Failed logins after which the connection is closed. */
  readonly maxFailuresPerConnection: number;
  /** Prefix of the lock holder's name (`<node>/pop3/<conn>`). */
  readonly holderPrefix: string;
  readonly onLogin?: (outcome: LoginOutcome) => void;
}

/** What the session knows of its connection; `secure` changes after STLS. */
export interface ConnectionView {
  readonly conn: number;
  readonly remoteAddress: string;
  readonly secure: () => boolean;
  readonly tlsAvailable: boolean;
  /** USER/PASS and AUTH PLAIN send the password as is: only over TLS or from trusted networks. */
  readonly plaintextLoginAllowed: boolean;
  /** Completes when the client's connection has closed: a login waiting out its delay ends then. */
  readonly left: Effect.Effect<void>;
  /** Lines about this connection (protocol, conn and client are added). */
  readonly log: Log;
}

interface MaildropMessage extends MaildropEntry {
  deleted: boolean;
  retrieved: boolean;
}

export type SessionState =
  | { readonly phase: "authorization"; readonly user: string | undefined; readonly failures: number; readonly saslPending: boolean }
  | {
      readonly phase: "transaction";
      readonly user: string;
      readonly maildrop: OpenMaildrop;
      readonly messages: ReadonlyArray<MaildropMessage>;
      /** Set when a renewal found the lock gone: the next command ends the session. */
      lockLost: boolean;
    }
  | { readonly phase: "closed" };

export type TransactionState = Extract<SessionState, { phase: "transaction" }>;

export interface Reply {
  /** Status line (and for multi-line answers, the stuffed body after it). */
  readonly text: string;
  readonly body?: Buffer;
  readonly close?: boolean;
  /** Written in the clear, then the connection turns to TLS (STLS). */
  readonly startTls?: boolean;
}

export interface Outcome {
  readonly reply: Reply;
  readonly next?: SessionState;
}

export const initialState: SessionState = { phase: "authorization", user: undefined, failures: 0, saslPending: false };

const ok = (text: string, body?: Buffer): Reply => ({
  text: text === "" ? "+OK" : `+OK ${printable(text)}`,
  ...(body && { body }),
});
export const err = (text: string): Reply => ({ text: `-ERR ${printable(text)}` });

/** Echoed client input must not smuggle a CR/LF (or other controls) into the reply line. */
const printable = (text: string): string => text.replace(/[\x00-\x1f\x7f]/g, "?");

const multiLine = (lines: ReadonlyArray<string>): Buffer =>
  byteStuff(Buffer.from(lines.map((line) => `${line}\r\n`).join(""), "utf8"));

export const greeting = (config: SessionConfig): Reply => ok(`${config.hostname} POP3 ready`);

/** Answers one line in the session's current state. */
export const answerLine = (state: SessionState, line: string, config: SessionConfig, connection: ConnectionView): Effect.Effect<Outcome> =>
  Effect.suspend(() => {
    if (state.phase === "authorization" && state.saslPending) return saslResponse(state, line, config, connection);
    const parsed = parsePop3Command(line);
    if (isPop3ParseError(parsed)) return answer({ reply: err(describeParseError(parsed)) });
    if (parsed._tag === "Capa") return answer({ reply: ok("capability list follows", multiLine(capabilities(state, connection))) });
    switch (state.phase) {
      case "authorization":
        return authorizationCommand(state, parsed, config, connection);
      case "transaction":
        return state.lockLost ? answer({ reply: { ...lockLostReply(), close: true } }) : transactionCommand(state, parsed, config, connection);
      case "closed":
        return answer({ reply: { ...err("session closed"), close: true } });
    }
  });

const answer = (outcome: Outcome): Effect.Effect<Outcome> => Effect.succeed(outcome);

const capabilities = (state: SessionState, connection: ConnectionView): ReadonlyArray<string> => [
  ...(state.phase === "authorization" && connection.tlsAvailable && !connection.secure() ? ["STLS"] : []),
  ...(canLogIn(connection) ? ["USER", "SASL PLAIN"] : []),
  "TOP",
  "UIDL",
  "RESP-CODES",
  "AUTH-RESP-CODE",
  "PIPELINING",
];

const canLogIn = (connection: ConnectionView) => connection.secure() || connection.plaintextLoginAllowed;

// ---------------------------------------------------------------------------
// AUTHORIZATION

type AuthorizationState = Extract<SessionState, { phase: "authorization" }>;

const authorizationCommand = (state: AuthorizationState, command: Pop3Command, config: SessionConfig, connection: ConnectionView): Effect.Effect<Outcome> => {
  const loginCommand = command._tag === "User" || command._tag === "Pass" || (command._tag === "Auth" && command.mechanism !== undefined);
  if (loginCommand && !canLogIn(connection)) {
    config.onLogin?.("plaintext-refused");
    const hint = connection.tlsAvailable ? ": use STLS first" : "";
    return answer({ reply: err(`[AUTH] plaintext login is not allowed on this connection${hint}`), next: { ...state, user: undefined } });
  }
  switch (command._tag) {
    case "Stls":
      return answer(startTls(connection));
    case "User":
      // Always +OK: telling unknown users apart here would let a client probe for names.
      return answer({ reply: ok("send PASS"), next: { ...state, user: command.name } });
    case "Pass": {
      const login = state.user;
      if (login === undefined) return answer({ reply: err("USER first") });
      // Whatever happens, a new PASS needs a new USER (RFC 1939 §7).
      return logIn({ ...state, user: undefined }, login, () => config.access.authenticate(login, command.password), config, connection);
    }
    case "Auth":
      return auth(state, command, config, connection);
    case "Quit":
      return answer({ reply: { ...ok(`${config.hostname} POP3 signing off`), close: true } });
    default:
      return answer({ reply: err(`${command._tag.toUpperCase()} not allowed before login`) });
  }
};

const startTls = (connection: ConnectionView): Outcome => {
  if (connection.secure()) return { reply: err("TLS already active") };
  if (!connection.tlsAvailable) return { reply: err("STLS not available") };
  return { reply: { ...ok("begin TLS negotiation"), startTls: true } };
};

const auth = (
  state: AuthorizationState,
  command: Extract<Pop3Command, { _tag: "Auth" }>,
  config: SessionConfig,
  connection: ConnectionView,
): Effect.Effect<Outcome> => {
  if (command.mechanism === undefined) return answer({ reply: ok("SASL mechanisms follow", multiLine(["PLAIN"])) });
  if (command.mechanism !== "PLAIN") return answer({ reply: err(`unsupported authentication mechanism ${command.mechanism}`) });
  // RFC 5034 §4: "AUTH PLAIN" without a response gets an empty challenge, "+ ".
  if (command.initialResponse === undefined) return answer({ reply: { text: "+ " }, next: { ...state, user: undefined, saslPending: true } });
  return plainResponse({ ...state, user: undefined }, command.initialResponse, config, connection);
};

const saslResponse = (state: AuthorizationState, line: string, config: SessionConfig, connection: ConnectionView): Effect.Effect<Outcome> => {
  const next: AuthorizationState = { ...state, saslPending: false };
  if (line.trim() === SASL_CANCEL) return answer({ reply: err("authentication cancelled"), next });
  return plainResponse(next, line, config, connection);
};

const plainResponse = (state: AuthorizationState, response: string, config: SessionConfig, connection: ConnectionView): Effect.Effect<Outcome> => {
  const plain = decodeSaslPlain(response);
  if (typeof plain === "string") return answer({ reply: err(plain), next: state });
  // Acting as someone else (a non-empty, different authzid) is not supported: it fails like a wrong password.
  const proxying = plain.authzid !== "" && plain.authzid.toLowerCase() !== plain.authcid.toLowerCase();
  const authenticate = proxying ? () => Effect.succeed(null) : () => config.access.authenticate(plain.authcid, plain.password);
  return logIn(state, plain.authcid, authenticate, config, connection);
};

/**
 * One login attempt: refused over a per-IP or per-(account, IP) limit; otherwise counted
 * as failed at once (taken back if the password is right) and checked after the account's
 * delay, unless the client leaves during the delay: then no password is checked.
 */
const logIn = (
  state: AuthorizationState,
  login: string,
  authenticate: () => Effect.Effect<string | null>,
  config: SessionConfig,
  connection: ConnectionView,
): Effect.Effect<Outcome> =>
  Effect.gen(function* () {
    const attempt = config.throttle.check(login, connection.remoteAddress);
    if (attempt._tag === "Refused") {
      connection.log("auth.throttled", { user: attempt.account, limit: attempt.limit });
      config.onLogin?.("throttled");
      yield* Effect.sleep(config.failureDelayMs);
      return { reply: err("[AUTH] too many failed logins, try again later"), next: state };
    }
    // The account failed often lately (from any IP): answered later, right password or not.
    if (attempt.delayMs > 0) connection.log("auth.delayed", { user: attempt.account, delayMs: attempt.delayMs });
    if ((yield* waitDelay(attempt, connection.left)) === "client-left") {
      connection.log("auth.abandoned", { user: attempt.account });
      config.onLogin?.("abandoned");
      // Nobody reads this reply: the connection is closed.
      return { reply: { ...err("[AUTH] connection closed"), close: true } };
    }
    const authenticated = yield* access(authenticate);
    if (authenticated._tag !== "Success") {
      config.onLogin?.("unavailable");
      return { reply: temporaryFailure(connection, "authenticate", detailOf(authenticated)), next: state };
    }
    if (authenticated.value === null) return yield* failedLogin(state, login, config, connection);
    config.throttle.succeeded(attempt);
    return yield* openMaildrop(state, authenticated.value, config, connection);
  });

/** The password was wrong (already counted by the throttle): answered after the per-connection pause. */
const failedLogin = (state: AuthorizationState, login: string, config: SessionConfig, connection: ConnectionView): Effect.Effect<Outcome> =>
  Effect.gen(function* () {
    config.onLogin?.("failed");
    connection.log("auth.failed", { user: login });
    yield* Effect.sleep(config.failureDelayMs);
    const failures = state.failures + 1;
    const reply = err("[AUTH] invalid user name or password");
    return failures >= config.maxFailuresPerConnection ? { reply: { ...reply, close: true } } : { reply, next: { ...state, failures } };
  });

const openMaildrop = (state: AuthorizationState, user: string, config: SessionConfig, connection: ConnectionView): Effect.Effect<Outcome> =>
  Effect.gen(function* () {
    const opened = yield* access(() => config.access.open(user, `${config.holderPrefix}/${connection.conn}`));
    if (opened._tag === "Failure" && opened.error._tag === "MaildropInUse") {
      config.onLogin?.("in-use");
      connection.log("pop3.maildrop.in-use", { user, holder: opened.error.holder });
      return { reply: err("[IN-USE] maildrop already locked"), next: state };
    }
    if (opened._tag !== "Success") {
      config.onLogin?.("unavailable");
      return { reply: temporaryFailure(connection, "open", detailOf(opened)), next: state };
    }
    const maildrop = opened.value;
    const messages = maildrop.messages.map((entry) => ({ uid: entry.uid, size: entry.size, deleted: false, retrieved: false }));
    config.onLogin?.("ok");
    connection.log("auth.succeeded", { user, tls: connection.secure(), messages: messages.length });
    const { count, octets } = totals(messages);
    return {
      reply: ok(`maildrop has ${count} messages (${octets} octets)`),
      next: { phase: "transaction", user, maildrop, messages, lockLost: false } satisfies SessionState,
    };
  });

// ---------------------------------------------------------------------------
// TRANSACTION

const transactionCommand = (state: TransactionState, command: Pop3Command, config: SessionConfig, connection: ConnectionView): Effect.Effect<Outcome> => {
  const replying = (reply: Reply) => answer({ reply });
  switch (command._tag) {
    case "Stat": {
      const { count, octets } = totals(state.messages);
      return replying(ok(`${count} ${octets}`));
    }
    case "List":
      return replying(listing(state.messages, command.msg, (message) => String(message.size)));
    case "Uidl":
      return replying(listing(state.messages, command.msg, (message) => message.uid));
    case "Retr":
      return Effect.map(retrieve(state, command.msg, undefined, connection), (reply) => ({ reply }));
    case "Top":
      return Effect.map(retrieve(state, command.msg, command.lines, connection), (reply) => ({ reply }));
    case "Dele":
      return replying(markDeleted(state.messages, command.msg));
    case "Rset": {
      for (const message of state.messages) message.deleted = false;
      const { count, octets } = totals(state.messages);
      return replying(ok(`maildrop has ${count} messages (${octets} octets)`));
    }
    case "Noop":
      return replying(ok(""));
    case "Quit":
      return update(state, config, connection);
    case "Stls":
      return replying(err("STLS not allowed after login"));
    default:
      return replying(err(`${command._tag.toUpperCase()} not allowed after login`));
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
const listing = (messages: ReadonlyArray<MaildropMessage>, msg: number | undefined, column: (message: MaildropMessage) => string): Reply => {
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

const retrieve = (state: TransactionState, msg: number, topLines: number | undefined, connection: ConnectionView): Effect.Effect<Reply> =>
  Effect.gen(function* () {
    const message = findMessage(state.messages, msg);
    if (isReply(message)) return message;
    const fetched = yield* access(() => state.maildrop.retrieve(message.uid, topLines));
    if (fetched._tag === "Failure" && fetched.error._tag === "NoSuchMessage") return err(`message ${msg} has vanished`);
    if (fetched._tag === "Failure" && fetched.error._tag === "LockLost") return lockLost(state, connection);
    if (fetched._tag !== "Success") return temporaryFailure(connection, "retrieve", detailOf(fetched));
    if (topLines === undefined) message.retrieved = true;
    return ok(topLines === undefined ? `${message.size} octets` : "top of message follows", byteStuff(fetched.value));
  });

/** UPDATE state (RFC 1939 §6): remove what was marked and mark what was read, atomically, then sign off. */
const update = (state: TransactionState, config: SessionConfig, connection: ConnectionView): Effect.Effect<Outcome> =>
  Effect.gen(function* () {
    const remove = state.messages.filter((message) => message.deleted).map((message) => message.uid);
    const seen = state.messages.filter((message) => message.retrieved && !message.deleted).map((message) => message.uid);
    const committed = yield* access(() => state.maildrop.commit({ remove, seen }));
    if (committed._tag === "Failure" && committed.error._tag === "LockLost") return { reply: lockLost(state, connection) };
    if (committed._tag !== "Success") return { reply: { ...temporaryFailure(connection, "commit", detailOf(committed)), close: true } };
    connection.log("pop3.update", { user: state.user, removed: remove.length });
    const left = state.messages.length - remove.length;
    // The commit released the lock: the session is over.
    return { reply: { ...ok(`${config.hostname} POP3 signing off (${left} messages left)`), close: true }, next: { phase: "closed" } satisfies SessionState };
  });

const lockLostReply = () => err("[SYS/TEMP] maildrop lock lost (mailbox node restarted?); nothing was changed, log in again");

const lockLost = (state: TransactionState, connection: ConnectionView): Reply => {
  state.lockLost = true;
  connection.log("pop3.lock.lost", { level: "warn", user: state.user });
  return { ...lockLostReply(), close: true };
};

const temporaryFailure = (connection: ConnectionView, operation: string, detail: string): Reply => {
  connection.log("pop3.maildrop.unavailable", { level: "warn", operation, error: detail });
  return err(`[SYS/TEMP] mailbox temporarily unavailable, try again later`);
};

/**
 * Keeps the maildrop lock's lease alive while the client is idle: renews it every
 * `renewEveryMs` until interrupted (when the session ends) or until the lock is found lost,
 * which marks the state so the next command ends the session.
 */
export const keepLockAlive = (state: TransactionState, connection: ConnectionView): Effect.Effect<void> =>
  Effect.gen(function* () {
    while (!state.lockLost) {
      yield* Effect.sleep(state.maildrop.renewEveryMs);
      const renewed = yield* access(() => state.maildrop.keepAlive());
      if (renewed._tag === "Failure" && renewed.error._tag === "LockLost") state.lockLost = true;
      else if (renewed._tag !== "Success") connection.log("pop3.lock.renewal-failed", { level: "warn", error: detailOf(renewed) });
    }
  });

// ---------------------------------------------------------------------------
// MaildropAccess effects, their failures and defects as values.

type AccessOutcome<A, E> =
  | { readonly _tag: "Success"; readonly value: A }
  | { readonly _tag: "Failure"; readonly error: E }
  | { readonly _tag: "Defect"; readonly detail: string };

const access = <A, E>(ask: () => Effect.Effect<A, E>): Effect.Effect<AccessOutcome<A, E>> =>
  // suspend turns an access method that throws instead of failing into a defect we can answer.
  Effect.map(Effect.exit(Effect.suspend(ask)), (exit): AccessOutcome<A, E> => {
    if (Exit.isSuccess(exit)) return { _tag: "Success", value: exit.value };
    const error = Cause.findError(exit.cause);
    // Defects are bugs or lost peers: the client still gets a temporary -ERR, never a crash.
    if (Result.isFailure(error)) return { _tag: "Defect", detail: Cause.pretty(exit.cause) };
    return { _tag: "Failure", error: error.success };
  });

/** Gives the lock back without UPDATE (the connection dropped); never fails, whatever the access layer does. */
export const releaseMaildrop = (maildrop: OpenMaildrop): Effect.Effect<void> => Effect.asVoid(access(() => maildrop.release()));

const detailOf = (outcome: { readonly _tag: "Failure"; readonly error: { readonly _tag: string; readonly detail?: string } } | { readonly _tag: "Defect"; readonly detail: string }): string => {
  if (outcome._tag === "Defect") return outcome.detail;
  return outcome.error.detail ?? outcome.error._tag;
};
