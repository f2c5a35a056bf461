// A message's MIME structure as IMAP needs it, and what IMAP derives from it, pure:
// BODYSTRUCTURE / BODY (RFC 3501 §7.4.2), ENVELOPE, and the bytes of a body section
// (§6.4.5: BODY[1.2.HEADER.FIELDS (...)]<0.100>). The tree itself is built by a MIME
// library (actors/retriever/imap-mime.ts, with mailsplit) once per stored body; here it
// is only read. Offsets are byte offsets into the stored message.
import addressparser from "nodemailer/lib/addressparser/index.js";
import type { Partial, Section } from "./command.ts";
import { list, nstring } from "./response.ts";

export interface MimePart {
  /** Where the part's header starts, where its body starts (after the blank line) and ends. */
  readonly headerStart: number;
  readonly bodyStart: number;
  readonly bodyEnd: number;
  /** Lower-cased, e.g. "text" and "plain". */
  readonly type: string;
  readonly subtype: string;
  /** Content-Type parameters, names lower-cased, values as sent. */
  readonly params: Readonly<Record<string, string>>;
  readonly id?: string | undefined;
  readonly description?: string | undefined;
  readonly encoding: string;
  readonly md5?: string | undefined;
  readonly disposition?: { readonly type: string; readonly params: Readonly<Record<string, string>> } | undefined;
  readonly language?: string | undefined;
  readonly location?: string | undefined;
  /** Body lines (text/* and message/rfc822). */
  readonly lines: number;
  /** Sub-parts of a multipart. */
  readonly children: ReadonlyArray<MimePart>;
  /** The message inside a message/rfc822 part. */
  readonly message?: MimePart | undefined;
}

// ---------------------------------------------------------------------------
// Header fields of a raw header block

/** Unfolded header fields in order: [name lower-cased, value as sent]. */
export const headerFields = (header: Buffer): ReadonlyArray<readonly [string, string]> => {
  const text = header.toString("latin1").replace(/\r?\n[ \t]/g, " ");
  const fields: Array<readonly [string, string]> = [];
  for (const line of text.split(/\r?\n/)) {
    const colon = line.indexOf(":");
    if (colon <= 0) continue;
    fields.push([line.slice(0, colon).trim().toLowerCase(), Buffer.from(line.slice(colon + 1).trim(), "latin1").toString("utf8")]);
  }
  return fields;
};

const first = (fields: ReadonlyArray<readonly [string, string]>, name: string): string | undefined => fields.find(([key]) => key === name)?.[1];

// ---------------------------------------------------------------------------
// ENVELOPE

const addressList = (value: string | undefined): string => {
  if (value === undefined || value.trim() === "") return "NIL";
  const parsed = addressparser(value);
  const out: string[] = [];
  for (const entry of parsed) {
    if ("group" in entry && entry.group !== undefined) {
      // RFC 3501: a group is a start marker (NIL NIL "name" NIL), its members, an end marker.
      out.push(`(NIL NIL ${nstring(entry.name)} NIL)`);
      for (const member of entry.group) out.push(address(member.name ?? "", member.address ?? ""));
      out.push("(NIL NIL NIL NIL)");
    } else out.push(address(entry.name, (entry as { address: string }).address));
  }
  return out.length === 0 ? "NIL" : list(out);
};

const address = (name: string, addr: string): string => {
  const at = addr.lastIndexOf("@");
  const [mailbox, host] = at === -1 ? [addr, ""] : [addr.slice(0, at), addr.slice(at + 1)];
  return `(${name ? nstring(name) : "NIL"} NIL ${nstring(mailbox)} ${host ? nstring(host) : "NIL"})`;
};

export const envelope = (header: Buffer): string => {
  const fields = headerFields(header);
  const from = first(fields, "from");
  // RFC 3501: sender and reply-to default to from.
  const sender = first(fields, "sender") ?? from;
  const replyTo = first(fields, "reply-to") ?? from;
  return list([
    nstring(first(fields, "date")),
    nstring(first(fields, "subject")),
    addressList(from),
    addressList(sender),
    addressList(replyTo),
    addressList(first(fields, "to")),
    addressList(first(fields, "cc")),
    addressList(first(fields, "bcc")),
    nstring(first(fields, "in-reply-to")),
    nstring(first(fields, "message-id")),
  ]);
};

// ---------------------------------------------------------------------------
// BODYSTRUCTURE

const paramList = (params: Readonly<Record<string, string>>): string => {
  const entries = Object.entries(params);
  return entries.length === 0 ? "NIL" : list(entries.flatMap(([key, value]) => [nstring(key.toUpperCase()), nstring(value)]));
};

const dispositionOf = (part: MimePart): string =>
  part.disposition ? list([nstring(part.disposition.type.toUpperCase()), paramList(part.disposition.params)]) : "NIL";

