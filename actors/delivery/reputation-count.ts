// Counts for another node's reputation figures. A bounce or a complaint comes back to
// whichever node the report's MX points at, but the delivery it is about was counted by
// the node that sent the message; it is counted there too, so that each node's complaint
// and bounce rates set the reports against the deliveries they are about, and its
// thresholds judge those. (Counted where the report arrived, a node that receives every
// report would see complaints over only its own share of deliveries, and the nodes that
// sent the rest none.) `tern reputation` sums the nodes either way.
//
// Best effort, as the figures are (in memory, started afresh at a restart): the report's
// event is already on disk when the count is sent, and a count the sending node does not
// acknowledge is counted here instead, so the cluster's sums still hold it. An answer lost
// on the way back is why a count is tried again before that: each count carries an id, the
// same on every try, and the sending node counts an id once, so only a count whose every
// answer was lost is counted on both nodes.
//
// The keys stay bounded on the receiving side as they are for its own outcomes: a source
// address it does not know and a provider not in its table are not counted.
import { Duration, Effect, Schedule, Schema, type Scope } from "effect";
import type { NatsConnection } from "@nats-io/transport-node";
import type { MalformedMessage, RemoteUnavailable } from "../../protocol/errors.ts";
import { ReputationCount, ReputationCounted } from "../../protocol/reputation.ts";
import type { Subjects } from "../../protocol/subjects.ts";
import { callEndpoint, serveEndpoint, servedInScope, type Endpoint } from "../runtime/remote.ts";
import { OTHER_PROVIDER, type ProviderTable } from "./providers.ts";
import { DEFAULT_SOURCE } from "./reputation-holds.ts";
import type { OutcomeKeys, Reputation } from "./reputation.ts";
import type { Outcome } from "./reputation-window.ts";

export const reputationCountEndpoint: Endpoint<ReputationCount, ReputationCounted, never> = { request: ReputationCount, response: ReputationCounted, error: Schema.Never };

/** An outcome learnt after the attempt: what the feedback intake counts. */
export type LaterOutcome = Extract<Outcome, { readonly _tag: "complained" | "bounced" }>;

/** What this node counts under its own keys: a source address of its pools (or the default), a provider of its table (or "other"). */
export interface KnownKeys {
  readonly sources: ReadonlySet<string>;
  readonly providers: ProviderTable;
}

/** The keys as this node may count them: one it does not know is left out. */
export const knownKeys = (about: OutcomeKeys, known: KnownKeys): OutcomeKeys => ({
  senderDomain: about.senderDomain,
  source: about.source === DEFAULT_SOURCE || (about.source !== undefined && known.sources.has(about.source)) ? about.source : undefined,
  provider: about.provider === OTHER_PROVIDER || (about.provider !== undefined && Object.hasOwn(known.providers, about.provider)) ? about.provider : undefined,
});

/** Counts one later outcome in `reputation` (a complaint through `recordComplaint`, a bounce through `recordOutcome`). */
export const countLater = (reputation: Pick<Reputation, "recordComplaint" | "recordOutcome">, about: OutcomeKeys, outcome: LaterOutcome): void => {
  if (outcome._tag === "complained") reputation.recordComplaint(about);
  else reputation.recordOutcome(about, outcome);
};

/**
 * The ids of the counts made lately, so that a count tried again is not made twice. Past
 * `limit` the oldest are forgotten: the tries of one count span seconds, and a node
 * receiving more than `limit` counts in those seconds is far beyond any feedback volume.
 */
export const makeRecentIds = (limit: number) => {
  const ids = new Set<string>();
  return {
    /** True the first time `id` is seen (it is remembered then). */
    first: (id: string): boolean => {
      if (ids.has(id)) return false;
      ids.add(id);
      if (ids.size > limit) ids.delete(ids.values().next().value!);
      return true;
    },
  };
};

/** Count ids remembered by the counting node (a few MB at most). */
const RECENT_COUNT_IDS = 20_000;

/** Counts what other nodes send on this node's subject, each id once, until the scope closes. */
export const serveReputationCounts = (
  nc: NatsConnection,
  subjects: Subjects,
  deps: { readonly nodeId: string; readonly reputation: Reputation; readonly known: KnownKeys },
): Effect.Effect<void, never, Scope.Scope> => {
  const recent = makeRecentIds(RECENT_COUNT_IDS);
  return Effect.asVoid(
    servedInScope((run) =>
      serveEndpoint(
        nc,
        subjects.reputationCount(deps.nodeId),
        reputationCountEndpoint,
        ({ id, outcome, ...about }) =>
          Effect.sync(() => {
            if (id === undefined || recent.first(id)) countLater(deps.reputation, knownKeys(about, deps.known), outcome);
            return { value: { node: deps.nodeId } };
          }),
        { run },
      ),
    ),
  );
};

/** One count for the node that sent the message: its id (unique, kept over the tries), the keys and the outcome. */
export interface CountForNode {
  readonly id: string;
  readonly about: OutcomeKeys;
  readonly outcome: LaterOutcome;
}

/** How a count is sent: each try waits `timeoutMs` for the answer; a try without one is made again after `pauseMs`, `tries` in all. */
export interface CountSending {
  readonly timeoutMs: number;
  readonly tries: number;
  readonly pauseMs: number;
}

/** Sends one count to the node that sent the message; fails when no try was acknowledged. */
export const sendReputationCount = (
  nc: NatsConnection,
  subjects: Subjects,
  node: string,
  count: CountForNode,
  sending: CountSending,
): Effect.Effect<void, RemoteUnavailable | MalformedMessage> => {
  const { about } = count;
  const request: ReputationCount = {
    _tag: "ReputationCount",
    id: count.id,
    ...(about.source !== undefined ? { source: about.source } : {}),
    ...(about.senderDomain !== undefined ? { senderDomain: about.senderDomain } : {}),
    ...(about.provider !== undefined ? { provider: about.provider } : {}),
    outcome: count.outcome,
  };
  return callEndpoint(nc, subjects.reputationCount(node), reputationCountEndpoint, request, { timeoutMs: sending.timeoutMs }).pipe(
    // Only silence is tried again: a malformed answer would come back the same.
    Effect.retry({
      times: sending.tries - 1,
      schedule: Schedule.spaced(Duration.millis(sending.pauseMs)),
      while: (error) => error._tag === "RemoteUnavailable",
    }),
    Effect.asVoid,
  );
};
