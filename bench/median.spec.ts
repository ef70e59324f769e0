import { median, medianCpu, medianLoad } from './median';
import type { LoadResult } from './client';

function run(perSecond: number, p99Ms: number, statusCodes: Record<string, number>): LoadResult {
  const requests = Object.values(statusCodes).reduce((a, b) => a + b, 0);
  const non2xx = Object.entries(statusCodes)
    .filter(([code]) => !code.startsWith('2'))
    .reduce((a, [, n]) => a + n, 0);
  return {
    title: 'POST /api/instances (1000 rows, round 1)',
    count: requests,
    p50Ms: p99Ms / 3,
    p99Ms,
    meanMs: p99Ms / 2,
    maxMs: p99Ms * 2,
    firstOnConnection: { count: 64, p50Ms: 1, p99Ms: p99Ms, meanMs: 1, maxMs: p99Ms },
    requests,
    seconds: requests / perSecond,
    perSecond,
    non2xx,
    errors: 0,
    timeouts: 0,
    statusCodes,
    clientCpuPercent: 20,
  };
}

describe('median', () => {
  it('takes the middle value of an odd count, whatever the order', () => {
    expect(median([76, 48, 69])).toBe(69);
    expect(median([5])).toBe(5);
  });

  it('takes the mean of the two middle values of an even count', () => {
    expect(median([4, 1, 3, 2])).toBe(2.5);
  });
});

describe('medianLoad', () => {
  it('reports each figure as the median of the rounds, so one slow round does not decide it', () => {
    const rounds = [
      run(1900, 75.9, { '202': 2000 }),
      run(2100, 48.1, { '202': 2000 }),
      run(1950, 69, { '202': 2000 }),
    ];
    const merged = medianLoad('POST /api/instances (1000 rows)', rounds);
    expect(merged.perSecond).toBe(1950);
    expect(merged.p99Ms).toBe(69);
    expect(merged.maxMs).toBe(138);
    expect(merged.firstOnConnection.maxMs).toBe(69);
    expect(merged.title).toBe('POST /api/instances (1000 rows), median of 3');
  });

  it('sums the counts, so a failure in any round stays in the result', () => {
    const merged = medianLoad('POST /api/instances (1000 rows)', [
      run(2000, 50, { '202': 2000 }),
      run(2000, 50, { '202': 1998, '503': 2 }),
      run(2000, 50, { '202': 2000 }),
    ]);
    expect(merged.requests).toBe(6000);
    expect(merged.non2xx).toBe(2);
    expect(merged.statusCodes).toEqual({ '202': 5998, '503': 2 });
  });
});

describe('medianCpu', () => {
  it('takes the median of the rounds that measured, and null when none did', () => {
    expect(
      medianCpu([
        { msPerRequest: 0.6, mainThreadMsPerRequest: 0.5, mainThreadBusyPercent: 95 },
        { msPerRequest: 0.7, mainThreadMsPerRequest: null, mainThreadBusyPercent: 97 },
        { msPerRequest: 0.5, mainThreadMsPerRequest: 0.4, mainThreadBusyPercent: 90 },
      ]),
    ).toEqual({ msPerRequest: 0.6, mainThreadMsPerRequest: 0.45, mainThreadBusyPercent: 95 });
    expect(
      medianCpu([
        { msPerRequest: null, mainThreadMsPerRequest: null, mainThreadBusyPercent: null },
      ]),
    ).toEqual({ msPerRequest: null, mainThreadMsPerRequest: null, mainThreadBusyPercent: null });
  });
});
