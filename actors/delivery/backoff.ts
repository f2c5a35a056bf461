// When a deferred entry is tried again: exponential in the attempts made, capped, with
// ±20% jitter so a backlog deferred at one moment does not return all at once.
export interface RetrySchedule {
  readonly baseMs: number;
  readonly maxMs: number;
}

export const retryDelayMs = (schedule: RetrySchedule, attemptsMade: number, random: number): number => {
  const exponential = schedule.baseMs * 2 ** Math.min(Math.max(attemptsMade - 1, 0), 30);
  return Math.round(Math.min(schedule.maxMs, exponential) * (0.8 + 0.4 * random));
};
