// A route that arrives over NATS is a claim, not a fact: whoever can publish on the
// resolver's subject can answer before the real resolver does (a plain subscriber gets
// every request a queue group gets). Before delivery connects anywhere, the asking node
// holds the claim to its own rules, the ones its own resolver applies before answering
// (addresses.ts), plus what a route from that resolver always looks like:
// - it is for the domain asked;
// - it names at least one host, each with a host name or IP, a preference 0–65535 and
//   at least one address;
// - every address is a plain IP (no name for the socket to look up, no IPv6 zone) that
//   this node's dns.allowedTargetNetworks lets mail go to.
// One bad address spoils the whole answer: a resolver that follows these rules never
// sends one, so the rest of that answer is not to be trusted either.
import { isIP } from "node:net";
import type { MailRoute } from "../../protocol/route.ts";
import { makeAddressFilter, type AddressFilter } from "./addresses.ts";
import { normalizeName } from "./dns-client.ts";

export interface RouteCheck {
  /** What is wrong with `route` as the answer for `domain`; empty when it may be used. */
  readonly problems: (domain: string, route: MailRoute) => ReadonlyArray<string>;
}

export const makeRouteCheck = (allowedNetworks: ReadonlyArray<string>): RouteCheck => {
  const filter = makeAddressFilter(allowedNetworks);
  return { problems: (domain, route) => routeProblems(domain, route, filter) };
};

const routeProblems = (domain: string, route: MailRoute, filter: AddressFilter): ReadonlyArray<string> => {
  const problems: string[] = [];
  if (normalizeName(route.domain) !== normalizeName(domain)) problems.push(`answer is for ${JSON.stringify(route.domain)}`);
  if (route.hosts.length === 0) problems.push("no hosts");
  for (const host of route.hosts) problems.push(...hostProblems(host, filter));
  return problems;
};

const hostProblems = (host: MailRoute["hosts"][number], filter: AddressFilter): ReadonlyArray<string> => {
  const problems: string[] = [];
  const name = JSON.stringify(host.name);
  if (!isHostName(host.name) && !isPlainIp(host.name)) problems.push(`host name ${name} is not a host name`);
  if (!Number.isInteger(host.preference) || host.preference < 0 || host.preference > 65535) {
    problems.push(`host ${name} has preference ${host.preference}`);
  }
  if (host.addresses.length === 0) problems.push(`host ${name} has no address`);
  const notIp = host.addresses.filter((address) => !isPlainIp(address));
  if (notIp.length > 0) problems.push(`host ${name}: not an IP address: ${notIp.map((a) => JSON.stringify(a)).join(", ")}`);
  const { refused } = filter.partition(host.addresses.filter(isPlainIp));
  if (refused.length > 0) problems.push(`host ${name}: ${refused.join(", ")} outside dns.allowedTargetNetworks`);
  return problems;
};

/** An IPv4 or IPv6 address as DNS gives them: no zone ("fe80::1%eth0" escapes the network checks and is never in a DNS answer). */
const isPlainIp = (text: string): boolean => isIP(text) !== 0 && !text.includes("%");

// RFC 1123 §2.1 labels; "_" tolerated, as some MX names carry one and resolvers pass them on.
const LABEL = /^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$/i;

/** A DNS host name: 1–253 characters of dot-separated labels, no trailing dot (routes carry names normalized). */
export const isHostName = (name: string): boolean => name.length > 0 && name.length <= 253 && name.split(".").every((label) => LABEL.test(label));
