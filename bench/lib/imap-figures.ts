// What the imap scenario measures (imap-scenario.ts), kept apart so the scenarios' report type can name it without an import cycle.
import type { Percentiles } from "./stats.ts";

export interface ReadRound {
  readonly selectMs: number;
  readonly headerMs: number;
  readonly headerBytes: number;
  readonly fullMs: number;
  readonly fullBytes: number;
}

export interface ImapFigures {
  /** EXISTS at the first SELECT. */
  readonly messages: number;
  readonly fill: { readonly how: string; readonly seconds: number; readonly perSec: number };
  readonly rounds: ReadonlyArray<ReadRound>;
  /** The median round's figures. */
  readonly selectMs: number;
  readonly headerMs: number;
  readonly headerPerSec: number;
  readonly fullMs: number;
  readonly fullMBPerSec: number;
  /** Start of a delivery → the idling client's EXISTS. */
  readonly idleMs: Percentiles;
  /** Deliveries whose EXISTS did not come within IDLE_TIMEOUT_MS. */
  readonly idleMissed: number;
  readonly idleHow: string;
  /** Server CPU seconds over all read rounds, and per round. */
  readonly readCpuSeconds: number;
  readonly readCpuSecondsPerRound: number;
  readonly idleCpuSeconds: number;
}
