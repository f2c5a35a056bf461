// Which tenant a message belongs to: the tenant owning its sender's domain (`api.tenants`),
// else "default". With no tenants configured, every message is the default tenant's.
import { domainOf } from "./domains.ts";

export const DEFAULT_TENANT = "default";

export const tenantOf = (sender: string, tenants: ReadonlyArray<{ name: string; senderDomains: ReadonlyArray<string> }>): string => {
  if (tenants.length === 0 || !sender.includes("@")) return DEFAULT_TENANT;
  const domain = domainOf(sender).toLowerCase();
  return tenants.find((tenant) => tenant.senderDomains.some((owned) => owned.toLowerCase() === domain))?.name ?? DEFAULT_TENANT;
};
