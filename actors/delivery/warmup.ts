// IP warm-up: a new source address earns its reputation with each mailbox provider by
// sending a little, then more, day after day. A warm-up schedule is a curve of daily caps
// by the day of warm-up (day 1 is the address's `since` date), with an optional hourly cap
// per day so a day's allowance is not spent in its first minutes. Caps hold per (source
// address, destination provider); an address past the last day of its curve is warm and
// has no cap.
//
// Days and hours are UTC calendar days and clock hours: every node and operator reads the
// same window, and a window's usage is reset when the next one starts. Pure functions of
// `now`, so tests pass the time in.

export const HOUR_MS = 3_600_000;
export const DAY_MS = 24 * HOUR_MS;

/** A named curve of the config (`delivery.warmupSchedules`). */
export interface WarmupSchedule {
  /** Messages per provider on warm-up day 1, 2, … */
  readonly daily: ReadonlyArray<number>;
  /** Messages per provider in one clock hour of each day (same length as `daily`); none: only the daily cap. */
  readonly hourly?: ReadonlyArray<number> | undefined;
}

/** A source address's warm-up, resolved at config time so the per-message path only does arithmetic. */
export interface SourceWarmup {
  /** The schedule's name, for `tern pools` and metrics. */
  readonly schedule: string;
  /** "YYYY-MM-DD": warm-up day 1. */
  readonly since: string;
  /** `since` as a UTC day number (days since 1970-01-01). */
  readonly startDay: number;
  readonly curve: WarmupSchedule;
}

/** The caps of a cold address now, for each destination provider. */
export interface Caps {
  /** The day of warm-up (1 is `since`); 0 or less: warm-up has not started, and the caps are 0. */
  readonly day: number;
  readonly daily: number;
  readonly hourly: number | undefined;
}

export type CapWindow = "day" | "hour";

/** The UTC day number of a time. */
export const dayOf = (now: number): number => Math.floor(now / DAY_MS);
/** The hour number (hours since the epoch) of a time. */
export const hourOf = (now: number): number => Math.floor(now / HOUR_MS);

/** The UTC day number of a "YYYY-MM-DD" date, or undefined when it is no such date. */
export const parseDay = (date: string): number | undefined => {
  const match = /^(\d{4})-(\d{2})-(\d{2})$/.exec(date);
  if (!match) return undefined;
  const [year, month, day] = [Number(match[1]), Number(match[2]), Number(match[3])];
  const at = Date.UTC(year, month - 1, day);
  const back = new Date(at);
  // Date.UTC rolls 2026-02-30 over to March: such a date is refused, not moved.
  return back.getUTCFullYear() === year && back.getUTCMonth() === month - 1 && back.getUTCDate() === day ? dayOf(at) : undefined;
};

/** The day of warm-up at `now`: 1 on the `since` date. */
export const warmupDay = (warmup: SourceWarmup, now: number): number => dayOf(now) - warmup.startDay + 1;

/**
 * The caps of an address at `now`, or undefined when it is warm (no warm-up, or past the
 * last day of its curve). Before its first day an address sends nothing (caps of 0): it
 * can be put in a pool ahead of time.
 */
export const capsAt = (warmup: SourceWarmup | undefined, now: number): Caps | undefined => {
  if (warmup === undefined) return undefined;
  const day = warmupDay(warmup, now);
  const { daily, hourly } = warmup.curve;
  if (day > daily.length) return undefined;
  if (day < 1) return { day, daily: 0, hourly: 0 };
  return { day, daily: daily[day - 1]!, hourly: hourly?.[day - 1] };
};

/** When a window that is full at `now` opens again: the next UTC day (or the first day of warm-up), or the next hour. */
export const reopensAt = (warmup: SourceWarmup, window: CapWindow, now: number): number => {
  if (window === "hour") return (hourOf(now) + 1) * HOUR_MS;
  return Math.max(dayOf(now) + 1, warmup.startDay) * DAY_MS;
};
