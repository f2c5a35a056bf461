// Which tenant a message belongs to: the tenant owning its sender's domain (the envelope
// sender, case-insensitive), else "default". With no tenants configured, everything is
// "default". Events, submit and status use this one rule.
import { domainOf } from "./domains.ts";

export const DEFAULT_TENANT = "default";

export const tenantOf = (sender: string, tenants: ReadonlyArray<{ name: string; senderDomains: ReadonlyArray<string> }>): string => {
  if (sender === "" || tenants.length === 0) return DEFAULT_TENANT;
  const domain = domainOf(sender).toLowerCase();
  return tenants.find((tenant) => tenant.senderDomains.some((d) => d.toLowerCase() === domain))?.name ?? DEFAULT_TENANT;
};
