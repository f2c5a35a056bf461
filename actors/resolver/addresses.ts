// Which addresses mail may be sent to, and in what order. An MX that points into
// loopback, a private network or link-local space would make this node connect to
// itself or to machines behind it (a relay into the internal network), so such targets
// are refused unless the operator allows those networks.
import { networksOf } from "../common/networks.ts";

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
const NON_PUBLIC: ReadonlyArray<string> = [
  "0.0.0.0/8",
  "10.0.0.0/8",
  "100.64.0.0/10",
  "127.0.0.0/8",
  "169.254.0.0/16",
  "172.16.0.0/12",
  "192.168.0.0/16",
  "224.0.0.0/4",
  "240.0.0.0/4",
  "::/128",
  "::1/128",
  "fc00::/7",
  "fe80::/10",
  "ff00::/8",
];

const nonPublic = networksOf(NON_PUBLIC);

export interface AddressFilter {
  /** Splits addresses into those mail may go to and those refused. */
  partition(addresses: ReadonlyArray<string>): { readonly allowed: ReadonlyArray<string>; readonly refused: ReadonlyArray<string> };
}

export const makeAddressFilter = (allowedNetworks: ReadonlyArray<string>): AddressFilter => {
  const allowed = networksOf(allowedNetworks);
  const permitted = (address: string) => !nonPublic.has(address) || allowed.has(address);
  return {
    partition: (addresses) => ({ allowed: addresses.filter(permitted), refused: addresses.filter((address) => !permitted(address)) }),
  };
};
