/** Summary of a set of durations in milliseconds. */
export interface Latency {
  count: number;
  p50Ms: number;
  p99Ms: number;
  meanMs: number;
  maxMs: number;
}

/** Linear interpolation between closest ranks, so p99 of 200 samples is not simply the maximum. */
export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return NaN;
  const rank = (p / 100) * (sorted.length - 1);
  const low = Math.floor(rank);
  const high = Math.ceil(rank);
  return sorted[low] + (sorted[high] - sorted[low]) * (rank - low);
}

export function summarize(samples: readonly number[]): Latency {
  const sorted = [...samples].sort((a, b) => a - b);
  const sum = sorted.reduce((a, b) => a + b, 0);
  return {
    count: sorted.length,
    p50Ms: round(percentile(sorted, 50)),
    p99Ms: round(percentile(sorted, 99)),
    meanMs: round(sorted.length ? sum / sorted.length : NaN),
    maxMs: round(sorted.length ? sorted[sorted.length - 1] : NaN),
  };
}

export function round(value: number, digits = 2): number {
  const scale = 10 ** digits;
  return Math.round(value * scale) / scale;
}

export function ratio(value: number, base: number): number {
  return base > 0 ? round(value / base, 3) : NaN;
}

/** CPU milliseconds per unit between two readings in seconds; null where either is unknown. */
export function cpuMsPer(
  before: number | null,
  after: number | null,
  count: number,
): number | null {
  return before === null || after === null ? null : round(((after - before) * 1000) / count, 3);
}
