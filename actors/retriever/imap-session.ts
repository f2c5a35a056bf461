// One IMAP session (RFC 3501 §3 states: not authenticated → authenticated → selected →
// logout): each parsed command is answered here, with mailbox asks through ImapAccess.
// The socket side (framing, TLS, IDLE's wait, timeouts) is imap-server.ts; the wire
// grammar is protocol/imap/. Failures of the mailbox layer become NO/BAD replies with a
// response code, never a crash.
//
// Every ask about the selected folder names the UIDVALIDITY the session selected; when the
// owner refuses it (the folder was deleted, or deleted and made again, so its UIDs name
// other messages or none), RFC 3501 offers no way to take the client out of the selected
// state unasked: the session says BYE and closes, as Dovecot does, and the client
// reconnects and selects again.
import { Cause, Effect, Exit, Fiber, Result, Semaphore } from "effect";
import { describeBad, type FetchItem, type ImapCommand } from "../../protocol/imap/command.ts";
import { applyPartial, bodyStructure, envelope, sectionBytes, sectionName, type MimePart } from "../../protocol/imap/mime.ts";
import { listPattern } from "../../protocol/imap/list-pattern.ts";
import { lsubEntries } from "../../protocol/imap/lsub.ts";
import { internalDate, mailboxName, uidSet } from "../../protocol/imap/response.ts";
import type { Parsed } from "../../protocol/imap/parse.ts";
import { decodeSaslPlain, SASL_CANCEL, type LoginOutcome } from "../../protocol/pop3.ts";
import type { MailboxError, MessageInfo, RequestOf } from "../../protocol/mailbox.ts";
import { waitDelay, type LoginThrottle } from "../users/login-throttle.ts";
import type { ImapAccess } from "./imap-access.ts";
import { flagsOf, matches, modSeqOf, needsBody, resolveSet, syncView, usesModSeq, viewOf, type SelectedView } from "./imap-view.ts";
import type { Log } from "../../protocol/log.ts";

export interface ImapSessionConfig {
  readonly hostname: string;
  readonly access: ImapAccess;
  readonly throttle: LoginThrottle;
  readonly failureDelayMs: number;
  readonly maxFailuresPerConnection: number;
  readonly mimeTree: (hash: string, body: Uint8Array) => Promise<MimePart>;
  readonly onLogin?: (outcome: LoginOutcome) => void;
  /**
   * Starts IDLE's resyncs, which run beside the commands (a change notice is no command):
   * with the server's services, so they see the node's Clock and logger like the rest.
   */
  readonly fork: <A, E>(effect: Effect.Effect<A, E>) => Fiber.Fiber<A, E>;
}

export interface ImapConnection {
  readonly remoteAddress: string;
  readonly secure: () => boolean;
  readonly tlsAvailable: boolean;
  readonly plaintextLoginAllowed: boolean;
  /** Completes when the client has gone. */
  readonly left: Effect.Effect<void>;
  readonly write: (data: string | Buffer) => void;
  /**
   * Waits until what was written has gone out far enough to write more (the socket's
   * 'drain' when its buffer is full); false once the client has gone. Loops that write
   * a response per message wait on it, so a slow reader never makes the server hold a
   * whole mailbox in memory.
   */
  readonly writable: Effect.Effect<boolean>;
  /** Ends the connection once what was written has gone out (after a BYE the session wrote unasked). */
  readonly close: () => void;
  /** Lines about this connection (protocol, conn and client are added). */
  readonly log: Log;
}

/** What the server does after a command: go on, start TLS, wait for IDLE's DONE or a SASL line, or close. */
export type After = "continue" | "starttls" | "idle" | "sasl" | "close";

export type State =
  | { readonly phase: "unauthenticated"; readonly failures: number }
  | { readonly phase: "authenticated"; readonly user: string }
  | { readonly phase: "selected"; readonly user: string; readonly view: SelectedView }
  | { readonly phase: "logout" };

const CAPABILITIES = ["IMAP4rev1", "LITERAL+", "SASL-IR", "IDLE", "UIDPLUS", "MOVE", "NAMESPACE", "ID", "ENABLE", "UNSELECT", "SPECIAL-USE", "CHILDREN", "CONDSTORE"];

const SPECIAL_USE: Record<string, string> = { sent: "\\Sent", "sent items": "\\Sent", drafts: "\\Drafts", trash: "\\Trash", junk: "\\Junk", spam: "\\Junk", archive: "\\Archive" };

const PERMANENT_FLAGS = "(\\Answered \\Flagged \\Deleted \\Seen \\Draft \\*)";

export interface ImapSession {
  readonly state: () => State;
  readonly capabilities: () => string;
  /** Answers one parsed command; resolves to what the server should do next. */
  readonly handle: (parsed: Parsed) => Effect.Effect<After>;
  /** A line while a SASL exchange waits for the client's response. */
  readonly saslLine: (line: string) => Effect.Effect<After>;
  /** IDLE's end (DONE) or anything else the client sent while idling. */
  readonly idleLine: (line: string) => Effect.Effect<After>;
  /** The mailbox changed (a notice from the owner): while idling, report it now. */
  readonly changed: () => Effect.Effect<void>;
  readonly end: () => void;
}

type Attempt<A> = { readonly _tag: "Ok"; readonly value: A } | { readonly _tag: "Failed"; readonly error: MailboxError | undefined; readonly detail: string };

