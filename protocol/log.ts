// The node's log lines, as operators read them (docs/ops/logs.md): one JSON object per line,
// `level`, `time`, `node` and `event` first, then the event's fields. A field means the same
// thing on every line that has it, and each idea has one name, fixed here: the compiler
// refuses the names retired for it (`msg`, `rcpt`, `from`, …), so a new call site cannot
// bring a synonym back. Events published on JetStream (protocol/events.ts) are an API of
// their own and keep their names.

/** Severity; `info` when a line does not say. */
export type LogLevel = "info" | "warn" | "error";

/** The protocols a client speaks to a node (connection, rejection and login lines). */
export type ClientProtocol = "smtp" | "pop3" | "imap";

/** Fields with one meaning wherever they appear; an event may add fields of its own. */
export interface LogFields {
  readonly level?: LogLevel | undefined;
  /** A sentence for people, when the event and its fields do not say it all. */
  readonly text?: string | undefined;
  /** One client connection (SMTP, POP3 or IMAP), from its first line to `connection.closed`. */
  readonly conn?: string | undefined;
  /** One SMTP transaction: `<conn>.<n>`. */
  readonly txn?: string | undefined;
  readonly protocol?: ClientProtocol | undefined;
  /** The client's IP address (the address fail2ban bans). */
  readonly client?: string | undefined;
  /** The login name as the client gave it, or the account it belongs to. */
  readonly user?: string | undefined;
  /** A message's id in the queue: what the 250 reply says it was "queued as". */
  readonly queueId?: string | undefined;
  /** One queue entry: a message's recipients that share a route. */
  readonly entry?: string | undefined;
  /** The Message-ID header field, as the message has it. */
  readonly messageId?: string | undefined;
  /** The envelope sender (MAIL FROM, the return path); "" for the null sender. */
  readonly sender?: string | undefined;
  /** One envelope recipient. */
  readonly recipient?: string | undefined;
  /** Every envelope recipient of a message. */
  readonly recipients?: ReadonlyArray<string> | undefined;
  /** Octets of a message (as stored). */
  readonly size?: number | undefined;
  /** The MX host an attempt went to. */
  readonly mx?: string | undefined;
  /** The IP address of the server an attempt went to (a client's is `client`). */
  readonly ip?: string | undefined;
  /** SMTP reply code (550), and the enhanced status code (5.1.1, RFC 3463) as `dsn`. */
  readonly code?: number | undefined;
  readonly dsn?: string | undefined;
  /** A reply as sent or received, code and text. */
  readonly reply?: string | undefined;
  /** Milliseconds: since a message was accepted (delivery lines), or a wait imposed (auth.delayed). */
  readonly delayMs?: number | undefined;
  /** Which attempt this is for the entry: 1 for the first. */
  readonly attempt?: number | undefined;
  /** Why, as a fixed word (a rejection's reason, a suppression's reason). */
  readonly reason?: string | undefined;
  /** What went wrong, as the failing part said it. */
  readonly error?: string | undefined;
  /** Another node of the cluster that this line is about. */
  readonly peer?: string | undefined;

  // Set by the logger, not by a call site.
  readonly time?: never;
  readonly node?: never;
  readonly event?: never;
  // Retired names, with the field that replaced each.
  /** Use `queueId`: `msg` was also the text field of common loggers. */
  readonly msg?: never;
  /** Use `recipient`. */
  readonly rcpt?: never;
  /** Use `recipients`. */
  readonly rcpts?: never;
  /** Use `sender` (envelope), `peer` (a node) or a field that says which. */
  readonly from?: never;
  /** Use `recipient`, `peer` or a field that says which. */
  readonly to?: never;
  /** Use `sender`. */
  readonly mailFrom?: never;
  /** Use `client`. */
  readonly remote?: never;
  /** Use `recipient` or `client`. */
  readonly address?: never;
  /** Use `size`. */
  readonly bytes?: never;
  /** Use `attempt`. */
  readonly attempts?: never;
  /** Use `error` (what went wrong) or `text` (a sentence for people). */
  readonly detail?: never;
  /** Use `text`. */
  readonly note?: never;
  /** Use `reason`. */
  readonly why?: never;

  readonly [field: string]: unknown;
}

/** Writes one line: `event` names what happened, dotted from the general to the particular. */
export type Log = (event: string, fields?: LogFields) => void;
