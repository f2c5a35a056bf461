// POP3 (RFC 1939) wire format, kept pure: command lines in, command values out,
// and message bodies out as multi-line responses. The server maps commands to maildrop asks.
// Extensions: CAPA (RFC 2449), STLS (RFC 2595), AUTH with SASL PLAIN (RFC 5034, RFC 4616).

// ---------------------------------------------------------------------------
// Commands

export type Pop3Command =
  | { readonly _tag: "User"; readonly name: string }
  | { readonly _tag: "Pass"; readonly password: string }
  | { readonly _tag: "Stat" }
  | { readonly _tag: "List"; readonly msg?: number }
  | { readonly _tag: "Uidl"; readonly msg?: number }
  | { readonly _tag: "Retr"; readonly msg: number }
  | { readonly _tag: "Dele"; readonly msg: number }
  | { readonly _tag: "Rset" }
  | { readonly _tag: "Noop" }
  | { readonly _tag: "Quit" }
  | { readonly _tag: "Capa" }
  | { readonly _tag: "Top"; readonly msg: number; readonly lines: number }
  | { readonly _tag: "Stls" }
  /** No mechanism: list the mechanisms. `initialResponse` is the base64 text as sent ("=" is empty). */
  | { readonly _tag: "Auth"; readonly mechanism?: string; readonly initialResponse?: string };

export type Pop3ParseError =
  | { readonly _tag: "UnknownCommand"; readonly verb: string }
  | { readonly _tag: "MissingArgument"; readonly verb: string }
  | { readonly _tag: "UnexpectedArgument"; readonly verb: string }
  | { readonly _tag: "InvalidMessageNumber"; readonly verb: string; readonly argument: string }
  | { readonly _tag: "InvalidLineCount"; readonly argument: string }
  | { readonly _tag: "LineTooLong"; readonly octets: number };

/**
 * RFC 2449 §4: a command line is at most 255 octets *including* the CRLF,
 * so the line handed to the parser (CRLF already removed) may hold 253.
 */
const MAX_COMMAND_LINE_OCTETS = 253;

export const isPop3ParseError = (value: Pop3Command | Pop3ParseError): value is Pop3ParseError =>
  value._tag in parseErrorTags;

const parseErrorTags: Record<Pop3ParseError["_tag"], true> = {
  UnknownCommand: true,
  MissingArgument: true,
  UnexpectedArgument: true,
  InvalidMessageNumber: true,
  InvalidLineCount: true,
  LineTooLong: true,
};

/** Parses one command line (without its CRLF). Keywords are case-insensitive. */
export const parsePop3Command = (line: string): Pop3Command | Pop3ParseError => {
  const octets = Buffer.byteLength(line, "utf8");
  if (octets > MAX_COMMAND_LINE_OCTETS) return { _tag: "LineTooLong", octets };
  const space = line.indexOf(" ");
  const verb = (space === -1 ? line : line.slice(0, space)).toUpperCase();
  const rest = space === -1 ? "" : line.slice(space + 1);
  // PASS keeps its whole remainder: RFC 1939 §7 lets a password contain spaces.
  if (verb === "PASS") return rest === "" ? { _tag: "MissingArgument", verb } : { _tag: "Pass", password: rest };
  return parseWithArguments(verb, rest.split(" ").filter((word) => word !== ""));
};

const parseWithArguments = (verb: string, args: ReadonlyArray<string>): Pop3Command | Pop3ParseError => {
  switch (verb) {
    case "USER":
      return exactlyOne(verb, args, (name) => ({ _tag: "User", name }));
    case "STAT":
    case "RSET":
    case "NOOP":
    case "QUIT":
    case "CAPA":
    case "STLS":
      return args.length === 0 ? noArgumentCommand(verb) : { _tag: "UnexpectedArgument", verb };
    case "AUTH":
      return parseAuth(args);
    case "LIST":
    case "UIDL":
      return parseOptionalMessage(verb, args);
    case "RETR":
    case "DELE":
      return exactlyOne(verb, args, (arg) =>
        withMessageNumber(verb, arg, (msg) => ({ _tag: verb === "RETR" ? "Retr" : "Dele", msg })),
      );
    case "TOP":
      return parseTop(args);
    default:
      return { _tag: "UnknownCommand", verb };
  }
};

