// Which addresses mail may be sent to, and in what order. An MX that points into
// loopback, a private network or link-local space would make this node connect to
// itself or to machines behind it (a relay into the internal network), so such targets
// are refused unless the operator allows those networks.
import { BlockList, isIP, isIPv4 } from "node:net";

export type AddressFamilies = "ipv4" | "ipv6" | "ipv4-first" | "ipv6-first";

export interface AddressPolicy {
  /** Which address families to look up, and which comes first within one host. */
  readonly families: AddressFamilies;
  /** CIDRs that are not public but may still be delivered to (tests allow 127.0.0.0/8). */
  readonly allowedNetworks: ReadonlyArray<string>;
}

export const defaultAddressPolicy: AddressPolicy = { families: "ipv4-first", allowedNetworks: [] };

const ADDRESS_TYPES: Record<AddressFamilies, ReadonlyArray<"A" | "AAAA">> = {
  ipv4: ["A"],
  ipv6: ["AAAA"],
  "ipv4-first": ["A", "AAAA"],
  "ipv6-first": ["AAAA", "A"],
};

/** The A/AAAA queries a host needs under this policy, the preferred family first. */
export const addressTypes = (families: AddressFamilies): ReadonlyArray<"A" | "AAAA"> => ADDRESS_TYPES[families];

// Not reachable as a public mail server: "this network", loopback, RFC 1918, shared
// address space (RFC 6598), link-local, multicast, reserved and broadcast; IPv6 unspecified,
// loopback, unique-local, link-local, multicast. IPv4-mapped IPv6 is matched by BlockList
// against the IPv4 ranges.
const NON_PUBLIC: ReadonlyArray<readonly [string, number, "ipv4" | "ipv6"]> = [
  ["0.0.0.0", 8, "ipv4"],
  ["10.0.0.0", 8, "ipv4"],
  ["100.64.0.0", 10, "ipv4"],
  ["127.0.0.0", 8, "ipv4"],
  ["169.254.0.0", 16, "ipv4"],
  ["172.16.0.0", 12, "ipv4"],
  ["192.168.0.0", 16, "ipv4"],
  ["224.0.0.0", 4, "ipv4"],
  ["240.0.0.0", 4, "ipv4"],
  ["::", 128, "ipv6"],
  ["::1", 128, "ipv6"],
  ["fc00::", 7, "ipv6"],
  ["fe80::", 10, "ipv6"],
  ["ff00::", 8, "ipv6"],
];

const blockListOf = (networks: ReadonlyArray<readonly [string, number, "ipv4" | "ipv6"]>): BlockList => {
  const list = new BlockList();
  for (const [network, prefix, family] of networks) list.addSubnet(network, prefix, family);
  return list;
};

const nonPublic = blockListOf(NON_PUBLIC);

/** "a.b.c.d/n" or "x::y/n" (config has validated them); a bare address is a /32 or /128. */
const parseCidr = (cidr: string): readonly [string, number, "ipv4" | "ipv6"] | undefined => {
  const [address = "", prefix] = cidr.split("/");
  const version = isIP(address);
  if (version === 0) return undefined;
  return [address, prefix === undefined ? (version === 4 ? 32 : 128) : Number(prefix), version === 4 ? "ipv4" : "ipv6"];
};

export interface AddressFilter {
  /** Splits addresses into those mail may go to and those refused. */
  partition(addresses: ReadonlyArray<string>): { readonly allowed: ReadonlyArray<string>; readonly refused: ReadonlyArray<string> };
}

const VERDICTS_KEPT = 4096;

export const makeAddressFilter = (allowedNetworks: ReadonlyArray<string>): AddressFilter => {
  const allowed = blockListOf(allowedNetworks.flatMap((cidr) => {
    const parsed = parseCidr(cidr);
    return parsed === undefined ? [] : [parsed];
  }));
  // BlockList.check builds a SocketAddress per call, a tenth of a cached route's cost; the
  // same few MX addresses come back all the time, so remember verdicts (bounded: cleared when full).
  const verdicts = new Map<string, boolean>();
  const permitted = (address: string) => {
    const known = verdicts.get(address);
    if (known !== undefined) return known;
    const family = isIPv4(address) ? "ipv4" : "ipv6";
    const verdict = !nonPublic.check(address, family) || allowed.check(address, family);
    if (verdicts.size >= VERDICTS_KEPT) verdicts.clear();
    verdicts.set(address, verdict);
    return verdict;
  };
  return {
    partition: (addresses) => ({ allowed: addresses.filter(permitted), refused: addresses.filter((address) => !permitted(address)) }),
  };
};
