// LSUB (RFC 3501 §6.3.9): which of a user's subscribed names a pattern lists, and how.
// A subscribed name whose folder is gone (deleted; its subscription stays) is listed with
// \Noselect. A name that is not subscribed but has subscribed names below it that the
// pattern's `%` cut off is listed with \Noselect too, so a client walking the hierarchy
// level by level still finds them (§6.3.9: "foo/bar" subscribed, "foo" not, LSUB "" "%"
// answers "foo" \Noselect). Pure.
import type { ListPattern } from "./list-pattern.ts";

const DELIMITER = "/";

export interface LsubEntry {
  readonly name: string;
  /** Not a folder that can be selected: gone, or only a level above subscribed names. */
  readonly noselect: boolean;
  /** Folders exist below it (CHILDREN, RFC 3348). */
  readonly children: boolean;
}

/** "a/b/c" → ["a", "a/b"]. */
const ancestorsOf = (name: string): string[] => {
  const levels = name.split(DELIMITER);
  return levels.slice(1).map((_, index) => levels.slice(0, index + 1).join(DELIMITER)).filter((ancestor) => ancestor !== "");
};

const isInbox = (name: string) => name.toUpperCase() === "INBOX";

export const lsubEntries = (pattern: ListPattern, subscribed: ReadonlyArray<string>, existing: ReadonlyArray<string>): LsubEntry[] => {
  const folders = new Set(existing);
  const exists = (name: string) => folders.has(name) || (isInbox(name) && [...folders].some(isInbox));
  const subscribedSet = new Set(subscribed);
  const entries = new Map<string, LsubEntry>();
  const children = (name: string) => existing.some((other) => other.startsWith(`${name}${DELIMITER}`));
  for (const name of subscribed) {
    if (pattern.matches(name)) {
      entries.set(name, { name, noselect: !exists(name), children: children(name) });
      continue;
    }
    for (const ancestor of ancestorsOf(name)) {
      if (subscribedSet.has(ancestor) || entries.has(ancestor) || !pattern.matches(ancestor)) continue;
      entries.set(ancestor, { name: ancestor, noselect: true, children: children(ancestor) });
    }
  }
  return [...entries.values()].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
};