/** A mailbox ask with its failure (or a defect) as a value. */
const attempt = <A>(effect: Effect.Effect<A, MailboxError>): Effect.Effect<Attempt<A>> =>
  Effect.map(Effect.exit(Effect.suspend(() => effect)), (exit): Attempt<A> => {
    if (Exit.isSuccess(exit)) return { _tag: "Ok", value: exit.value };
    const error = Cause.findError(exit.cause);
    if (Result.isFailure(error)) return { _tag: "Failed", error: undefined, detail: Cause.pretty(exit.cause) };
    return { _tag: "Failed", error: error.success, detail: error.success._tag };
  });

export const makeImapSession = (config: ImapSessionConfig, connection: ImapConnection): ImapSession => {
  let state: State = { phase: "unauthenticated", failures: 0 };
  /**
   * The connection is over: a command still running when it ended must not bring the
   * session back to life (a state change, or a change-notice subscription nobody ends).
   */
  let ended = false;
  const setState = (next: State) => {
    if (!ended) state = next;
  };
  let saslTag: string | undefined;
  let idleTag: string | undefined;
  let stopWatching = () => {};
  /** A change notice arrived since the selected view was last brought up to date. */
  let dirty = false;
  /**
   * CONDSTORE is on for the rest of the connection once the client used it (RFC 7162 §3.1:
   * SELECT (CONDSTORE), ENABLE, FETCH MODSEQ/CHANGEDSINCE, STORE UNCHANGEDSINCE, SEARCH
   * MODSEQ, STATUS HIGHESTMODSEQ): from then on untagged FETCHes of flags carry UID and MODSEQ.
   */
  let condstore = false;
  /** The session said BYE on its own (its selected folder is gone): nothing more is written, the connection closes. */
  let closing = false;
  const { access } = config;
  const write = (data: string | Buffer) => {
    if (!closing) connection.write(data);
  };

  const capabilities = () => {
    const caps = [...CAPABILITIES];
    if (!connection.secure() && connection.tlsAvailable) caps.push("STARTTLS");
    if (state.phase === "unauthenticated" && !connection.secure() && !connection.plaintextLoginAllowed) caps.push("LOGINDISABLED");
    else if (state.phase === "unauthenticated") caps.push("AUTH=PLAIN");
    return caps.join(" ");
  };

  const tagged = (tag: string, status: "OK" | "NO" | "BAD", text: string) => write(`${tag} ${status} ${text}\r\n`);

  /** A mailbox failure as the tagged NO it deserves. */
  const failed = (tag: string, failure: Extract<Attempt<unknown>, { _tag: "Failed" }>, operation: string) => {
    switch (failure.error?._tag) {
      case "NoSuchFolder":
        return tagged(tag, "NO", "[NONEXISTENT] no such mailbox");
      case "FolderExists":
        return tagged(tag, "NO", "[ALREADYEXISTS] mailbox already exists");
      case "OverQuota":
        return tagged(tag, "NO", "[OVERQUOTA] mailbox is full");
      case "NoSuchMessage":
        return tagged(tag, "NO", "message no longer exists");
      default:
        connection.log("imap.mailbox.unavailable", { level: "warn", operation, error: failure.detail });
        return tagged(tag, "NO", "[UNAVAILABLE] mailbox temporarily unavailable, try again later");
    }
  };

  // -- logging in -------------------------------------------------------------

  const plaintextRefused = (tag: string): Effect.Effect<After> => {
    config.onLogin?.("plaintext-refused");
    tagged(tag, "NO", "[PRIVACYREQUIRED] plaintext login is not allowed on this connection: use STARTTLS first");
    return Effect.succeed("continue");
  };

  const logIn = (tag: string, login: string, authenticate: () => Effect.Effect<string | null>): Effect.Effect<After> =>
    Effect.gen(function* () {
      if (state.phase !== "unauthenticated") return (tagged(tag, "BAD", "already logged in"), "continue" as const);
      const failures = state.failures;
      const verdict = config.throttle.check(login, connection.remoteAddress);
      if (verdict._tag === "Refused") {
        connection.log("auth.throttled", { user: verdict.account, limit: verdict.limit });
        config.onLogin?.("throttled");
        yield* Effect.sleep(config.failureDelayMs);
        tagged(tag, "NO", "[UNAVAILABLE] too many failed logins, try again later");
        return "continue" as const;
      }
      if (verdict.delayMs > 0) connection.log("auth.delayed", { user: verdict.account, delayMs: verdict.delayMs });
      if ((yield* waitDelay(verdict, connection.left)) === "client-left") {
        connection.log("auth.abandoned", { user: verdict.account });
        config.onLogin?.("abandoned");
        return "close" as const;
      }
      const user = yield* authenticate();
      if (user === null) {
        config.onLogin?.("failed");
        connection.log("auth.failed", { user: login });
        yield* Effect.sleep(config.failureDelayMs);
        tagged(tag, "NO", "[AUTHENTICATIONFAILED] invalid user name or password");
        if (failures + 1 >= config.maxFailuresPerConnection) {
          write("* BYE too many failed logins\r\n");
          return "close" as const;
        }
        setState({ phase: "unauthenticated", failures: failures + 1 });
        return "continue" as const;
      }
      config.throttle.succeeded(verdict);
      config.onLogin?.("ok");
      connection.log("auth.succeeded", { user, tls: connection.secure() });
      setState({ phase: "authenticated", user });
      tagged(tag, "OK", `[CAPABILITY ${capabilities()}] logged in`);
      return "continue" as const;
    });

  const plainLogin = (tag: string, response: string): Effect.Effect<After> => {
    const plain = decodeSaslPlain(response);
    if (typeof plain === "string") return (tagged(tag, "BAD", plain), Effect.succeed("continue"));
    const proxying = plain.authzid !== "" && plain.authzid.toLowerCase() !== plain.authcid.toLowerCase();
    return logIn(tag, plain.authcid, proxying ? () => Effect.succeed(null) : () => access.authenticate(plain.authcid, plain.password));
  };

  // -- selected folder --------------------------------------------------------

  const user = (): string => (state.phase === "authenticated" || state.phase === "selected" ? state.user : "");

  /** The selected folder was deleted or made anew: BYE, and the connection closes after this command. */
  const selectedGone = (detail: string) => {
    if (closing) return;
    connection.log("imap.selected-folder.gone", { user: user(), error: detail });
    write("* BYE selected mailbox was deleted or recreated (UIDVALIDITY changed), select it again\r\n");
    closing = true;
    setState({ phase: "logout" });
  };

  /**
   * An ask about the selected folder: it names the UIDVALIDITY selected, and a refusal
   * because the folder is gone or was made anew ends the session (selectedGone).
   * `isSource` tells which NoSuchFolder is the selected folder's (COPY's target may be missing).
   */
  const onSelected = <A>(view: SelectedView, effect: Effect.Effect<A, MailboxError>, isSource = (_folder: string) => true): Effect.Effect<Attempt<A>> =>
    Effect.tap(attempt(effect), (result) =>
      Effect.sync(() => {
        if (result._tag !== "Failed") return;
        const error = result.error;
        if (error?._tag === "UidValidityChanged" || (error?._tag === "NoSuchFolder" && isSource(error.folder)))
          selectedGone(`${error._tag} ${view.folder} ${view.uidValidity}`);
      }));

  const select = (tag: string, mailbox: string, readOnly: boolean, withCondstore: boolean): Effect.Effect<After> =>
    Effect.gen(function* () {
      if (withCondstore) condstore = true;
      if (state.phase === "selected") {
        write("* OK [CLOSED] previous mailbox closed\r\n");
        setState({ phase: "authenticated", user: state.user });
      }
      // SELECT takes the messages nobody was told of yet as this session's \Recent ones; EXAMINE only looks.
      const viewed = yield* attempt(access.call("view", { user: user(), folder: mailbox, claimRecent: !readOnly }));
      if (viewed._tag === "Failed") return (failed(tag, viewed, "select"), "continue" as const);
      const { folder, messages, recent } = viewed.value.value;
      const view = viewOf(folder, messages, readOnly, recent);
      const firstUnseen = messages.findIndex((message) => !message.flags.includes("\\Seen"));
      write(
        [
          `* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)`,
          `* ${messages.length} EXISTS`,
          `* ${view.recent.size} RECENT`,
          ...(firstUnseen >= 0 ? [`* OK [UNSEEN ${firstUnseen + 1}] first unseen`] : []),
          `* OK [UIDVALIDITY ${folder.uidValidity}] UIDs valid`,
          `* OK [UIDNEXT ${folder.uidNext}] predicted next UID`,
          `* OK [HIGHESTMODSEQ ${folder.highestModSeq ?? 1}] highest modification sequence`,
          `* OK [PERMANENTFLAGS ${readOnly ? "()" : PERMANENT_FLAGS}] flags permitted`,
          "",
        ].join("\r\n"),
      );
      setState({ phase: "selected", user: user(), view });
      dirty = false;
      tagged(tag, "OK", `[${readOnly ? "READ-ONLY" : "READ-WRITE"}] ${readOnly ? "EXAMINE" : "SELECT"} completed`);
      return "continue" as const;
    });

  /** Brings the selected view up to date with the owner, writing the untagged updates. */
  const sync = (expunges: boolean): Effect.Effect<void> =>
    Effect.gen(function* () {
      if (state.phase !== "selected") return;
      const current = state;
      const { folder, uidValidity, readOnly } = current.view;
      // A read-write session claims, as \Recent to it, the messages it is the first to hear of.
      const viewed = yield* onSelected(current.view, access.call("view", { user: current.user, folder, uidValidity, claimRecent: !readOnly }));
      if (viewed._tag === "Failed") return;
      dirty = false;
      const { value } = viewed.value;
      const synced = syncView(current.view, value.folder, value.messages, expunges, condstore, value.recent);
      if (synced._tag === "Recreated") return selectedGone(`UIDVALIDITY ${uidValidity} → ${value.folder.uidValidity}`);
      if (synced.lines.length > 0) write(`${synced.lines.join("\r\n")}\r\n`);
      if (state === current) setState({ ...current, view: synced.view });
    });

  const selected = (tag: string): SelectedView | undefined => {
    if (state.phase === "selected") return state.view;
    tagged(tag, "BAD", "no mailbox selected");
    return undefined;
  };

  const bodyOf = (view: SelectedView, message: MessageInfo) =>
    onSelected(view, access.call("body", { user: user(), folder: view.folder, uid: message.uid, uidValidity: view.uidValidity })).pipe(
      Effect.map((got) => (got._tag === "Ok" ? Buffer.from(got.value.attachment ?? new Uint8Array()) : undefined)),
    );

  const fetch = (tag: string, command: Extract<ImapCommand, { _tag: "Fetch" }>): Effect.Effect<After> =>
    Effect.gen(function* () {
      const view = selected(tag);
      if (view === undefined) return "continue" as const;
      if (dirty && command.uid) yield* sync(false);
      if (command.changedSince !== undefined || command.items.some((item) => item._tag === "ModSeq")) condstore = true;
      const items: FetchItem[] = command.uid && !command.items.some((item) => item._tag === "Uid") ? [{ _tag: "Uid" }, ...command.items] : [...command.items];
      // CHANGEDSINCE implies MODSEQ (RFC 7162 §3.1.4.1).
      if (command.changedSince !== undefined && !items.some((item) => item._tag === "ModSeq")) items.push({ _tag: "ModSeq" });
      const wantsBody = items.some((item) => item._tag !== "Flags" && item._tag !== "Uid" && item._tag !== "InternalDate" && item._tag !== "Size" && item._tag !== "ModSeq");
      const marksSeen = !view.readOnly && items.some((item) => (item._tag === "Body" && !item.peek) || (item._tag === "Rfc822" && item.which !== "HEADER"));
      const changedSince = command.changedSince;
      const hits = resolveSet(view, command.set, command.uid).filter((hit) => changedSince === undefined || modSeqOf(hit.message) > changedSince);
      if (marksSeen) {
        const unseen = hits.filter((hit) => !hit.message.flags.includes("\\Seen")).map((hit) => hit.message.uid);
        if (unseen.length > 0) {
          const flagged = yield* onSelected(view, access.call("flags", { user: user(), folder: view.folder, uids: unseen, flags: ["\\Seen"], change: "add", uidValidity: view.uidValidity }));
          if (closing) return "close" as const;
          if (flagged._tag === "Ok") applyFlags(view, flagged.value.value.messages);
          if (!items.some((item) => item._tag === "Flags")) items.push({ _tag: "Flags" });
          if (condstore && !items.some((item) => item._tag === "ModSeq")) items.push({ _tag: "ModSeq" });
        }
      }
      for (const { seq, message: stale } of hits) {
        const message = view.messages[seq - 1] ?? stale;
        const body = wantsBody ? yield* bodyOf(view, message) : undefined;
        if (closing) return "close" as const;
        if (wantsBody && body === undefined) continue; // expunged meanwhile on another session
        const tree = body === undefined ? undefined : yield* Effect.promise(() => config.mimeTree(message.body, body));
        const parts: Array<string | Buffer> = [];
        for (const item of items) parts.push(...fetchItem(item, message, flagsOf(view, message), body, tree));
        write(Buffer.concat([Buffer.from(`* ${seq} FETCH (`), ...joinParts(parts), Buffer.from(")\r\n")]));
        if (!(yield* connection.writable)) return "close" as const;
      }
      tagged(tag, "OK", `${command.uid ? "UID " : ""}FETCH completed`);
      return "continue" as const;
    });

  const store = (tag: string, command: Extract<ImapCommand, { _tag: "Store" }>): Effect.Effect<After> =>
    Effect.gen(function* () {
      const view = selected(tag);
      if (view === undefined) return "continue" as const;
      if (view.readOnly) return (tagged(tag, "NO", "[READ-ONLY] mailbox is read-only"), "continue" as const);
      const hits = resolveSet(view, command.set, command.uid);
      const flags = command.flags.filter((flag) => flag !== "\\Recent");
      const unchangedSince = command.unchangedSince;
      if (unchangedSince !== undefined) condstore = true;
      const before = new Map(hits.map((hit) => [hit.message.uid, modSeqOf(hit.message)]));
      const stored = yield* onSelected(
        view,
        access.call("flags", {
          user: user(),
          folder: view.folder,
          uids: hits.map((hit) => hit.message.uid),
          flags,
          change: command.mode,
          ...(unchangedSince !== undefined && { unchangedSince }),
          uidValidity: view.uidValidity,
        }),
      );
      if (stored._tag === "Failed") return (failed(tag, stored, "store"), "continue" as const);
      applyFlags(view, stored.value.value.messages);
      const modified = new Set(stored.value.value.modified ?? []);
      for (const { seq } of hits) {
        const message = view.messages[seq - 1];
        if (message === undefined || modified.has(message.uid)) continue;
        const uid = command.uid || condstore ? `UID ${message.uid} ` : "";
        const modSeq = condstore ? ` MODSEQ (${modSeqOf(message)})` : "";
        if (!(yield* connection.writable)) return "close" as const;
        if (!command.silent) write(`* ${seq} FETCH (${uid}FLAGS (${flagsOf(view, message).join(" ")})${modSeq})\r\n`);
        // Under CONDSTORE a client learns each new MODSEQ even from .SILENT (RFC 7162 §3.1.3).
        else if (condstore && modSeqOf(message) !== before.get(message.uid)) write(`* ${seq} FETCH (${uid.trimEnd()}${modSeq})\r\n`);
      }
      const failedTest = hits.filter((hit) => modified.has(hit.message.uid)).map((hit) => (command.uid ? hit.message.uid : hit.seq));
      const code = failedTest.length > 0 ? `[MODIFIED ${uidSet(failedTest)}] ` : "";
      tagged(tag, "OK", `${code}${command.uid ? "UID " : ""}STORE ${failedTest.length > 0 ? "conditional " : ""}completed`);
      return "continue" as const;
    });

  const search = (tag: string, command: Extract<ImapCommand, { _tag: "Search" }>): Effect.Effect<After> =>
    Effect.gen(function* () {
      const view = selected(tag);
      if (view === undefined) return "continue" as const;
      if (command.charset !== undefined && !["UTF-8", "US-ASCII"].includes(command.charset.toUpperCase()))
        return (tagged(tag, "NO", "[BADCHARSET (UTF-8 US-ASCII)] unsupported charset"), "continue" as const);
      const withBody = needsBody(command.key);
      const byModSeq = usesModSeq(command.key);
      if (byModSeq) condstore = true;
      let highest = 0;
      const found: number[] = [];
      for (const [index, message] of view.messages.entries()) {
        if (withBody && !(yield* connection.writable)) return "close" as const;
        const bytes = withBody ? yield* bodyOf(view, message) : undefined;
        if (closing) return "close" as const;
        if (!matches(command.key, { seq: index + 1, message, bytes }, view)) continue;
        found.push(command.uid ? message.uid : index + 1);
        highest = Math.max(highest, modSeqOf(message));
      }
      // RFC 7162 §3.1.5: a search by MODSEQ also says the highest MODSEQ of what it found.
      const modSeq = byModSeq && found.length > 0 ? ` (MODSEQ ${highest})` : "";
      write(`* SEARCH${found.map((n) => ` ${n}`).join("")}${modSeq}\r\n`);
      tagged(tag, "OK", `${command.uid ? "UID " : ""}SEARCH completed`);
      return "continue" as const;
    });

  const expunge = (tag: string, uids: Extract<ImapCommand, { _tag: "Expunge" }>["uids"], quiet: boolean): Effect.Effect<boolean> =>
    Effect.gen(function* () {
      const view = (state as Extract<State, { phase: "selected" }>).view;
      const allowed = uids === undefined ? undefined : new Set(resolveSet(view, uids, true).map((hit) => hit.message.uid));
      const doomed = view.messages.filter((message) => message.flags.includes("\\Deleted") && (allowed === undefined || allowed.has(message.uid))).map((message) => message.uid);
      if (doomed.length > 0) {
        const removed = yield* onSelected(view, access.call("expunge", { user: user(), folder: view.folder, uids: doomed, uidValidity: view.uidValidity }));
        if (removed._tag === "Failed") return (failed(tag, removed, "expunge"), false);
      }
      if (!quiet) yield* sync(true);
      return true;
    });

  const copy = (tag: string, command: Extract<ImapCommand, { _tag: "Copy" | "Move" }>): Effect.Effect<After> =>
    Effect.gen(function* () {
      const view = selected(tag);
      if (view === undefined) return "continue" as const;
      const move = command._tag === "Move";
      if (move && view.readOnly) return (tagged(tag, "NO", "[READ-ONLY] mailbox is read-only"), "continue" as const);
      const hits = resolveSet(view, command.set, command.uid);
      const copied = yield* onSelected(
        view,
        access.call("copy", { user: user(), from: view.folder, uids: hits.map((hit) => hit.message.uid), to: command.mailbox, move, uidValidity: view.uidValidity }),
        (missing) => sameFolder(missing, view.folder),
      );
      if (copied._tag === "Failed") {
        if (copied.error?._tag === "NoSuchFolder") return (tagged(tag, "NO", "[TRYCREATE] no such mailbox"), "continue" as const);
        return (failed(tag, copied, command._tag.toLowerCase()), "continue" as const);
      }
      const { uidValidity, source, target } = copied.value.value;
      const code = source.length > 0 ? `[COPYUID ${uidValidity} ${uidSet(source)} ${uidSet(target)}] ` : "";
      if (move) {
        if (code) write(`* OK ${code}moved\r\n`);
        yield* sync(true);
        tagged(tag, "OK", `${command.uid ? "UID " : ""}MOVE completed`);
      } else {
        if (sameFolder(command.mailbox, view.folder)) yield* sync(true);
        tagged(tag, "OK", `${code}${command.uid ? "UID " : ""}COPY completed`);
      }
      return "continue" as const;
    });

  // -- folders ------------------------------------------------------------------

  const listFolders = (tag: string, command: Extract<ImapCommand, { _tag: "List" }>): Effect.Effect<After> =>
    Effect.gen(function* () {
      const verb = command.subscribedOnly ? "LSUB" : "LIST";
      if (command.pattern === "") {
        write(`* ${verb} (\\Noselect) "/" ""\r\n`);
        return (tagged(tag, "OK", `${verb} completed`), "continue" as const);
      }
      const listed = yield* attempt(access.call("folders", { user: user() }));
      if (listed._tag === "Failed") return (failed(tag, listed, "list"), "continue" as const);
      const pattern = listPattern(command.reference + command.pattern);
      const names = listed.value.value.folders.map((folder) => folder.name);
      const entries = command.subscribedOnly
        // An owner that keeps no subscriptions (an older node) counts every folder as subscribed.
        ? lsubEntries(pattern, listed.value.value.subscribed ?? names, names).map(({ name, noselect, children }) =>
          ({ name, attributes: [...(noselect ? ["\\Noselect"] : []), children ? "\\HasChildren" : "\\HasNoChildren"] }))
        : names.filter(pattern.matches).map((name) => {
          const children = names.some((other) => other.startsWith(`${name}/`));
          const use = SPECIAL_USE[name.toLowerCase()];
          return { name, attributes: [children ? "\\HasChildren" : "\\HasNoChildren", ...(use ? [use] : [])] };
        });
      for (const { name, attributes } of entries) {
        write(`* ${verb} (${attributes.join(" ")}) "/" ${mailboxName(name)}\r\n`);
        if (!(yield* connection.writable)) return "close" as const;
      }
      tagged(tag, "OK", `${verb} completed`);
      return "continue" as const;
    });

  const status = (tag: string, command: Extract<ImapCommand, { _tag: "Status" }>): Effect.Effect<After> =>
    Effect.gen(function* () {
      const listed = yield* attempt(access.call("folders", { user: user() }));
      if (listed._tag === "Failed") return (failed(tag, listed, "status"), "continue" as const);
      const folder = listed.value.value.folders.find((candidate) => sameFolder(candidate.name, command.mailbox));
      if (folder === undefined) return (tagged(tag, "NO", "[NONEXISTENT] no such mailbox"), "continue" as const);
      const values: Record<string, number> = {
        MESSAGES: folder.messages, RECENT: folder.recent ?? 0, UIDNEXT: folder.uidNext, UIDVALIDITY: folder.uidValidity, UNSEEN: folder.unseen, SIZE: folder.bytes,
        HIGHESTMODSEQ: folder.highestModSeq ?? 1,
      };
      if (command.items.includes("HIGHESTMODSEQ")) condstore = true;
      const items = command.items.map((item) => `${item} ${values[item]}`);
      write(`* STATUS ${mailboxName(folder.name)} (${items.join(" ")})\r\n`);
      tagged(tag, "OK", "STATUS completed");
      return "continue" as const;
    });

  const folderAction = (tag: string, folder: string, action: RequestOf<"folder">["action"], to?: string): Effect.Effect<After> =>
    Effect.gen(function* () {
      const name = folder.endsWith("/") ? folder.slice(0, -1) : folder;
      if ((action === "create" || action === "delete") && sameFolder(name, "INBOX"))
        return (tagged(tag, "NO", "[CANNOT] INBOX cannot be created or deleted"), "continue" as const);
      if (name === "" || (to !== undefined && to === "")) return (tagged(tag, "NO", "[CANNOT] empty mailbox name"), "continue" as const);
      const done = yield* attempt(access.call("folder", { user: user(), folder: name, action, ...(to !== undefined && { to }) }));
      if (done._tag === "Failed") return (failed(tag, done, action), "continue" as const);
      tagged(tag, "OK", `${action.toUpperCase()} completed`);
      return "continue" as const;
    });

  const append = (tag: string, command: Extract<ImapCommand, { _tag: "Append" }>): Effect.Effect<After> =>
    Effect.gen(function* () {
      const flags = command.flags.filter((flag) => flag !== "\\Recent");
      const stored = yield* attempt(
        access.call("append", { user: user(), folder: command.mailbox, flags, ...(command.date !== undefined && { internalDate: command.date }) }, command.message),
      );
      if (stored._tag === "Failed") {
        if (stored.error?._tag === "NoSuchFolder") return (tagged(tag, "NO", "[TRYCREATE] no such mailbox"), "continue" as const);
        return (failed(tag, stored, "append"), "continue" as const);
      }
      if (state.phase === "selected" && sameFolder(state.view.folder, command.mailbox)) yield* sync(true);
      tagged(tag, "OK", `[APPENDUID ${stored.value.value.uidValidity} ${stored.value.value.uid}] APPEND completed`);
      return "continue" as const;
    });

  // -- dispatch -----------------------------------------------------------------

  const anyState = (tag: string, command: ImapCommand): Effect.Effect<After> | undefined => {
    switch (command._tag) {
      case "Capability":
        write(`* CAPABILITY ${capabilities()}\r\n`);
        return ok(tag, "CAPABILITY completed");
      case "Noop":
        return Effect.flatMap(sync(true), () => ok(tag, "NOOP completed"));
      case "Logout":
        write(`* BYE ${config.hostname} IMAP signing off\r\n`);
        tagged(tag, "OK", "LOGOUT completed");
        setState({ phase: "logout" });
        return Effect.succeed("close");
      case "Id":
        write(`* ID ("name" "Tern")\r\n`);
        return ok(tag, "ID completed");
      default:
        return undefined;
    }
  };

  const ok = (tag: string, text: string): Effect.Effect<After> => {
    tagged(tag, "OK", text);
    return Effect.succeed("continue");
  };

  const unauthenticated = (tag: string, command: ImapCommand): Effect.Effect<After> => {
    switch (command._tag) {
      case "StartTls":
        if (connection.secure()) return (tagged(tag, "BAD", "TLS already active"), Effect.succeed("continue"));
        if (!connection.tlsAvailable) return (tagged(tag, "BAD", "STARTTLS not available"), Effect.succeed("continue"));
        tagged(tag, "OK", "begin TLS negotiation now");
        return Effect.succeed("starttls");
      case "Login":
        if (!connection.secure() && !connection.plaintextLoginAllowed) return plaintextRefused(tag);
        return logIn(tag, command.user, () => access.authenticate(command.user, command.password));
      case "Authenticate":
        if (command.mechanism !== "PLAIN") return (tagged(tag, "NO", `unsupported authentication mechanism ${command.mechanism}`), Effect.succeed("continue"));
        if (!connection.secure() && !connection.plaintextLoginAllowed) return plaintextRefused(tag);
        if (command.initialResponse !== undefined) return plainLogin(tag, command.initialResponse);
        saslTag = tag;
        write("+ \r\n");
        return Effect.succeed("sasl");
      default:
        tagged(tag, "BAD", `${command._tag.toUpperCase()} not allowed before login`);
        return Effect.succeed("continue");
    }
  };

  const authenticated = (tag: string, command: ImapCommand): Effect.Effect<After> => {
    switch (command._tag) {
      case "StartTls":
      case "Login":
      case "Authenticate":
        return (tagged(tag, "BAD", "already logged in"), Effect.succeed("continue"));
      case "Select":
        return select(tag, command.mailbox, command.readOnly, command.condstore);
      case "Create":
        return folderAction(tag, command.mailbox, "create");
      case "Delete":
        return folderAction(tag, command.mailbox, "delete");
      case "Rename":
        return folderAction(tag, command.from, "rename", command.to);
      case "Subscribe":
        return folderAction(tag, command.mailbox, "subscribe");
      case "Unsubscribe":
        return folderAction(tag, command.mailbox, "unsubscribe");
      case "List":
        return listFolders(tag, command);
      case "Status":
        return status(tag, command);
      case "Append":
        return append(tag, command);
      case "Namespace":
        write(`* NAMESPACE (("" "/")) NIL NIL\r\n`);
        return ok(tag, "NAMESPACE completed");
      case "Enable": {
        // CONDSTORE is the only capability here that ENABLE turns on (RFC 7162 §3.1); others are ignored.
        const enabling = command.capabilities.some((capability) => capability.toUpperCase() === "CONDSTORE");
        if (enabling) condstore = true;
        write(`* ENABLED${enabling ? " CONDSTORE" : ""}\r\n`);
        return ok(tag, "ENABLE completed");
      }
      case "Idle":
        idleTag = tag;
        write("+ idling\r\n");
        return Effect.as(state.phase === "selected" ? sync(true) : Effect.void, "idle" as const);
      case "Check":
        if (state.phase !== "selected") break;
        return Effect.flatMap(sync(true), () => ok(tag, "CHECK completed"));
      case "Close":
      case "Unselect": {
        if (state.phase !== "selected") break;
        const current = state;
        const close = command._tag === "Close" && !current.view.readOnly ? expunge(tag, undefined, true) : Effect.succeed(true);
        return Effect.flatMap(close, (done) => {
          if (!done) return Effect.succeed("continue" as const);
          setState({ phase: "authenticated", user: current.user });
          return ok(tag, `${command._tag.toUpperCase()} completed`);
        });
      }
      case "Expunge": {
        if (state.phase !== "selected") break;
        if (state.view.readOnly) return (tagged(tag, "NO", "[READ-ONLY] mailbox is read-only"), Effect.succeed("continue"));
        return Effect.flatMap(expunge(tag, command.uids, false), (done) => (done ? ok(tag, "EXPUNGE completed") : Effect.succeed("continue" as const)));
      }
      case "Fetch":
        return fetch(tag, command);
      case "Store":
        return store(tag, command);
      case "Search":
        return search(tag, command);
      case "Copy":
      case "Move":
        return copy(tag, command);
      default:
        break;
    }
    tagged(tag, "BAD", `${command._tag.toUpperCase()} needs a selected mailbox`);
    return Effect.succeed("continue");
  };

  const handle = (parsed: Parsed): Effect.Effect<After> => {
    if (parsed._tag === "Bad") {
      write(`${parsed.tag ?? "*"} BAD ${describeBad(parsed.bad)}\r\n`);
      return Effect.succeed("continue");
    }
    const { tag, command } = parsed;
    const common = anyState(tag, command);
    if (common !== undefined) return common;
    if (state.phase === "unauthenticated") return unauthenticated(tag, command);
    if (state.phase === "logout") return Effect.succeed("close");
    if (state.phase === "authenticated" && stopWatching === noop) watchChanges();
    // Changes another session made are reported before the answer; no EXPUNGE during FETCH/STORE/SEARCH.
    const quietExpunges = command._tag === "Fetch" || command._tag === "Store" || command._tag === "Search";
    const before = dirty && state.phase === "selected" && command._tag !== "Noop" && command._tag !== "Idle" ? sync(!quietExpunges || (command as { uid?: boolean }).uid === true) : Effect.void;
    return Effect.flatMap(before, () => (closing ? Effect.succeed("close" as const) : authenticated(tag, command)));
  };

  const noop = () => {};
  const watchChanges = () => {
    if (ended) return;
    stopWatching = access.watch(user(), () => {
      dirty = true;
      if (idleTag !== undefined) idleResync();
    });
  };
  stopWatching = noop;

  /** Commands and IDLE's resyncs take turns: a resync never interleaves its updates with a command's. */
  const turn = Semaphore.makeUnsafe(1);
  const inTurn = <A>(effect: Effect.Effect<A>): Effect.Effect<A> => turn.withPermits(1)(effect);

  const changedNow = (): Effect.Effect<void> => (idleTag !== undefined && state.phase === "selected" && !ended ? sync(true) : Effect.void);

  /**
   * While idling, a change notice brings the view up to date. Notices come in bursts (a
   * flag change on 500 messages is 500 notices): at most one resync runs at a time, and
   * notices during it only mark one more resync to run after it. Whatever a resync ends
   * with (a failure, a defect) is logged here, never left to reject unhandled; the
   * session's end interrupts one still running.
   */
  let resyncing = false;
  let resyncAgain = false;
  let resync: Fiber.Fiber<void> | undefined;
  const idleResync = () => {
    if (resyncing) {
      resyncAgain = true;
      return;
    }
    resyncing = true;
    const round: Effect.Effect<void> = Effect.suspend(() => {
      resyncAgain = false;
      return inTurn(changedNow());
    }).pipe(Effect.flatMap(() => {
      // The selected folder went while idling: the BYE is written, nobody will send DONE.
      if (closing) return Effect.sync(connection.close);
      return resyncAgain && !ended ? round : Effect.void;
    }));
    resync = config.fork(
      Effect.onExit(round, (exit) =>
        Effect.sync(() => {
          resyncing = false;
          if (Exit.isFailure(exit) && !Cause.hasInterruptsOnly(exit.cause)) connection.log("imap.idle.resync-failed", { level: "warn", error: Cause.pretty(exit.cause) });
        }),
      ),
    );
  };

  return {
    state: () => state,
    capabilities,
    handle: (parsed) => inTurn(Effect.tap(handle(parsed), () => Effect.sync(() => {
      if (state.phase === "authenticated" || state.phase === "selected") {
        if (stopWatching === noop) watchChanges();
      }
    })).pipe(Effect.map((after): After => (closing ? "close" : after)))),
    saslLine: (line) => {
      const tag = saslTag ?? "*";
      saslTag = undefined;
      if (line.trim() === SASL_CANCEL) return (tagged(tag, "BAD", "authentication cancelled"), Effect.succeed("continue"));
      return inTurn(plainLogin(tag, line));
    },
    idleLine: (line) => {
      const tag = idleTag ?? "*";
      idleTag = undefined;
      return inTurn(
        Effect.suspend(() => {
          if (line.trim().toUpperCase() !== "DONE") return (tagged(tag, "BAD", "expected DONE"), Effect.succeed("continue" as const));
          return ok(tag, "IDLE terminated");
        }),
      );
    },
    changed: () => Effect.sync(() => (idleTag !== undefined ? idleResync() : undefined)),
    end: () => {
      ended = true;
      stopWatching();
      stopWatching = noop;
      resync?.interruptUnsafe();
      state = { phase: "logout" };
    },
  };
};

