// The Authentication-Results field (RFC 8601) a node writes, and the removal of fields that
// claim to be its own. Mail clients and filters trust an Authentication-Results field by its
// authserv-id, so one a sender wrote with ours would be believed: RFC 8601 §5 asks a border
// MTA to delete those before delivery. Pure: strings in, strings out.
import libmime from "libmime";

/** RFC 8601 §2.2: the field, each resinfo on a line of its own; "none" when no method ran. */
export const authenticationResultsField = (authservId: string, rows: ReadonlyArray<string>): string =>
  rows.length === 0
    ? `Authentication-Results: ${authservId}; none\r\n`
    : `Authentication-Results: ${authservId};\r\n ${rows.map((row) => libmime.foldLines(row, 160)).join(";\r\n ")}\r\n`;

/** The header section's fields, each with its folded lines and line ending, in order. */
export const headerFields = (section: string): string[] => {
  const fields: string[] = [];
  let start = 0;
  while (start < section.length) {
    let end = section.indexOf("\r\n", start);
    while (end !== -1 && (section[end + 2] === " " || section[end + 2] === "\t")) end = section.indexOf("\r\n", end + 2);
    const stop = end === -1 ? section.length : end + 2;
    fields.push(section.slice(start, stop));
    start = stop;
  }
  return fields;
};

/** Skips whitespace and (nested, escaped) comments: RFC 5322 CFWS. */
const skipCfws = (text: string, from: number): number => {
  let at = from;
  for (;;) {
    while (at < text.length && /[ \t\r\n]/.test(text[at]!)) at++;
    if (text[at] !== "(") return at;
    let depth = 0;
    for (; at < text.length; at++) {
      const c = text[at];
      if (c === "\\") at++;
      else if (c === "(") depth++;
      else if (c === ")" && --depth === 0) {
        at++;
        break;
      }
    }
  }
};

/** The authserv-id an Authentication-Results value starts with (a token or a quoted string), or undefined. */
export const authservIdOf = (value: string): string | undefined => {
  const at = skipCfws(value, 0);
  if (value[at] === '"') {
    let id = "";
    for (let i = at + 1; i < value.length; i++) {
      const c = value[i]!;
      if (c === "\\") id += value[++i] ?? "";
      else if (c === '"') return id;
      else id += c;
    }
    return undefined;
  }
  const token = /^[^\s;()"]+/.exec(value.slice(at))?.[0];
  return token;
};

const sameId = (a: string, b: string) => a.toLowerCase().replace(/\.$/, "") === b.toLowerCase().replace(/\.$/, "");

/** Whether a field is an Authentication-Results field naming `authservId`. */
const claims = (field: string, authservId: string): boolean => {
  const match = /^authentication-results[ \t]*:/i.exec(field);
  if (!match) return false;
  const id = authservIdOf(field.slice(match[0].length));
  return id !== undefined && sameId(id, authservId);
};

/** The header section without the Authentication-Results fields that claim `authservId`, and how many went. */
export const withoutClaimedResults = (section: string, authservId: string): { readonly section: string; readonly removed: number } => {
  if (!/^authentication-results[ \t]*:/im.test(section)) return { section, removed: 0 }; // the common case: no field at all
  const fields = headerFields(section);
  const kept = fields.filter((field) => !claims(field, authservId));
  return { section: kept.join(""), removed: fields.length - kept.length };
};
