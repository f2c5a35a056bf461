// IMAP4rev1 (RFC 3501) commands as values, with the extensions Tern serves: IDLE
// (RFC 2177), UIDPLUS (RFC 4315), MOVE (RFC 6851), LITERAL+ (RFC 7888), NAMESPACE
// (RFC 2342), ID (RFC 2971), ENABLE (RFC 5161), UNSELECT (RFC 3691), CONDSTORE (RFC 7162).
// The parser (parse.ts) builds them from the bytes of one command; the server maps them
// to mailbox asks. Nothing here does I/O.

/** One range of a sequence set; `"*"` is the largest number in use (RFC 3501 §9 seq-number). */
export interface SequenceRange {
  readonly from: number | "*";
  readonly to: number | "*";
}
export type SequenceSet = ReadonlyArray<SequenceRange>;

/** A body section (RFC 3501 §6.4.5): part numbers, then what of that part. */
export interface Section {
  readonly part: ReadonlyArray<number>;
  readonly text?: "HEADER" | "HEADER.FIELDS" | "HEADER.FIELDS.NOT" | "TEXT" | "MIME" | undefined;
  /** Field names of HEADER.FIELDS(.NOT), upper-cased. */
  readonly fields?: ReadonlyArray<string> | undefined;
}

export interface Partial {
  readonly offset: number;
  readonly length: number;
}

export type FetchItem =
  | { readonly _tag: "Flags" }
  | { readonly _tag: "Uid" }
  | { readonly _tag: "InternalDate" }
  | { readonly _tag: "Size" }
  | { readonly _tag: "Envelope" }
  /** BODYSTRUCTURE (extensible) or BODY without a section (non-extensible). */
  | { readonly _tag: "BodyStructure"; readonly extensible: boolean }
  | { readonly _tag: "Body"; readonly section: Section; readonly partial?: Partial | undefined; readonly peek: boolean }
  /** RFC822 (= BODY[]), RFC822.HEADER (= BODY.PEEK[HEADER]), RFC822.TEXT (= BODY[TEXT]): answered under their own names. */
  | { readonly _tag: "Rfc822"; readonly which: "" | "HEADER" | "TEXT" }
  | { readonly _tag: "ModSeq" };

export type FlagStoreMode = "add" | "remove" | "replace";

export type SearchKey =
  | { readonly _tag: "All" }
  /** A system flag or keyword set (or, with `set: false`, not set). NEW/OLD/RECENT map onto \Recent. */
  | { readonly _tag: "Flag"; readonly flag: string; readonly set: boolean }
  /** FROM/TO/CC/BCC/SUBJECT and HEADER name: substring, case-insensitive. */
  | { readonly _tag: "Header"; readonly field: string; readonly value: string }
  | { readonly _tag: "Body"; readonly value: string }
  | { readonly _tag: "Text"; readonly value: string }
  /** BEFORE/ON/SINCE (internal date) and SENTBEFORE/SENTON/SENTSINCE (Date: header); `day` is UTC midnight in ms. */
  | { readonly _tag: "Date"; readonly of: "internal" | "sent"; readonly relation: "before" | "on" | "since"; readonly day: number }
  | { readonly _tag: "Size"; readonly relation: "larger" | "smaller"; readonly octets: number }
  | { readonly _tag: "Uid"; readonly set: SequenceSet }
  | { readonly _tag: "Sequence"; readonly set: SequenceSet }
  | { readonly _tag: "ModSeq"; readonly modseq: number }
  | { readonly _tag: "Not"; readonly key: SearchKey }
  | { readonly _tag: "Or"; readonly left: SearchKey; readonly right: SearchKey }
  | { readonly _tag: "And"; readonly keys: ReadonlyArray<SearchKey> };

export type StatusItem = "MESSAGES" | "RECENT" | "UIDNEXT" | "UIDVALIDITY" | "UNSEEN" | "HIGHESTMODSEQ" | "SIZE";

