// IP networks written as CIDRs, and whether an address lies in one. The only
// implementation in Tern, on node:net's BlockList: config validation, trusted relay
// networks, POP3's plaintext-login networks and the resolver's refusal of non-public MX
// targets all use it. BlockList also matches an IPv4-mapped IPv6 address
// (::ffff:127.0.0.1, as a dual-stack socket reports IPv4 clients) against IPv4 networks.
import { BlockList, isIP } from "node:net";

export interface Subnet {
  readonly network: string;
  readonly prefix: number;
  readonly family: "ipv4" | "ipv6";
}

/** "a.b.c.d/n" or "x::y/n"; a bare address is a /32 or /128. Undefined when malformed. */
export const parseCidr = (cidr: string): Subnet | undefined => {
  const [network = "", prefixText, ...rest] = cidr.split("/");
  const version = isIP(network);
  if (version === 0 || rest.length > 0) return undefined;
  const bits = version === 4 ? 32 : 128;
  if (prefixText !== undefined && !/^\d{1,3}$/.test(prefixText)) return undefined;
  const prefix = prefixText === undefined ? bits : Number(prefixText);
  if (prefix > bits) return undefined;
  return { network, prefix, family: version === 4 ? "ipv4" : "ipv6" };
};

export interface Networks {
  /** True when `address` (IPv4, IPv6 or IPv4-mapped IPv6) lies in one of the networks; false for anything that is not an address. */
  readonly has: (address: string) => boolean;
}

/** Verdicts remembered per list (bounded: cleared when full). */
const VERDICTS_KEPT = 4096;

/**
 * The networks of `cidrs`. A malformed CIDR matches nothing (config validation has
 * refused it already), so a mistake can only narrow a list, never widen it.
 */
export const networksOf = (cidrs: ReadonlyArray<string>): Networks => {
  const list = new BlockList();
  for (const cidr of cidrs) {
    const subnet = parseCidr(cidr);
    if (subnet) list.addSubnet(subnet.network, subnet.prefix, subnet.family);
  }
  // BlockList.check builds a SocketAddress per call; the same few addresses (clients,
  // MX hosts) come back all the time, so their verdicts are remembered.
  const verdicts = new Map<string, boolean>();
  return {
    has: (address) => {
      const known = verdicts.get(address);
      if (known !== undefined) return known;
      const version = isIP(address);
      const verdict = version !== 0 && list.check(address, version === 4 ? "ipv4" : "ipv6");
      if (verdicts.size >= VERDICTS_KEPT) verdicts.clear();
      verdicts.set(address, verdict);
      return verdict;
    },
  };
};

/** Lists built for `inNetworks`, per array: configs hand the same array to every call. */
const built = new WeakMap<ReadonlyArray<string>, Networks>();

/** `networksOf(cidrs).has(address)`, building the list once per array of CIDRs. */
export const inNetworks = (address: string, cidrs: ReadonlyArray<string>): boolean => {
  let networks = built.get(cidrs);
  if (networks === undefined) {
    networks = networksOf(cidrs);
    built.set(cidrs, networks);
  }
  return networks.has(address);
};

/**
 * A client's address as people and tools write it: an IPv4 client of a dual-stack ("::")
 * listener is reported as ::ffff:a.b.c.d, which smtp-server already shortens. POP3 and
 * IMAP shorten it the same way, so logs (and fail2ban, which bans what they name) and the
 * per-IP login limits see one address per client whatever the listener.
 */
export const clientAddress = (address: string): string => {
  const mapped = /^::ffff:(\d{1,3}(?:\.\d{1,3}){3})$/i.exec(address);
  return mapped ? mapped[1]! : address;
};
