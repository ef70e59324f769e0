import {
  ApiClient,
  assertClean,
  BenchError,
  runLoad,
  type LoadResult,
  type LoadSpec,
} from './client';
import type { BenchDatabase } from './database';
import type { CpuMeter, LoadCpu, ServiceProcess } from './service';
import { TRANSITIONAL_STATES } from '../src/state-machine/instance.machine';
import { median, medianCpu, medianLoad } from './median';
import { round } from './stats';

const TRANSITIONAL_QUERY = TRANSITIONAL_STATES.map((s) => `state=${s}`).join('&');
export const LIST_PATH = '/api/instances?state=online&limit=50';
const LIST_REQUESTS = 1000;
/** The accept runs' requests, as their results are titled. */
const CREATE = 'POST /api/instances';
const POLL = 'GET /api/instances/{id}';
const STOP = 'POST /api/instances/{id}/stop';
const titled = (request: string, rows: number, tag = '') => `${request} (${rows} rows${tag})`;
const LIST_WARMUP = 20;

/** One round of the accept runs at a table size. */
export interface AcceptRound {
  /** Instances in the table when the round's creates began: each round adds its own. */
  rows: number;
  create: LoadResult;
  /**
   * `GET /api/instances/{id}` of the created instances once settled, at the bench's
   * concurrency: the read a client repeats while it follows its work by polling `state`.
   */
  poll: LoadResult;
  stop: LoadResult;
  /** The service's CPU over each run, from its first request to its last answer. */
  cpu: { create: LoadCpu; poll: LoadCpu; stop: LoadCpu };
  /** How long the worker took to catch up with each accept run. */
  drainSeconds: { create: number; stop: number };
}

export interface GrowthStep {
  /** Instances in the table when the list was measured. */
  rows: number;
  seedSeconds: number;
  /** `total` of the measured list: the rows it counts. */
  listTotal: number;
  list: LoadResult;
  /** Every accept round, in order. */
  rounds: AcceptRound[];
  /** The rounds as one: each figure is their median (`medianLoad`, `medianCpu`). */
  create: LoadResult;
  poll: LoadResult;
  stop: LoadResult;
  cpu: { create: LoadCpu; poll: LoadCpu; stop: LoadCpu };
  drainSeconds: { create: number; stop: number };
  /**
   * At the first size only: the creates' accept run again with the queue paused, so no job runs
   * beside the requests. What the requests alone cost, and how much of the accept rate the jobs
   * sharing the main thread take.
   */
  queuePaused?: { create: LoadResult; cpu: LoadCpu; drainSeconds: number };
}

export interface GrowthContext {
  api: ApiClient;
  database: BenchDatabase;
  service: ServiceProcess;
  ownerId: string;
  concurrency: number;
  acceptRequests: number;
  /** Accept rounds at each size. */
  acceptRounds: number;
  /** Pauses the service's queue (Bull's global pause); answers its resume. */
  pauseQueue: () => Promise<() => Promise<void>>;
}

/**
 * At a table size: the list a dashboard polls, one client at a time (its latency is the cost of
 * the query), then the accept rate of creates and of actions at the bench's concurrency, in
 * rounds. The accepted instances are left to finish before the next measurement, so each starts
 * with an idle worker; they stay in the table, which is why the next size is topped up by seeding.
 *
 * One accept run lasts a few seconds, and at the default 4,000 requests its p99 is about its
 * 40th-slowest answer: with 64 requests in flight, a single pause of the machine or of the
 * process (a collection, a checkpoint's fsync) delays more than that at once and decides it.
 * Three benches of one build (`--n 200 --growth 1000,100000 --accept 2000`) measured create p99s
 * of 76, 69 and 48 ms at 1,000 rows and 56, 50 and 76 ms at 100,000: growth ratios of 0.73, 0.73
 * and 1.58. Each size therefore runs `acceptRounds` rounds (creates, the polling read, stops) and
 * reports each figure as the rounds' median, keeping every round in the results.
 */