/** BODYSTRUCTURE (`extensible`) or BODY: the part and its children, RFC 3501 §7.4.2. */
export const bodyStructure = (part: MimePart, header: (part: MimePart) => Buffer, extensible: boolean): string => {
  if (part.type === "multipart") {
    const children = part.children.map((child) => bodyStructure(child, header, extensible)).join("");
    const subtype = nstring(part.subtype.toUpperCase());
    if (!extensible) return `(${children} ${subtype})`;
    return `(${children} ${subtype} ${paramList(part.params)} ${dispositionOf(part)} ${nstring(part.language)} ${nstring(part.location)})`;
  }
  const fields = [
    nstring(part.type.toUpperCase()),
    nstring(part.subtype.toUpperCase()),
    part.type === "text" && part.params.charset === undefined ? paramList({ charset: "us-ascii", ...part.params }) : paramList(part.params),
    nstring(part.id),
    nstring(part.description),
    nstring(part.encoding.toUpperCase()),
    String(part.bodyEnd - part.bodyStart),
  ];
  if (part.type === "message" && part.subtype === "rfc822" && part.message) {
    fields.push(envelope(header(part.message)), bodyStructure(part.message, header, extensible), String(part.lines));
  } else if (part.type === "text") fields.push(String(part.lines));
  if (extensible) fields.push(nstring(part.md5), dispositionOf(part), nstring(part.language), nstring(part.location));
  return list(fields);
};

// ---------------------------------------------------------------------------
// Sections

/** The part a section's part numbers name; undefined when there is none. */
const partAt = (root: MimePart, path: ReadonlyArray<number>): MimePart | undefined => {
  let part: MimePart | undefined = root;
  for (const n of path) {
    if (part === undefined) return undefined;
    // The message inside a message/rfc822 part is numbered like its parent (RFC 3501 §6.4.5).
    const container: MimePart = part.message ?? part;
    if (container.type === "multipart") part = container.children[n - 1];
    else part = n === 1 && container === part ? part : undefined;
  }
  return part;
};

const CRLF = Buffer.from("\r\n");

const selectFields = (header: Buffer, names: ReadonlyArray<string>, exclude: boolean): Buffer => {
  const wanted = new Set(names.map((name) => name.toLowerCase()));
  const text = header.toString("latin1");
  const lines = text.split(/(?<=\n)(?![ \t])/);
  const kept = lines.filter((line) => {
    const colon = line.indexOf(":");
    if (colon <= 0) return false;
    return wanted.has(line.slice(0, colon).trim().toLowerCase()) !== exclude;
  });
  return Buffer.concat([Buffer.from(kept.join(""), "latin1"), CRLF]);
};

/**
 * The bytes a section names, before any partial: the whole message, a part's header
 * (with its blank line), its text, its MIME header, or some header fields. A part that
 * does not exist gives empty bytes (RFC 3501 lets the server answer with an empty string).
 */
export const sectionBytes = (message: Buffer, root: MimePart, section: Section): Buffer => {
  const part = partAt(root, section.part);
  if (part === undefined) return Buffer.alloc(0);
  // HEADER and TEXT of a message/rfc822 part mean those of the message inside it.
  const target = section.part.length > 0 && section.text !== "MIME" && section.text !== undefined ? (part.message ?? part) : part;
  switch (section.text) {
    case undefined:
      return section.part.length === 0 ? message : message.subarray(part.bodyStart, part.bodyEnd);
    case "MIME":
      return message.subarray(part.headerStart, part.bodyStart);
    case "HEADER":
      return message.subarray(target.headerStart, target.bodyStart);
    case "TEXT":
      return message.subarray(target.bodyStart, target.bodyEnd);
    case "HEADER.FIELDS":
    case "HEADER.FIELDS.NOT":
      return selectFields(message.subarray(target.headerStart, target.bodyStart), section.fields ?? [], section.text === "HEADER.FIELDS.NOT");
  }
};

export const applyPartial = (bytes: Buffer, partial: Partial | undefined): Buffer =>
  partial === undefined ? bytes : bytes.subarray(Math.min(partial.offset, bytes.length), Math.min(partial.offset + partial.length, bytes.length));

/** The section as it is named in the FETCH response: BODY[1.HEADER.FIELDS (FROM)]<0>. */
export const sectionName = (section: Section, partial: Partial | undefined): string => {
  const pieces = [...section.part.map(String)];
  if (section.text !== undefined) pieces.push(section.text);
  let name = pieces.join(".");
  if (section.fields !== undefined) name += ` (${section.fields.join(" ")})`;
  return `BODY[${name}]${partial === undefined ? "" : `<${partial.offset}>`}`;
};