const sameFolder = (a: string, b: string) => (a.toUpperCase() === "INBOX" && b.toUpperCase() === "INBOX") || a === b;

const applyFlags = (view: SelectedView, updates: ReadonlyArray<{ readonly uid: number; readonly flags: ReadonlyArray<string>; readonly modSeq?: number | undefined }>) => {
  const byUid = new Map(updates.map((update) => [update.uid, update]));
  view.messages = view.messages.map((message) => {
    const update = byUid.get(message.uid);
    return update === undefined ? message : { ...message, flags: [...update.flags], modSeq: update.modSeq ?? modSeqOf(message) };
  });
};

/** A FETCH item's response text; bodies as literals. */
const fetchItem = (item: FetchItem, message: MessageInfo, flags: ReadonlyArray<string>, body: Buffer | undefined, tree: MimePart | undefined): Array<string | Buffer> => {
  const literal = (name: string, bytes: Buffer): Array<string | Buffer> => [`${name} {${bytes.length}}\r\n`, bytes];
  const header = (part: MimePart) => (body ?? Buffer.alloc(0)).subarray(part.headerStart, part.bodyStart);
  switch (item._tag) {
    case "Flags":
      return [`FLAGS (${flags.join(" ")})`];
    case "Uid":
      return [`UID ${message.uid}`];
    case "InternalDate":
      return [`INTERNALDATE ${internalDate(message.internalDate)}`];
    case "Size":
      return [`RFC822.SIZE ${message.size}`];
    case "ModSeq":
      return [`MODSEQ (${modSeqOf(message)})`];
    case "Envelope":
      return tree ? [`ENVELOPE ${envelope(header(tree))}`] : [];
    case "BodyStructure":
      return tree ? [`${item.extensible ? "BODYSTRUCTURE" : "BODY"} ${bodyStructure(tree, header, item.extensible)}`] : [];
    case "Body":
      return body && tree ? literal(sectionName(item.section, item.partial), applyPartial(sectionBytes(body, tree, item.section), item.partial)) : [];
    case "Rfc822": {
      if (!body || !tree) return [];
      const section = item.which === "" ? { part: [] } : { part: [], text: item.which };
      return literal(item.which === "" ? "RFC822" : `RFC822.${item.which}`, sectionBytes(body, tree, section));
    }
  }
};

/** FETCH items separated by single spaces. */
const joinParts = (parts: ReadonlyArray<string | Buffer>): Buffer[] => {
  const out: Buffer[] = [];
  let first = true;
  for (let index = 0; index < parts.length; index++) {
    const part = parts[index]!;
    if (typeof part === "string") {
      // A literal's header is followed by its bytes: the space goes before the header only.
      out.push(Buffer.from(`${first ? "" : " "}${part}`));
      first = false;
    } else out.push(part);
  }
  return out;
};
