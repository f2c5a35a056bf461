// The reputation keys a report that came back is counted under (actors/delivery/reputation.ts):
// the ones the delivery it is about counted under, read from the message's status.
//
// - sender domain: the message's envelope sender's (none for the null sender);
// - source address: the pool address the delivery left from, as its attempt recorded it;
//   for an attempt recorded without one (before attempts recorded it) the report's
//   Source-IP when that is one of the pool addresses, else the system's default address;
//   none when no attempt reached an MX;
// - provider: by the MX host the delivery went to, as delivery derives it; none without one.
//
// Pure.
import type { RecipientAttempt, RecipientView } from "../../protocol/status.ts";
import { domainOf } from "../common/domains.ts";
import { providerOfHosts, type ProviderTable } from "../delivery/providers.ts";
import { DEFAULT_SOURCE } from "../delivery/reputation-holds.ts";
import type { OutcomeKeys } from "../delivery/reputation.ts";

export interface KeySources {
  /** The IP pool addresses of the cluster (config `delivery.pools`). */
  readonly poolAddresses: ReadonlySet<string>;
  readonly providers: ProviderTable;
}

/** The attempt that reached the recipient's MX: the last delivered one, else the last that reached one. */
const deliveryOf = (history: ReadonlyArray<RecipientAttempt>): RecipientAttempt | undefined => {
  const reached = history.filter((attempt) => attempt.mx !== undefined);
  return reached.findLast((attempt) => attempt.status === "delivered") ?? reached.at(-1);
};

export const reputationKeysOf = (sender: string, view: RecipientView, sourceIp: string | undefined, sources: KeySources): OutcomeKeys => {
  const delivery = deliveryOf(view.history);
  const reportedSource = sourceIp !== undefined && sources.poolAddresses.has(sourceIp) ? sourceIp : undefined;
  return {
    senderDomain: sender === "" ? undefined : domainOf(sender),
    source: delivery === undefined ? undefined : (delivery.source ?? reportedSource ?? DEFAULT_SOURCE),
    provider: delivery?.mx === undefined ? undefined : providerOfHosts([delivery.mx], sources.providers),
  };
};
