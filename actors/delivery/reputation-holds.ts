// What delivery asks of reputation thresholds (actors/delivery/reputation.ts) before it
// sends: is this source address held (its site actors pause or slow, actors/delivery/sites.ts),
// and may mail of this sender domain go now (actors/delivery/dispatch.ts). Kept apart so
// the sending side depends on this small interface, not on the counters.
import type { ReputationHold } from "../../protocol/delivery.ts";

/** The key of the system's own address (mail without an IP pool) among source addresses. */
export const DEFAULT_SOURCE = "default";

export const sourceKeyOf = (address: string | undefined): string => address ?? DEFAULT_SOURCE;

/** A source address held by a threshold: paused until a time, or slowed to a back-off level. */
export interface SourceHold {
  /** 0: not paused. */
  readonly pausedUntil: number;
  /** Back-off level the address's sites run at, at least (0: none); see actors/delivery/throttle.ts. */
  readonly level: number;
  readonly rule: string;
}

export interface ReputationHolds {
  /** The hold on a source address now (undefined: the system's default address), if any. */
  readonly source: (address: string | undefined) => SourceHold | undefined;
  /**
   * Whether a message of this sender domain may go at `now`; else the result that defers it
   * unsent (paused, or slowed and not its turn). A message let through takes the turn.
   */
  readonly sender: (senderDomain: string, now: number) => ReputationHold | undefined;
  /** Calls `listener` with the source's key (`sourceKeyOf`) whenever its hold starts, changes or ends; returns the unsubscribe. */
  readonly onSourceChange: (listener: (sourceKey: string) => void) => () => void;
}

export const NO_HOLDS: ReputationHolds = { source: () => undefined, sender: () => undefined, onSourceChange: () => () => undefined };

/** The result a job of a paused source address gets. */
export const sourcePaused = (address: string | undefined, hold: SourceHold): ReputationHold => ({
  _tag: "ReputationHold",
  dimension: "source",
  key: sourceKeyOf(address),
  rule: hold.rule,
  action: "pause",
  until: hold.pausedUntil,
});
