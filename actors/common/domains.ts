// Domains of mail addresses, and the patterns config uses to pick domains or host names:
// "example.org" is that name only, ".example.org" every name under it (not example.org
// itself). Names compare without regard to case (RFC 5321 §2.4).
import { isIPv4, isIPv6 } from "node:net";
import { domainToASCII } from "node:url";

/** The domain of `local@domain`, lower-cased (the part after the last "@"; the whole text when there is none). */
export const domainOf = (address: string): string => address.slice(address.lastIndexOf("@") + 1).toLowerCase();

/** The local part of `local@domain`, as written (its case can matter, RFC 5321 §2.4). */
export const localPartOf = (address: string): string => {
  const at = address.lastIndexOf("@");
  return at === -1 ? address : address.slice(0, at);
};

/**
 * `local@domain` with the domain as its A-label ("xn--…"), when the local part is ASCII:
 * then the address needs no SMTPUTF8 (RFC 6531 asks it only of non-ASCII addresses). An
 * address it cannot convert comes back as it was.
 */
export const withAsciiDomain = (address: string): string => {
  const at = address.lastIndexOf("@");
  if (at === -1 || /[^\x00-\x7f]/.test(address.slice(0, at)) || !/[^\x00-\x7f]/.test(address.slice(at + 1))) return address;
  const ascii = domainToASCII(address.slice(at + 1));
  return ascii === "" ? address : `${address.slice(0, at)}@${ascii}`;
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

/** Why a mail domain cannot exist in the DNS, so no lookup (and no retry for days) is worth it. */
export type DomainSyntaxProblem = "empty-label" | "label-too-long" | "domain-too-long" | "bad-character" | "hyphen-at-label-edge" | "bad-address-literal";

/** RFC 1035 §2.3.4: 255 octets on the wire, which is 253 characters written out. */
const MAX_DOMAIN = 253;
const MAX_LABEL = 63;
/** RFC 5321 §4.1.2 sub-domain: letters, digits and hyphens, a hyphen neither first nor last. */
const LDH = /^[a-z0-9-]+$/;

/**
 * What makes `domain` (of a mail address) impossible, or undefined when it may exist.
 * Address literals `[192.0.2.1]` and `[IPv6:2001:db8::1]` (RFC 5321 §4.1.3) are fine when
 * the address is. An internationalized name is checked in its A-label form (RFC 5890),
 * where the DNS limits apply. A trailing dot is an empty label: RFC 5321 has none.
 */
export const domainSyntaxProblem = (domain: string): DomainSyntaxProblem | undefined => {
  if (domain.startsWith("[")) return addressLiteralValid(domain) ? undefined : "bad-address-literal";
  const ascii = /^[\x00-\x7f]*$/.test(domain) ? domain.toLowerCase() : domainToASCII(domain);
  if (ascii === "") return domain === "" ? "empty-label" : "bad-character";
  const labels = ascii.split(".");
  if (labels.some((label) => label === "")) return "empty-label";
  if (labels.some((label) => label.length > MAX_LABEL)) return "label-too-long";
  if (ascii.length > MAX_DOMAIN) return "domain-too-long";
  if (labels.some((label) => !LDH.test(label))) return "bad-character";
  if (labels.some((label) => label.startsWith("-") || label.endsWith("-"))) return "hyphen-at-label-edge";
  return undefined;
};

const addressLiteralValid = (literal: string): boolean => {
  const inner = /^\[(.*)\]$/.exec(literal)?.[1];
  if (inner === undefined) return false;
  return /^ipv6:/i.test(inner) ? isIPv6(inner.slice(5)) : isIPv4(inner);
};
