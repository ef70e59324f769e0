import type { LoadResult } from './client';
import type { LoadCpu } from './service';
import { round } from './stats';

/** The middle value; the mean of the two middle ones for an even count. */
export function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const half = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[half] : round((sorted[half - 1] + sorted[half]) / 2, 3);
}

/**
 * Runs of one kind as one result: each rate, time and latency figure is the median of the runs'
 * (so one run that met a pause of the machine does not decide it, as it would a single run's
 * p99), and the counts (requests, non-2xx answers, errors) are their sums.
 */
export function medianLoad(title: string, runs: readonly LoadResult[]): LoadResult {
  const mid = (pick: (run: LoadResult) => number) => median(runs.map(pick));
  const statusCodes: Record<string, number> = {};
  for (const run of runs) {
    for (const [code, count] of Object.entries(run.statusCodes)) {
      statusCodes[code] = (statusCodes[code] ?? 0) + count;
    }
  }
  const sum = (pick: (run: LoadResult) => number) => runs.reduce((a, run) => a + pick(run), 0);
  return {
    title: runs.length === 1 ? title : `${title}, median of ${runs.length}`,
    count: sum((r) => r.count),
    p50Ms: mid((r) => r.p50Ms),
    p99Ms: mid((r) => r.p99Ms),
    meanMs: mid((r) => r.meanMs),
    maxMs: mid((r) => r.maxMs),
    firstOnConnection: {
      count: sum((r) => r.firstOnConnection.count),
      p50Ms: mid((r) => r.firstOnConnection.p50Ms),
      p99Ms: mid((r) => r.firstOnConnection.p99Ms),
      meanMs: mid((r) => r.firstOnConnection.meanMs),
      maxMs: mid((r) => r.firstOnConnection.maxMs),
    },
    requests: sum((r) => r.requests),
    seconds: mid((r) => r.seconds),
    perSecond: mid((r) => r.perSecond),
    non2xx: sum((r) => r.non2xx),
    errors: sum((r) => r.errors),
    timeouts: sum((r) => r.timeouts),
    statusCodes,
    clientCpuPercent: mid((r) => r.clientCpuPercent),
  };
}

/** Each figure the median of the runs' that have it; null where none has. */
export function medianCpu(runs: readonly LoadCpu[]): LoadCpu {
  const mid = (pick: (cpu: LoadCpu) => number | null) => {
    const known = runs.map(pick).filter((v): v is number => v !== null);
    return known.length ? median(known) : null;
  };
  return {
    msPerRequest: mid((c) => c.msPerRequest),
    mainThreadMsPerRequest: mid((c) => c.mainThreadMsPerRequest),
    mainThreadBusyPercent: mid((c) => c.mainThreadBusyPercent),
  };
}
