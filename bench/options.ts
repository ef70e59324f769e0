import { resolve } from 'node:path';

export const PROJECT_ROOT = resolve(__dirname, '..');

export interface BenchOptions {
  /** A PostgreSQL server to create a fresh database on; null means a fresh SQLite file. */
  postgresUrl: string | null;
  redisUrl: string;
  /** Instances driven through the lifecycle, and jobs given to the floor. */
  n: number;
  /** Table sizes the growth phase measures at, smallest first. */
  growth: number[];
  /** Requests in each accept-rate measurement. */
  acceptRequests: number;
  /** Accept-rate rounds at each growth size; each figure reported is the rounds' median. */
  acceptRounds: number;
  /** Connections of the load generator. */
  concurrency: number;
  workerConcurrency: number;
  overheadActions: number;
  out: string;
  /** Extra `node` arguments for the service, e.g. `--require` of a profiler. */
  nodeArgs: string[];
  /** Whether these are the sizes, whose results are the ones worth keeping. */
  fullSize: boolean;
}

const USAGE = `Usage: npm run bench -- [options]

  --database-url URL        postgres://user@host:port/db: bench on a fresh database created on that
                            server (and dropped after); default: a fresh SQLite file
  --n N                     instances per lifecycle phase and jobs per floor run (default 2000)
  --growth A,B              table sizes of the growth phase (default 1000,100000)
  --accept N                requests per accept-rate measurement (default max(1000, 2 x n))
  --rounds R                accept-rate rounds at each growth size, reported by their median
                            (default 3)
  --concurrency C           load generator connections (default 64)
  --worker-concurrency W    WORKER_CONCURRENCY of the service and of the floor's worker (default 10)
  --overhead K              sequential actions of the overhead phase (default 200)
  --redis-url URL           Redis for the service and the floor (default $REDIS_URL or
                            redis://127.0.0.1:6379)
  --out FILE                JSON results (default bench/results/latest-<sqlite|postgres>.json, or
                            latest-<kind>-small.json when not at the default sizes)
  --node-args "ARGS"        extra node arguments for the service process, space-separated
                            (e.g. "--require ./my-profiler.js"); figures are then not comparable
`;

export class UsageError extends Error {}

export function usage(): string {
  return USAGE;
}

export function parseOptions(argv: readonly string[]): BenchOptions | 'help' {
  const raw = new Map<string, string>();
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '--help' || arg === '-h') return 'help';
    const match = /^--([a-z-]+)(?:=(.*))?$/.exec(arg);
    if (!match) throw new UsageError(`Unexpected argument '${arg}'`);
    const value = match[2] ?? argv[++i];
    if (value === undefined) throw new UsageError(`--${match[1]} needs a value`);
    raw.set(match[1], value);
  }
  const known = [
    'database-url',
    'n',
    'growth',
    'accept',
    'rounds',
    'concurrency',
    'worker-concurrency',
    'overhead',
    'redis-url',
    'out',
    'node-args',
  ];
  for (const key of raw.keys()) {
    if (!known.includes(key)) throw new UsageError(`Unknown option --${key}`);
  }

  const postgresUrl = raw.get('database-url') ?? null;
  if (postgresUrl !== null && !/^postgres(ql)?:\/\/.+/.test(postgresUrl)) {
    throw new UsageError('--database-url must be a postgres:// URL (SQLite is the default)');
  }
  const n = int(raw, 'n', 2000, 1);
  const growth = (raw.get('growth') ?? '1000,100000').split(',').map((part) => {
    const size = Number(part.trim());
    if (!Number.isInteger(size) || size < 0) {
      throw new UsageError(`--growth takes whole numbers, got '${part}'`);
    }
    return size;
  });
  if (growth.some((size, i) => i > 0 && size <= growth[i - 1])) {
    throw new UsageError('--growth sizes must increase');
  }
  const acceptRequests = int(raw, 'accept', Math.max(1000, 2 * n), 1);
  const acceptRounds = int(raw, 'rounds', 3, 1);
  const concurrency = int(raw, 'concurrency', 64, 1);
  const workerConcurrency = int(raw, 'worker-concurrency', 10, 1);
  const overheadActions = int(raw, 'overhead', 200, 2);
  const fullSize =
    n === 2000 &&
    growth.join(',') === '1000,100000' &&
    !raw.has('accept') &&
    acceptRounds === 3 &&
    concurrency === 64 &&
    overheadActions === 200 &&
    !raw.has('node-args');
  const kind = postgresUrl ? 'postgres' : 'sqlite';
  const out = resolve(
    raw.get('out') ??
      resolve(PROJECT_ROOT, 'bench/results', `latest-${kind}${fullSize ? '' : '-small'}.json`),
  );
  return {
    postgresUrl,
    redisUrl: raw.get('redis-url') ?? process.env.REDIS_URL ?? 'redis://127.0.0.1:6379',
    n,
    growth,
    acceptRequests,
    acceptRounds,
    concurrency,
    workerConcurrency,
    overheadActions,
    out,
    nodeArgs: (raw.get('node-args') ?? '').split(' ').filter(Boolean),
    fullSize,
  };
}

function int(raw: Map<string, string>, key: string, fallback: number, min: number): number {
  const text = raw.get(key);
  if (text === undefined) return fallback;
  const value = Number(text);
  if (!Number.isInteger(value) || value < min) {
    throw new UsageError(`--${key} must be a whole number of at least ${min}, got '${text}'`);
  }
  return value;
}
