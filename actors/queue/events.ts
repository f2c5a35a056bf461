// What every event of a message says about it, and the "accepted" events `accept` commits
// with the message. Pure: the node, the time and the tenant resolution come in as arguments.
import type { EventDraft } from "../../protocol/events.ts";
import { domainOf } from "../common/domains.ts";
import { entryIdOf, type Route } from "./entry.ts";

export interface EventSource {
  /** This node's id. */
  readonly node: string;
  /** The tenant of a sender address (actors/common/tenants.ts with the configured tenants). */
  readonly tenantOf: (sender: string) => string;
}

type Attributes = Readonly<Record<string, unknown>> | undefined;

/** The destination domain of a route: the domain, or the mailbox's domain. */
export const domainOfRoute = (route: Route): string => (route.kind === "remote" ? route.domain : domainOf(route.user));

/**
 * Tenant and labels every event of a message carries: the tenant a submit recorded
 * (`attributes.tenant`) or the one owning the sender's domain, and the submit's tags and
 * metadata when they have the expected shape.
 */
export const labelsOf = (source: EventSource, sender: string, attributes: Attributes) => {
  const tags = attributes?.tags;
  const metadata = attributes?.metadata;
  const validTags = Array.isArray(tags) && tags.every((tag) => typeof tag === "string");
  const validMetadata =
    typeof metadata === "object" && metadata !== null && !Array.isArray(metadata) && Object.values(metadata).every((value) => typeof value === "string");
  return {
    tenant: typeof attributes?.tenant === "string" ? attributes.tenant : source.tenantOf(sender),
    ...(validTags ? { tags: tags as ReadonlyArray<string> } : {}),
    ...(validMetadata ? { metadata: metadata as Readonly<Record<string, string>> } : {}),
  };
};

export interface AcceptedMessage {
  readonly id: string;
  readonly sender: string;
  readonly routes: ReadonlyArray<{ readonly route: Route; readonly recipients: ReadonlyArray<string> }>;
  readonly attributes?: Attributes;
}

/** One "accepted" event per recipient, in route order, for the message `accept` commits. */
export const acceptedEvents = (source: EventSource, message: AcceptedMessage, size: number, now: number): ReadonlyArray<EventDraft> => {
  const labels = labelsOf(source, message.sender, message.attributes);
  return message.routes.flatMap(({ route, recipients }, n) =>
    recipients.map(
      (rcpt): EventDraft => ({
        type: "accepted",
        time: now,
        node: source.node,
        ...labels,
        msg: message.id,
        entry: entryIdOf(message.id, n),
        domain: domainOfRoute(route),
        rcpt,
        sender: message.sender,
        size,
      }),
    ),
  );
};