const noArgumentCommand = (verb: "STAT" | "RSET" | "NOOP" | "QUIT" | "CAPA" | "STLS"): Pop3Command => {
  const tags = { STAT: "Stat", RSET: "Rset", NOOP: "Noop", QUIT: "Quit", CAPA: "Capa", STLS: "Stls" } as const;
  return { _tag: tags[verb] };
};

const parseAuth = (args: ReadonlyArray<string>): Pop3Command | Pop3ParseError => {
  const [mechanism, initialResponse] = args;
  if (args.length > 2) return { _tag: "UnexpectedArgument", verb: "AUTH" };
  if (mechanism === undefined) return { _tag: "Auth" };
  return initialResponse === undefined
    ? { _tag: "Auth", mechanism: mechanism.toUpperCase() }
    : { _tag: "Auth", mechanism: mechanism.toUpperCase(), initialResponse };
};

const exactlyOne = (
  verb: string,
  args: ReadonlyArray<string>,
  build: (arg: string) => Pop3Command | Pop3ParseError,
): Pop3Command | Pop3ParseError => {
  const [first] = args;
  if (first === undefined) return { _tag: "MissingArgument", verb };
  if (args.length > 1) return { _tag: "UnexpectedArgument", verb };
  return build(first);
};

const parseOptionalMessage = (verb: "LIST" | "UIDL", args: ReadonlyArray<string>): Pop3Command | Pop3ParseError => {
  const tag = verb === "LIST" ? "List" : "Uidl";
  if (args.length === 0) return { _tag: tag };
  return exactlyOne(verb, args, (arg) => withMessageNumber(verb, arg, (msg) => ({ _tag: tag, msg })));
};

const parseTop = (args: ReadonlyArray<string>): Pop3Command | Pop3ParseError => {
  const [msgArg, linesArg] = args;
  if (msgArg === undefined || linesArg === undefined) return { _tag: "MissingArgument", verb: "TOP" };
  if (args.length > 2) return { _tag: "UnexpectedArgument", verb: "TOP" };
  return withMessageNumber("TOP", msgArg, (msg) => {
    const lines = parseDecimal(linesArg);
    return lines === undefined ? { _tag: "InvalidLineCount", argument: linesArg } : { _tag: "Top", msg, lines };
  });
};

const withMessageNumber = (
  verb: string,
  argument: string,
  build: (msg: number) => Pop3Command | Pop3ParseError,
): Pop3Command | Pop3ParseError => {
  const msg = parseDecimal(argument);
  // Message numbers start at 1 (RFC 1939 §5); 0 can never name a message.
  return msg === undefined || msg === 0 ? { _tag: "InvalidMessageNumber", verb, argument } : build(msg);
};

/** Plain decimal digits only: no sign, no exponent, nothing Number() would also accept. */
const parseDecimal = (text: string): number | undefined => {
  if (!/^[0-9]+$/.test(text)) return undefined;
  const value = Number(text);
  return Number.isSafeInteger(value) ? value : undefined;
};

/** Human-readable reason for a -ERR reply. */
export const describeParseError = (error: Pop3ParseError): string => {
  switch (error._tag) {
    case "UnknownCommand":
      return error.verb === "" ? "empty command" : `unknown command ${error.verb}`;
    case "MissingArgument":
      return `${error.verb} needs an argument`;
    case "UnexpectedArgument":
      return `too many arguments for ${error.verb}`;
    case "InvalidMessageNumber":
      return `invalid message number for ${error.verb}: ${error.argument}`;
    case "InvalidLineCount":
      return `invalid line count for TOP: ${error.argument}`;
    case "LineTooLong":
      return `command line too long (${error.octets} octets)`;
  }
};