export async function growthStep(
  ctx: GrowthContext,
  size: number,
  first: boolean,
): Promise<GrowthStep> {
  const { api, database } = ctx;
  const load = (spec: Omit<LoadSpec, 'baseUrl' | 'token' | 'abortIf'>) =>
    runLoad({ baseUrl: api.baseUrl, token: api.token, abortIf: () => ctx.service.crash, ...spec });
  const seedStarted = performance.now();
  const present = await database.countInstances();
  if (present < size) await database.seedInstances(ctx.ownerId, size - present);
  await database.settle();
  const seedSeconds = round((performance.now() - seedStarted) / 1000, 3);
  await waitQuiet(ctx, 0);
  const rows = await database.countInstances();

  const listTotal = (await api.expect<{ total: number }>(200, 'GET', LIST_PATH)).total;
  await load({
    title: 'list warm-up',
    connections: 1,
    amount: LIST_WARMUP,
    build: () => ({ method: 'GET', path: LIST_PATH }),
  });
  const list = await load({
    title: `GET list (${rows} rows)`,
    connections: 1,
    amount: LIST_REQUESTS,
    build: () => ({ method: 'GET', path: LIST_PATH }),
  });

  const creates = async (tableRows: number, tag: string) => {
    const ids: string[] = [];
    const meter = ctx.service.meter();
    const result = await load({
      title: titled(CREATE, tableRows, tag),
      connections: ctx.concurrency,
      amount: ctx.acceptRequests,
      build: (i) => ({
        method: 'POST',
        path: '/api/instances',
        body: JSON.stringify({
          name: `accept-${rows}${tag.replace(/\W+/g, '-')}-${i}`,
          flavor: 'small',
        }),
      }),
      onResponse: (status, body) => {
        if (status === 202) ids.push((JSON.parse(body) as { id: string }).id);
      },
      meter,
    });
    if (ids.length !== ctx.acceptRequests) {
      throw new BenchError(
        `create at ${tableRows} rows${tag}: ${ids.length} of ${ctx.acceptRequests} requests were ` +
          `accepted ${JSON.stringify(result.statusCodes)}`,
      );
    }
    return { ids, result, cpu: meter.use(result.requests) };
  };

  const stops = (ids: string[], title: string, meter?: CpuMeter) =>
    load({
      title,
      connections: ctx.concurrency,
      amount: ids.length,
      build: (i) => ({ method: 'POST', path: `/api/instances/${ids[i]}/stop` }),
      meter,
    });

  const rounds: AcceptRound[] = [];
  for (let n = 1; n <= ctx.acceptRounds; n++) {
    const roundRows = n === 1 ? rows : await database.countInstances();
    const tag = ctx.acceptRounds > 1 ? `, round ${n}` : '';
    const create = await creates(roundRows, tag);
    const createDrain = await waitQuiet(ctx, create.ids.length);

    const pollMeter = ctx.service.meter();
    const poll = await load({
      title: titled(POLL, roundRows, tag),
      connections: ctx.concurrency,
      amount: ctx.acceptRequests,
      build: (i) => ({
        method: 'GET',
        path: `/api/instances/${create.ids[i % create.ids.length]}`,
      }),
      meter: pollMeter,
    });

    const stopMeter = ctx.service.meter();
    const stop = await stops(create.ids, titled(STOP, roundRows, tag), stopMeter);
    const stopDrain = await waitQuiet(ctx, create.ids.length);
    rounds.push({
      rows: roundRows,
      create: create.result,
      poll,
      stop,
      cpu: {
        create: create.cpu,
        poll: pollMeter.use(poll.requests),
        stop: stopMeter.use(stop.requests),
      },
      drainSeconds: { create: createDrain, stop: stopDrain },
    });
  }

  let queuePaused: GrowthStep['queuePaused'];
  if (first) {
    const pausedRows = await database.countInstances();
    const resume = await ctx.pauseQueue();
    let paused: Awaited<ReturnType<typeof creates>>;
    try {
      paused = await creates(pausedRows, ', queue paused');
    } catch (error) {
      // The run's own failure is the one to report; the queue's keys go with the run anyway.
      await resume().catch(() => undefined);
      throw error;
    }
    await resume();
    const drainSeconds = await waitQuiet(ctx, paused.ids.length);
    queuePaused = { create: paused.result, cpu: paused.cpu, drainSeconds };
    // Stopped again, unmeasured, as the other accept runs' instances are: the next size's table
    // then holds as many online rows as it did before this run existed.
    const restop = await stops(paused.ids, `${STOP} (after the paused run)`);
    const problems = assertClean(restop);
    if (problems.length > 0) throw new BenchError(problems.join('; '));
    await waitQuiet(ctx, paused.ids.length);
  }
  return {
    rows,
    seedSeconds,
    listTotal,
    list,
    rounds,
    create: medianLoad(
      titled(CREATE, rows),
      rounds.map((r) => r.create),
    ),
    poll: medianLoad(
      titled(POLL, rows),
      rounds.map((r) => r.poll),
    ),
    stop: medianLoad(
      titled(STOP, rows),
      rounds.map((r) => r.stop),
    ),
    cpu: {
      create: medianCpu(rounds.map((r) => r.cpu.create)),
      poll: medianCpu(rounds.map((r) => r.cpu.poll)),
      stop: medianCpu(rounds.map((r) => r.cpu.stop)),
    },
    drainSeconds: {
      create: median(rounds.map((r) => r.drainSeconds.create)),
      stop: median(rounds.map((r) => r.drainSeconds.stop)),
    },
    ...(queuePaused ? { queuePaused } : {}),
  };
}

/**
 * Polls until no instance is in a transitional state, then insists none is `erred`. A count
 * query every quarter second is a small load next to the worker's, and needs no event stream
 * open while accept rates are measured.
 */
async function waitQuiet(ctx: GrowthContext, pending: number): Promise<number> {
  const started = performance.now();
  const deadline = 60_000 + pending * 50;
  let left = Infinity;
  let progressAt = started;
  for (;;) {
    if (ctx.service.crash) throw ctx.service.crash;
    const page = await ctx.api.expect<{ total: number }>(
      200,
      'GET',
      `/api/instances?${TRANSITIONAL_QUERY}&limit=1`,
    );
    if (page.total === 0) break;
    if (page.total < left) {
      left = page.total;
      progressAt = performance.now();
    }
    const now = performance.now();
    if (now - started > deadline || now - progressAt > 30_000) {
      throw new BenchError(
        `${page.total} instances still in a transitional state after ${Math.round((now - started) / 1000)} s`,
      );
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  const erred = await ctx.api.expect<{ total: number }>(
    200,
    'GET',
    '/api/instances?state=erred&limit=1',
  );
  if (erred.total > 0) throw new BenchError(`${erred.total} instances are erred`);
  return round((performance.now() - started) / 1000, 3);
}
