// Mailbox providers by the MX host names their domains resolve to: one provider is many
// domains (every Google Workspace domain has Google's MX hosts) and several MX names. A
// site budget can name a provider (`provider:gmail`) instead of one host pattern, and then
// holds for every site with an MX host of that provider. The starter table covers the
// large providers; `delivery.providers` adds to it or replaces an entry.
import { matchesDomain } from "../common/domains.ts";

/** Provider name → MX host names or ".suffix" patterns. */
export type ProviderTable = Readonly<Record<string, ReadonlyArray<string>>>;

export const starterProviders: ProviderTable = {
  gmail: [".google.com", ".googlemail.com"],
  microsoft: [".outlook.com", ".hotmail.com"],
  yahoo: [".yahoodns.net"],
  apple: [".icloud.com"],
  gmx: [".gmx.net", ".web.de"],
  yandex: [".yandex.net", ".yandex.ru"],
  mailru: [".mail.ru"],
  zoho: [".zoho.com", ".zoho.eu"],
  fastmail: [".messagingengine.com"],
  proton: [".protonmail.ch"],
  comcast: [".comcast.net"],
};

const PROVIDER_PREFIX = "provider:";

/** The provider a budget key names ("provider:gmail" → "gmail"), if it names one. */
const providerOf = (key: string): string | undefined => (key.startsWith(PROVIDER_PREFIX) ? key.slice(PROVIDER_PREFIX.length) : undefined);

/** The MX host patterns of a budget key: a provider's from the table, else the key itself; undefined for an unknown provider. */
export const patternsOf = (key: string, providers: ProviderTable): ReadonlyArray<string> | undefined => {
  const provider = providerOf(key);
  return provider === undefined ? [key] : providers[provider];
};

/** Destinations of no provider of the table: warm-up caps count them together as this one provider. */
export const OTHER_PROVIDER = "other";

/** The provider of a set of MX hosts (the first of the table with one of them), else OTHER_PROVIDER. */
export const providerOfHosts = (hosts: ReadonlyArray<string>, providers: ProviderTable): string => {
  for (const [name, patterns] of Object.entries(providers)) {
    if (hosts.some((host) => patterns.some((pattern) => matchesDomain(pattern, host)))) return name;
  }
  return OTHER_PROVIDER;
};

/** Whether an MX host name belongs to a budget key (a host pattern, or a provider of the table). */
export const keyMatchesHost = (key: string, providers: ProviderTable, host: string): boolean =>
  (patternsOf(key, providers) ?? []).some((pattern) => matchesDomain(pattern, host));

const DOMAIN_PREFIX = "domain:";

/** The recipient domain a budget key names ("domain:example.com", or "domain:.example.com": the domain and its subdomains), if it names one. */
export const domainKeyOf = (key: string): string | undefined => (key.startsWith(DOMAIN_PREFIX) ? key.slice(DOMAIN_PREFIX.length) : undefined);

/**
 * Whether mail for `domain`, going to MX hosts `hosts`, falls under a budget key: a
 * recipient domain (`domain:`), a provider of the table (`provider:`), or an MX host pattern.
 */
export const keyMatchesRoute = (key: string, providers: ProviderTable, route: { readonly domain: string; readonly hosts: ReadonlyArray<{ readonly name: string }> }): boolean => {
  const domain = domainKeyOf(key);
  if (domain !== undefined) return matchesDomain(domain, route.domain) || route.domain.toLowerCase() === domain.slice(1).toLowerCase();
  return route.hosts.some((host) => keyMatchesHost(key, providers, host.name));
};
