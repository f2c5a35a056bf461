// Domains of mail addresses, and the patterns config uses to pick domains or host names:
// "example.org" is that name only, ".example.org" every name under it (not example.org
// itself). Names compare without regard to case (RFC 5321 §2.4).

/** The domain of `local@domain`, lower-cased (the part after the last "@"; the whole text when there is none). */
export const domainOf = (address: string): string => address.slice(address.lastIndexOf("@") + 1).toLowerCase();

/** The local part of `local@domain`, as written (its case can matter, RFC 5321 §2.4). */
export const localPartOf = (address: string): string => {
  const at = address.lastIndexOf("@");
  return at === -1 ? address : address.slice(0, at);
};

/** Does `name` (a domain or host name) match `pattern`: the same name, or under a ".suffix" pattern? */
export const matchesDomain = (pattern: string, name: string): boolean => {
  const p = pattern.toLowerCase();
  const n = name.toLowerCase();
  return p.startsWith(".") ? n.endsWith(p) : n === p;
};

/** A matcher for a list of patterns (`delivery.requireTls`): exact names looked up in a set, suffixes tried in turn. */
export const domainMatcher = (patterns: ReadonlyArray<string>): ((name: string) => boolean) => {
  const exact = new Set(patterns.filter((p) => !p.startsWith(".")).map((p) => p.toLowerCase()));
  const suffixes = patterns.filter((p) => p.startsWith(".")).map((p) => p.toLowerCase());
  return (name) => {
    const n = name.toLowerCase();
    return exact.has(n) || suffixes.some((suffix) => n.endsWith(suffix));
  };
};
