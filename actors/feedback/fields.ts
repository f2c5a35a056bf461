// Header-style fields as reports carry them: a message/delivery-status part (RFC 3464 §2:
// one group for the message, then one per recipient, groups apart by blank lines), a
// message/feedback-report part (RFC 5965 §3.1: one group, some fields repeated), and the
// header section of a returned message. Pure: text in, values out.

/** One group of fields: lower-case names, each with its values in order (folded lines joined). */
export type FieldGroup = ReadonlyMap<string, ReadonlyArray<string>>;

/** The first value of a field, trimmed, or undefined. */
export const field = (group: FieldGroup | undefined, name: string): string | undefined => group?.get(name)?.[0]?.trim() || undefined;

/** Every value of a field (a feedback report may repeat Original-Rcpt-To, Reported-Domain…). */
export const fields = (group: FieldGroup | undefined, name: string): ReadonlyArray<string> => (group?.get(name) ?? []).map((v) => v.trim()).filter(Boolean);

/** Groups of fields, split at blank lines. Lines that are neither a field nor a continuation are skipped. */
export const parseFieldGroups = (text: string): ReadonlyArray<FieldGroup> => {
  const groups: Map<string, string[]>[] = [];
  let current: Map<string, string[]> | undefined;
  let last: { name: string; index: number } | undefined;
  for (const line of text.split(/\r?\n/)) {
    if (line.trim() === "") {
      current = undefined;
      last = undefined;
      continue;
    }
    if (/^[ \t]/.test(line)) {
      // A folded continuation of the field before it.
      if (current && last) current.get(last.name)![last.index] += ` ${line.trim()}`;
      continue;
    }
    const colon = line.indexOf(":");
    if (colon <= 0) continue;
    const name = line.slice(0, colon).trim().toLowerCase();
    if (!/^[\x21-\x39\x3b-\x7e]+$/.test(name)) continue;
    if (!current) groups.push((current = new Map()));
    const values = current.get(name) ?? [];
    values.push(line.slice(colon + 1).trim());
    current.set(name, values);
    last = { name, index: values.length - 1 };
  }
  return groups;
};

/** The header section of a message (up to its first blank line) as one group. */
export const parseHeaderSection = (message: string): FieldGroup => {
  const end = /\r?\n\r?\n/.exec(message);
  return parseFieldGroups(end ? message.slice(0, end.index) : message)[0] ?? new Map();
};

/**
 * The address of a typed address field (`rfc822; bob@example.net`, RFC 3464 §2.3.1), or of a
 * bare or bracketed one (`<bob@example.net>`), lower case; undefined when there is none.
 */
export const addressOf = (value: string | undefined): string | undefined => {
  if (value === undefined) return undefined;
  const semicolon = value.indexOf(";");
  const bare = (semicolon >= 0 ? value.slice(semicolon + 1) : value).trim();
  const found = /<?([^<>\s"]+@[^<>\s";]+)>?/.exec(bare);
  return found ? found[1]!.toLowerCase() : undefined;
};

/** Every address in a header value (To:, Cc:), lower case. */
export const addressesIn = (value: string | undefined): ReadonlyArray<string> =>
  value === undefined ? [] : [...value.matchAll(/[^<>\s",;:()]+@[^<>\s",;:()]+/g)].map((m) => m[0].replace(/\.$/, "").toLowerCase());

/** The name in a typed name field (`dns; mx.example.net`, RFC 3464 §2.2.2), or the value itself. */
export const nameOf = (value: string | undefined): string | undefined => {
  if (value === undefined) return undefined;
  const semicolon = value.indexOf(";");
  return (semicolon >= 0 ? value.slice(semicolon + 1) : value).trim() || undefined;
};
