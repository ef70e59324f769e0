import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import request from 'supertest';
import type { ApiClient } from './support/api';
import { Deployment, ServiceProcess } from './support/deployment';
import { actOnAll, createMany, stateCounts, until, waitForAll } from './support/load';

const onPostgres = process.env.TEST_DATABASE_URL?.startsWith('postgres') ? describe : describe.skip;

/**
 * One APP_ROLE=api process and two APP_ROLE=worker processes of the built service, sharing only
 * PostgreSQL and Redis, run 500 instances through their life; one worker is killed with
 * `kill -9` half way through a phase and the other finishes its jobs.
 */
onPostgres('APP_ROLE=api + 2 x APP_ROLE=worker on PostgreSQL', () => {
  const COUNT = 500;
  let deployment: Deployment;
  let workers: ServiceProcess[];
  let admin: ApiClient;
  let ids: string[];

  beforeAll(async () => {
    deployment = await Deployment.create({ SIM_LATENCY_MS: '20', WORKER_CONCURRENCY: '10' });
    const api = await deployment.start({ APP_ROLE: 'api' }, 'api');
    workers = [
      await deployment.start({ APP_ROLE: 'worker' }, 'worker-1'),
      await deployment.start({ APP_ROLE: 'worker' }, 'worker-2'),
    ];
    admin = api.client(deployment.adminToken);
  });
  afterAll(() => deployment?.close());

  it('answers on a worker /api/health and /metrics only, the rest 404 in the error shape', async () => {
    const worker = workers[1].client(deployment.adminToken);
    const res = await worker.get('/api/instances');
    expect({ status: res.status, body: res.body }).toEqual({
      status: 404,
      body: { statusCode: 404, error: 'Not Found', message: expect.stringContaining('worker') },
    });
    expect(res.headers['x-request-id']).toEqual(expect.any(String));
    await worker.get('/api/health').expect(200);
    await worker.get('/metrics').expect(200);
  });

  it('creates 500 instances, the two workers sharing the jobs', async () => {
    ids = await createMany(admin, COUNT, 16, 'scale');
    expect(ids).toHaveLength(COUNT);
    await waitForAll(admin, ids, 'online', 90_000);
    for (const worker of workers) expect(await provisionsRun(worker)).toBeGreaterThan(50);
  }, 120_000);

  it('stops them all while one worker is killed half way', async () => {
    await actOnAll(admin, ids, 'stop', 16);
    await until('half of them stopped', async () => (await stateCounts(admin)).offline >= 250);
    await workers[0].kill();
    await waitForAll(admin, ids, 'offline', 90_000);
  }, 120_000);

  it('starts, stops and deletes them all on the worker left', async () => {
    for (const [action, target] of [
      ['start', 'online'],
      ['stop', 'offline'],
      ['delete', 'gone'],
    ]) {
      await actOnAll(admin, ids, action, 16);
      await waitForAll(admin, ids, target, 90_000);
    }
    expect(await stateCounts(admin)).toEqual({});
  }, 240_000);

  it('did every backend operation exactly once per VM', async () => {
    const res = await admin.get('/api/simulator/vms').expect(200);
    const vms = res.body.items as { instance_id: string; state: string; op_counts: object }[];
    expect(vms).toHaveLength(COUNT);
    const wrong = vms.filter(
      (vm) =>
        vm.state !== 'deleted' ||
        JSON.stringify(vm.op_counts) !==
          JSON.stringify({ provision: 1, stop: 2, start: 1, delete: 1 }),
    );
    expect(wrong).toEqual([]);
  });
});

/** How many provision jobs a worker has run, from its own /metrics. */
async function provisionsRun(worker: ServiceProcess): Promise<number> {
  const text = (await request(worker.url).get('/metrics').expect(200)).text;
  const line = text
    .split('\n')
    .find((l) =>
      /^provisor_job_duration_seconds_count\{[^}]*action="provision"[^}]*outcome="succeeded"/.test(
        l,
      ),
    );
  return line ? Number(line.split(' ').pop()) : 0;
}

describe('split roles on SQLite', () => {
  it('refuse to start, with a message that says what to set', () => {
    const result = spawnSync(process.execPath, [join(__dirname, '..', 'dist', 'main.js')], {
      env: { PATH: process.env.PATH, APP_ROLE: 'worker', DATABASE_URL: 'sqlite::memory:' },
      encoding: 'utf8',
      timeout: 20_000,
    });
    expect(result.status).toBe(1);
    expect(result.stderr).toContain('APP_ROLE=worker needs PostgreSQL');
    expect(result.stderr).not.toMatch(/\n\s+at /); // a message, not a stack trace
  });
});
