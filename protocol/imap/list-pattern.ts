// LIST/LSUB mailbox patterns (RFC 3501 §6.3.8): `*` matches anything, `%` anything but the
// hierarchy delimiter "/"; INBOX matches in any case. A client sends the pattern, so
// matching must stay bounded whatever it holds: runs of wildcards collapse to one, a
// pattern with more literal characters than the name is refused at once, and matching is
// a single pass over the name keeping the set of pattern positions reached (no
// backtracking), at most (name length × pattern length) steps.

const DELIMITER = "/";

type Token = { readonly _tag: "Literal"; readonly char: string } | { readonly _tag: "Any" } | { readonly _tag: "Level" };

export interface ListPattern {
  readonly matches: (name: string) => boolean;
}

const tokensOf = (pattern: string): { tokens: Token[]; literals: number } => {
  const tokens: Token[] = [];
  let literals = 0;
  for (const char of pattern) {
    if (char === "*" || char === "%") {
      const last = tokens[tokens.length - 1];
      // A run of wildcards is one: `*` if the run holds any, else `%`.
      if (last !== undefined && last._tag !== "Literal") {
        if (char === "*") tokens[tokens.length - 1] = { _tag: "Any" };
        continue;
      }
      tokens.push(char === "*" ? { _tag: "Any" } : { _tag: "Level" });
    } else {
      tokens.push({ _tag: "Literal", char });
      literals++;
    }
  }
  return { tokens, literals };
};

const globMatches = (tokens: ReadonlyArray<Token>, literals: number, name: ReadonlyArray<string>): boolean => {
  if (literals > name.length) return false;
  const width = tokens.length + 1;
  // reached[j]: the first j tokens match the name read so far.
  let reached = new Uint8Array(width);
  let next = new Uint8Array(width);
  reached[0] = 1;
  for (let j = 1; j < width; j++) reached[j] = tokens[j - 1]!._tag !== "Literal" && reached[j - 1] === 1 ? 1 : 0;
  for (const char of name) {
    next[0] = 0;
    for (let j = 1; j < width; j++) {
      const token = tokens[j - 1]!;
      if (token._tag === "Literal") next[j] = reached[j - 1] === 1 && token.char === char ? 1 : 0;
      // A wildcard matches nothing more (next[j-1]) or takes this character too (reached[j]).
      else next[j] = next[j - 1] === 1 || (reached[j] === 1 && (token._tag === "Any" || char !== DELIMITER)) ? 1 : 0;
    }
    [reached, next] = [next, reached];
  }
  return reached[width - 1] === 1;
};

export const listPattern = (pattern: string): ListPattern => {
  const exact = tokensOf(pattern);
  // INBOX is case-insensitive (RFC 3501 §5.1): a pattern starting with it in any case names it.
  const inbox = /^inbox/i.test(pattern) ? tokensOf(`INBOX${pattern.slice(5)}`) : exact;
  return {
    matches: (name) => {
      const chars = [...name];
      if (name.toUpperCase() === "INBOX") return globMatches(inbox.tokens, inbox.literals, [..."INBOX"]);
      return globMatches(exact.tokens, exact.literals, chars);
    },
  };
};
