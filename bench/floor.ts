import Bull from 'bull';
import { randomUUID } from 'node:crypto';
import { assertClean, BenchError, runLoad } from './client';
import { COMMITS_PER_OPERATION, type BenchDatabase } from './database';
import { cpuMsPer, round } from './stats';

export interface FloorRun {
  jobs: number;
  commitsPerJob: number;
  seconds: number;
  perSecond: number;
  /** CPU of the process running producer and worker, per job: the service's figure's match. */
  cpuMsPerJob: number;
}

export interface FloorSpec {
  redisUrl: string;
  prefix: string;
  jobs: number;
  workerConcurrency: number;
  /** Clients handing jobs over at once, as the service's requests do. */
  producers: number;
  /** Null for no-op jobs; else each job commits as one Provisor operation does. */
  database: BenchDatabase | null;
  timeoutMs: number;
}

/**
 * What the service is built on, with nothing of the service: a Bull queue on the same Redis with
 * the service's job options and worker concurrency, and (optionally) the same number of small
 * commits per operation on the same database. Its throughput is the most Provisor could reach.
 */
export async function runFloor(spec: FloorSpec): Promise<FloorRun> {
  const queue = new Bull('instance-operations', spec.redisUrl, {
    prefix: spec.prefix,
    // The service's settings at their defaults (JOB_LOCK_MS).
    settings: { lockDuration: 30_000, stalledInterval: 30_000 },
  });
  const db = spec.database;
  try {
    await queue.isReady();
    let completed = 0;
    let failure: Error | null = null;
    let finishedAt = 0;
    const allDone = new Promise<void>((resolvePromise) => {
      queue.on('completed', () => {
        if (++completed === spec.jobs) {
          finishedAt = performance.now();
          resolvePromise();
        }
      });
      queue.on('failed', (_job, error: Error) => {
        failure ??= error;
        resolvePromise();
      });
    });
    queue
      .process(
        '*',
        spec.workerConcurrency,
        async (job: Bull.Job<{ operationId: string; instanceId: string }>) => {
          if (db) {
            await db.floorCommit('begin', job.data.operationId, job.data.instanceId);
            await db.floorCommit('backend', job.data.operationId, job.data.instanceId);
            await db.floorCommit('succeed', job.data.operationId, job.data.instanceId);
          }
          return { outcome: 'succeeded' };
        },
      )
      .catch((error: Error) => {
        failure ??= error;
      });

    let next = 0;
    const cpuBefore = process.cpuUsage();
    const started = performance.now();
    const producer = async () => {
      while (next < spec.jobs) {
        next++;
        const operationId = randomUUID();
        const instanceId = randomUUID();
        if (db) await db.floorCommit('schedule', operationId, instanceId);
        // The service's job options (src/queues/queues.ts) and payload shape.
        await queue.add(
          'provision',
          { operationId, instanceId, requestId: randomUUID() },
          {
            jobId: operationId,
            attempts: 5,
            backoff: { type: 'exponential', delay: 1000 },
            removeOnComplete: { age: 24 * 3600, count: 5000 },
            removeOnFail: { age: 7 * 24 * 3600, count: 5000 },
          },
        );
      }
    };
    await Promise.all(Array.from({ length: spec.producers }, producer));
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<void>((_, reject) => {
      timer = setTimeout(
        () => reject(new BenchError(`Floor: only ${completed} of ${spec.jobs} jobs done in time`)),
        spec.timeoutMs,
      );
    });
    await Promise.race([allDone, late]).finally(() => clearTimeout(timer));
    if (failure) throw new BenchError(`Floor job failed: ${(failure as Error).message}`);
    const seconds = (finishedAt - started) / 1000;
    const cpu = process.cpuUsage(cpuBefore);
    return {
      jobs: spec.jobs,
      commitsPerJob: db ? COMMITS_PER_OPERATION : 0,
      seconds: round(seconds, 3),
      perSecond: round(spec.jobs / seconds, 1),
      cpuMsPerJob: round((cpu.user + cpu.system) / 1000 / spec.jobs, 3),
    };
  } finally {
    await queue.close();
  }
}

export interface HttpStackRun {
  path: string;
  requests: number;
  perSecond: number;
  p50Ms: number;
  p99Ms: number;
  /** The service's CPU per request; null where /proc cannot tell. */
  cpuMsPerRequest: number | null;
}

/**
 * The other part every operation is built on: one authenticated request through the service's
 * HTTP stack (Fastify, Nest's routing and guards, the request log, JSON out), on a route that
 * reads no database and schedules nothing. The floor's jobs make no request, so the two together
 * are the least an operation can cost.
 */
export async function runHttpStack(spec: {
  service: { baseUrl: string; cpuSeconds(): number | null; crash: Error | null };
  token: string;
  connections: number;
  requests: number;
}): Promise<HttpStackRun> {
  const path = '/api/flavors';
  const run = (amount: number) =>
    runLoad({
      title: `GET ${path}`,
      baseUrl: spec.service.baseUrl,
      token: spec.token,
      abortIf: () => spec.service.crash,
      connections: spec.connections,
      amount,
      build: () => ({ method: 'GET', path }),
    });
  // The route's code is compiled by its first requests; the operations' routes ran for minutes.
  await run(Math.max(500, spec.requests / 4));
  const cpuBefore = spec.service.cpuSeconds();
  // At least a second of CPU: /proc counts it in ticks of 10 ms.
  const load = await run(Math.max(4000, spec.requests));
  const cpuAfter = spec.service.cpuSeconds();
  const problems = assertClean(load);
  if (problems.length > 0) throw new BenchError(problems.join('; '));
  return {
    path,
    requests: load.requests,
    perSecond: load.perSecond,
    p50Ms: load.p50Ms,
    p99Ms: load.p99Ms,
    cpuMsPerRequest: cpuMsPer(cpuBefore, cpuAfter, load.requests),
  };
}
