import Redis from 'ioredis';
import request from 'supertest';
import type { InstanceBody } from './support/api';
import { Deployment, ServiceProcess } from './support/deployment';
import { until, waitForAll } from './support/load';

/**
 * Redis stopped under a steady stream of requests to the built service, then started again
 * empty (no persistence): requests are accepted throughout, health says 503 meanwhile, and
 * every accepted operation completes once Redis is back.
 */
describe('Redis outage under load', () => {
  let deployment: Deployment;
  let service: ServiceProcess;

  beforeAll(async () => {
    deployment = await Deployment.create({ SIM_LATENCY_MS: '50', WORKER_CONCURRENCY: '10' });
    service = await deployment.start();
  });
  afterAll(() => deployment?.close());

  it('accepts every request during the outage and completes them all afterwards', async () => {
    const admin = service.client(deployment.adminToken);
    const accepted: string[] = [];
    const refused: string[] = [];
    let loading = true;
    const client = async (n: number) => {
      for (let i = 0; loading; i++) {
        const res = await admin.post('/api/instances', { name: `load-${n}-${i}`, flavor: 'small' });
        if (res.status === 202) accepted.push((res.body as InstanceBody).id);
        else refused.push(`${res.status} ${res.text}`);
        await new Promise((r) => setTimeout(r, 20));
      }
    };
    const load = Promise.all([0, 1, 2, 3].map(client));
    const health = () => request(service.url).get('/api/health');

    await until('some instances online', async () => {
      const res = await admin.get('/api/instances?state=online&limit=1');
      return res.body.total > 5;
    });
    await deployment.redis.stop();
    await until('health to say 503', async () => (await health()).status === 503);
    const before = accepted.length;
    await new Promise((r) => setTimeout(r, 3_000));
    const duringOutage = accepted.length - before;

    await deployment.redis.start();
    await until('health to say 200', async () => (await health()).status === 200);
    await new Promise((r) => setTimeout(r, 1_000));
    loading = false;
    await load;

    expect(refused).toEqual([]);
    expect(duringOutage).toBeGreaterThan(20);
    await waitForAll(admin, accepted, 'online', 45_000);
    const vms = (await admin.get('/api/simulator/vms').expect(200)).body.items as {
      instance_id: string;
      op_counts: object;
    }[];
    expect(vms.map((vm) => vm.instance_id).sort()).toEqual([...accepted].sort());
    expect(vms.filter((vm) => JSON.stringify(vm.op_counts) !== '{"provision":1}')).toEqual([]);
  }, 90_000);
});

/**
 * A Redis restarted empty also loses jobs of operations already begun: here a retry waiting
 * out its backoff. The sweeper sends such an operation again once it has been quiet for
 * JOB_LOCK_MS, and the instance comes online instead of waiting for STUCK_AFTER_MS to err.
 */
describe('Redis restarted empty while a retry waits', () => {
  let deployment: Deployment;
  afterAll(() => deployment?.close());

  it('rebuilds the lost retry and completes the operation', async () => {
    deployment = await Deployment.create({
      SIM_LATENCY_MS: '20',
      JOB_BACKOFF_MS: '60000',
      JOB_LOCK_MS: '1000',
      SWEEP_INTERVAL_MS: '250',
    });
    const service = await deployment.start();
    const admin = service.client(deployment.adminToken);
    await admin
      .post('/api/simulator/faults', { operation: 'provision', mode: 'transient', times: 1 })
      .expect(201);
    const { id } = await admin.create({ name: 'retried' });
    const redis = new Redis(deployment.redis.url);
    try {
      await until('the retry to wait in the delayed set', async () => {
        return (
          (await redis.zcard(`${deployment.env.QUEUE_PREFIX}:instance-operations:delayed`)) === 1
        );
      });
    } finally {
      redis.disconnect();
    }

    await deployment.redis.stop();
    await deployment.redis.start();
    const online = await admin.waitForState(id, 'online', 20_000);
    expect(online.error_message).toBe('');
    const vms = (await admin.get(`/api/simulator/vms?instance_id=${id}`).expect(200)).body.items;
    expect(vms.map((vm: { op_counts: object }) => vm.op_counts)).toEqual([{ provision: 1 }]);
  });
});
