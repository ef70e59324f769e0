import { ApiClient } from './support/api';
import { OwnRedis } from './support/redis-server';
import { startApp, TestApp } from './support/test-app';

/** Accepted work is never lost: requests made while Redis is down run once it is back. */
describe('Redis outage', () => {
  let redis: OwnRedis;
  let t: TestApp;
  let admin: ApiClient;

  beforeAll(async () => {
    redis = await OwnRedis.start();
    t = await startApp({ REDIS_URL: redis.url });
    admin = new ApiClient(t.http, t.adminToken);
  });
  afterAll(async () => {
    if (!redis.running) await redis.start();
    await t.close();
    await redis.stop();
  });

  async function waitForHealth(status: number): Promise<Record<string, unknown>> {
    const deadline = Date.now() + 15_000;
    while (Date.now() < deadline) {
      const res = await t.http.get('/api/health');
      if (res.status === status) return res.body;
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error(`/api/health never answered ${status}`);
  }

  it('accepts requests while Redis is down, says so in health, and runs them when it returns', async () => {
    const running = await admin.online({ name: 'before-outage' });
    await waitForHealth(200);

    await redis.stop();
    const unhealthy = await waitForHealth(503);
    expect(unhealthy).toMatchObject({ status: 'error', error: { redis: { status: 'down' } } });
    expect(unhealthy).toMatchObject({ info: { database: { status: 'up' } } });
    // The dashboard says so at once rather than hang on its reads.
    const dashboard = await t.http
      .get('/admin/queues/api/queues')
      .auth('admin', t.adminToken)
      .timeout(3000);
    expect(dashboard.status).toBe(503);
    expect(dashboard.text).toMatch(/Redis is unreachable/);

    const created = await admin
      .post('/api/instances', { name: 'during-outage', flavor: 'small' })
      .expect(202);
    expect(created.body.state).toBe('provisioning_scheduled');
    const stopped = await admin.post(`/api/instances/${running.id}/stop`).expect(202);
    expect(stopped.body.state).toBe('stopping_scheduled');

    // Redis comes back empty, as a restart without persistence leaves it.
    await redis.start();
    await waitForHealth(200);
    await admin.waitForState(created.body.id, 'online', 30_000);
    await admin.waitForState(running.id, 'offline', 30_000);

    const vms = await admin.get(`/api/simulator/vms?instance_id=${created.body.id}`).expect(200);
    expect(vms.body.items).toHaveLength(1);
    expect(vms.body.items[0].op_counts).toEqual({ provision: 1 });
  });
});