// ---------------------------------------------------------------------------
// Login outcomes

/**
 * How a login attempt ended: the label of the login counter and of the session's log line.
 * `abandoned`: the client hung up while the attempt waited out its account's delay.
 */
export type LoginOutcome = "ok" | "failed" | "throttled" | "abandoned" | "in-use" | "unavailable" | "plaintext-refused";

// ---------------------------------------------------------------------------
// SASL PLAIN (RFC 4616): base64 of authzid NUL authcid NUL password

export interface SaslPlain {
  /** Identity to act as; empty means the same as `authcid`. */
  readonly authzid: string;
  readonly authcid: string;
  readonly password: string;
}

/** A client's `*` line cancels the exchange (RFC 5034 §4). */
export const SASL_CANCEL = "*";

/** Decodes one PLAIN response; a string says what is wrong with it. */
export const decodeSaslPlain = (response: string): SaslPlain | string => {
  const text = response.trim();
  if (text === "=" || text === "") return "empty PLAIN response";
  if (text.length % 4 !== 0 || !/^[A-Za-z0-9+/]+={0,2}$/.test(text)) return "PLAIN response is not base64";
  const parts = Buffer.from(text, "base64").toString("utf8").split("\0");
  if (parts.length !== 3) return "PLAIN response must be authzid NUL authcid NUL password";
  const [authzid, authcid, password] = parts as [string, string, string];
  if (authcid === "" || password === "") return "PLAIN response lacks a user name or password";
  return { authzid, authcid, password };
};

// ---------------------------------------------------------------------------
// Multi-line responses

const CR = 0x0d;
const LF = 0x0a;
const DOT = 0x2e;
const TERMINATOR = Buffer.from(".\r\n", "latin1");

/**
 * The body of a multi-line response (RFC 1939 §3): lines starting with "." get one more ".",
 * the last line is closed with CRLF if the message lacks it, then the ".\r\n" terminator follows.
 */
export const byteStuff = (message: Uint8Array): Buffer => {
  const endsWithCrlf = message.length === 0 || (message.at(-2) === CR && message.at(-1) === LF);
  const dotsToAdd = countLineLeadingDots(message);
  const tail = endsWithCrlf ? 0 : 2;
  const out = Buffer.allocUnsafe(message.length + dotsToAdd + tail + TERMINATOR.length);
  let written = 0;
  let atLineStart = true;
  for (const byte of message) {
    if (atLineStart && byte === DOT) out[written++] = DOT;
    out[written++] = byte;
    atLineStart = byte === LF;
  }
  if (!endsWithCrlf) {
    out[written++] = CR;
    out[written++] = LF;
  }
  TERMINATOR.copy(out, written);
  return out;
};

const countLineLeadingDots = (message: Uint8Array): number => {
  let count = 0;
  let atLineStart = true;
  for (const byte of message) {
    if (atLineStart && byte === DOT) count++;
    atLineStart = byte === LF;
  }
  return count;
};

/**
 * What TOP returns (RFC 1939 §7): the header, the blank line after it,
 * then at most `bodyLines` lines of the body. A message with no blank line is all header.
 */
export const topOfMessage = (message: Uint8Array, bodyLines: number): Uint8Array => {
  const bytes = Buffer.from(message.buffer, message.byteOffset, message.byteLength);
  const separator = bytes.indexOf("\r\n\r\n", 0, "latin1");
  if (separator === -1) return message;
  let end = separator + 4;
  for (let line = 0; line < bodyLines && end < bytes.length; line++) {
    const nextLf = bytes.indexOf(LF, end);
    end = nextLf === -1 ? bytes.length : nextLf + 1;
  }
  return bytes.subarray(0, end);
};
