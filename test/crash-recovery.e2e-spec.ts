import Redis from 'ioredis';
import type { ApiClient } from './support/api';
import { Deployment, ServiceProcess } from './support/deployment';
import { actOnAll, createMany, stateCounts, until, waitForAll } from './support/load';

/**
 * `kill -9` of the built service while it accepts requests and runs jobs, then a restart: every
 * accepted operation reaches its target, and the simulated cloud did each one exactly once.
 * Runs on SQLite, or on PostgreSQL when TEST_DATABASE_URL is set.
 */
describe('kill -9 with jobs in flight, then a restart', () => {
  const COUNT = 40;
  let deployment: Deployment;
  let service: ServiceProcess;
  let admin: ApiClient;
  let ids: string[] = [];

  beforeAll(async () => {
    // Slow enough that a kill always finds jobs half done.
    deployment = await Deployment.create({ SIM_LATENCY_MS: '400', WORKER_CONCURRENCY: '8' });
    service = await deployment.start();
    admin = service.client(deployment.adminToken);
  });
  afterAll(() => deployment?.close());

  /** Kills the process once `state` shows up, restarts it, and waits for `target`. */
  async function killDuring(inProgress: string, target: string): Promise<void> {
    await until(`an instance in '${inProgress}'`, async () => {
      return ((await stateCounts(admin))[inProgress] ?? 0) > 0;
    });
    const exit = await service.kill();
    expect(exit.signal).toBe('SIGKILL');
    service = await deployment.start();
    admin = service.client(deployment.adminToken);
    await waitForAll(admin, ids, target);
  }

  it('loses no create accepted before the kill, and provisions each VM once', async () => {
    // The kill lands while creates are still arriving: those answered 202 must all come through.
    const accepting = createMany(admin, COUNT, 4, 'crash');
    await until('a provisioning job running', async () => {
      return ((await stateCounts(admin)).provisioning ?? 0) > 0;
    });
    await service.kill();
    ids = await accepting;
    expect(ids.length).toBeGreaterThan(0);
    service = await deployment.start();
    admin = service.client(deployment.adminToken);
    await waitForAll(admin, ids, 'online');
    // A create the kill cut off after its commit has no answer but is accepted work all the
    // same: it must come online too. The later phases take every instance there is.
    const all = await admin.get('/api/instances?limit=500').expect(200);
    const present = (all.body.items as { id: string; state: string }[]).map((i) => i.id);
    expect(present).toEqual(expect.arrayContaining(ids));
    await waitForAll(admin, present, 'online');
    expect(await stateCounts(admin)).toEqual({ online: present.length });
    ids = present;
  });

  it('stops every instance across a kill', async () => {
    await actOnAll(admin, ids, 'stop', 8);
    await killDuring('stopping', 'offline');
  });

  it('starts every instance across a kill', async () => {
    await actOnAll(admin, ids, 'start', 8);
    await killDuring('starting', 'online');
  });

  it('deletes every instance across a kill', async () => {
    await actOnAll(admin, ids, 'stop', 8);
    await waitForAll(admin, ids, 'offline');
    await actOnAll(admin, ids, 'delete', 8);
    await killDuring('deleting', 'gone');
  });

  it('did every backend operation exactly once per VM', async () => {
    const res = await admin.get('/api/simulator/vms').expect(200);
    const vms = res.body.items as { instance_id: string; state: string; op_counts: object }[];
    expect(vms.map((vm) => vm.instance_id).sort()).toEqual([...ids].sort());
    for (const vm of vms) {
      expect({ id: vm.instance_id, state: vm.state, ops: vm.op_counts }).toEqual({
        id: vm.instance_id,
        state: 'deleted',
        ops: { provision: 1, stop: 2, start: 1, delete: 1 },
      });
    }
  });
});

/**
 * A job whose worker died more often than Bull allows (it requeues a stalled job once) fails
 * without reaching the handler and without a retry: the instance must still leave its
 * in-progress state, to `erred` with a message.
 */
describe('a job stalled more than Bull allows', () => {
  let deployment: Deployment;
  afterAll(() => deployment?.close());

  it('leaves the instance erred with a message, not stuck', async () => {
    deployment = await Deployment.create({ SIM_LATENCY_MS: '60000', JOB_LOCK_MS: '1000' });
    const first = await deployment.start();
    const { id } = await first.client(deployment.adminToken).create({ name: 'doomed' });
    await first.client(deployment.adminToken).waitForState(id, 'provisioning');
    await first.kill();

    // As if it had already stalled once before: the next stall is one too many.
    const redis = new Redis(deployment.redis.url);
    try {
      const active = await redis.lrange(
        `${deployment.env.QUEUE_PREFIX}:instance-operations:active`,
        0,
        -1,
      );
      expect(active).toHaveLength(1);
      await redis.hset(
        `${deployment.env.QUEUE_PREFIX}:instance-operations:${active[0]}`,
        'stalledCounter',
        '1',
      );
    } finally {
      redis.disconnect();
    }

    const second = await deployment.start();
    const erred = await second.client(deployment.adminToken).waitForState(id, 'erred', 20_000);
    expect(erred.error_message).toBe('provision failed: the worker running it stopped responding');
  });
});
