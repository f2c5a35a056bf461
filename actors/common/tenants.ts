// Tenants of the NATS API (`api.tenants`): each owns a set of sender domains. A message
// belongs to the tenant owning its sender's domain, else to "default"; with no tenants
// configured everything is "default".
import { domainOf } from "./domains.ts";

export const DEFAULT_TENANT = "default";

export const tenantOf = (
  sender: string,
  tenants: ReadonlyArray<{ readonly name: string; readonly senderDomains: ReadonlyArray<string> }>,
): string => {
  if (!sender.includes("@")) return DEFAULT_TENANT;
  const domain = domainOf(sender);
  return tenants.find((tenant) => tenant.senderDomains.some((owned) => owned.toLowerCase() === domain))?.name ?? DEFAULT_TENANT;
};