export type ImapCommand =
  | { readonly _tag: "Capability" }
  | { readonly _tag: "Noop" }
  | { readonly _tag: "Logout" }
  | { readonly _tag: "StartTls" }
  | { readonly _tag: "Login"; readonly user: string; readonly password: string }
  | { readonly _tag: "Authenticate"; readonly mechanism: string; readonly initialResponse?: string | undefined }
  | { readonly _tag: "Select"; readonly mailbox: string; readonly readOnly: boolean; readonly condstore: boolean }
  | { readonly _tag: "Create"; readonly mailbox: string }
  | { readonly _tag: "Delete"; readonly mailbox: string }
  | { readonly _tag: "Rename"; readonly from: string; readonly to: string }
  | { readonly _tag: "Subscribe"; readonly mailbox: string }
  | { readonly _tag: "Unsubscribe"; readonly mailbox: string }
  | { readonly _tag: "List"; readonly reference: string; readonly pattern: string; readonly subscribedOnly: boolean }
  | { readonly _tag: "Status"; readonly mailbox: string; readonly items: ReadonlyArray<StatusItem> }
  | {
      readonly _tag: "Append";
      readonly mailbox: string;
      readonly flags: ReadonlyArray<string>;
      /** INTERNALDATE to give the message, ms since the epoch. */
      readonly date?: number | undefined;
      readonly message: Uint8Array;
    }
  | { readonly _tag: "Check" }
  | { readonly _tag: "Close" }
  | { readonly _tag: "Unselect" }
  | { readonly _tag: "Expunge"; readonly uids?: SequenceSet | undefined }
  | { readonly _tag: "Search"; readonly uid: boolean; readonly charset?: string | undefined; readonly key: SearchKey }
  | { readonly _tag: "Fetch"; readonly uid: boolean; readonly set: SequenceSet; readonly items: ReadonlyArray<FetchItem>; readonly changedSince?: number | undefined }
  | {
      readonly _tag: "Store";
      readonly uid: boolean;
      readonly set: SequenceSet;
      readonly mode: FlagStoreMode;
      readonly silent: boolean;
      readonly flags: ReadonlyArray<string>;
      readonly unchangedSince?: number | undefined;
    }
  | { readonly _tag: "Copy"; readonly uid: boolean; readonly set: SequenceSet; readonly mailbox: string }
  | { readonly _tag: "Move"; readonly uid: boolean; readonly set: SequenceSet; readonly mailbox: string }
  | { readonly _tag: "Idle" }
  | { readonly _tag: "Namespace" }
  /** ID parameters as sent (null: the client sent NIL). */
  | { readonly _tag: "Id"; readonly parameters: ReadonlyArray<readonly [string, string | null]> | null }
  | { readonly _tag: "Enable"; readonly capabilities: ReadonlyArray<string> };

/** Why a command is refused with BAD: a value, rendered to text only at the edge (describeBad). */
export type ImapBad =
  | { readonly _tag: "MissingTag" }
  | { readonly _tag: "UnknownCommand"; readonly verb: string }
  | { readonly _tag: "Syntax"; readonly verb: string; readonly expected: string; readonly at: number }
  | { readonly _tag: "TrailingInput"; readonly verb: string; readonly at: number }
  | { readonly _tag: "InvalidSequenceSet"; readonly verb: string; readonly text: string }
  | { readonly _tag: "InvalidDate"; readonly text: string }
  | { readonly _tag: "LiteralTooLarge"; readonly octets: number; readonly limit: number }
  | { readonly _tag: "LineTooLong"; readonly limit: number }
  | { readonly _tag: "NestingTooDeep"; readonly limit: number };

export const describeBad = (bad: ImapBad): string => {
  switch (bad._tag) {
    case "MissingTag":
      return "missing or invalid tag";
    case "UnknownCommand":
      return bad.verb === "" ? "missing command" : `unknown command ${bad.verb}`;
    case "Syntax":
      return `${bad.verb}: expected ${bad.expected} at octet ${bad.at}`;
    case "TrailingInput":
      return `${bad.verb}: unexpected input at octet ${bad.at}`;
    case "InvalidSequenceSet":
      return `${bad.verb}: invalid sequence set ${JSON.stringify(bad.text)}`;
    case "InvalidDate":
      return `invalid date ${JSON.stringify(bad.text)}`;
    case "LiteralTooLarge":
      return `literal of ${bad.octets} octets is over the limit of ${bad.limit}`;
    case "LineTooLong":
      return `command line over ${bad.limit} octets`;
    case "NestingTooDeep":
      return `parentheses nested deeper than ${bad.limit}`;
  }
};
