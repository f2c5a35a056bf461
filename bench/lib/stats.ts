// Small, exact statistics for benchmark reports.

export interface Percentiles {
  readonly count: number;
  readonly p50: number;
  readonly p90: number;
  readonly p99: number;
  readonly max: number;
}

/** Nearest-rank percentiles over all samples (no sampling, no interpolation). */
export const percentiles = (samples: ReadonlyArray<number>): Percentiles => {
  const sorted = [...samples].sort((a, b) => a - b);
  const rank = (p: number) => sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))] ?? 0;
  return { count: sorted.length, p50: rank(50), p90: rank(90), p99: rank(99), max: sorted[sorted.length - 1] ?? 0 };
};

export const perSecond = (count: number, ms: number) => (ms > 0 ? (count * 1000) / ms : 0);

export const round = (value: number, digits = 1) => Math.round(value * 10 ** digits) / 10 ** digits;
