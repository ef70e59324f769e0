import Redis from 'ioredis';
import { ApiClient } from './support/api';
import { startApp, TestApp } from './support/test-app';

/**
 * API.md section 4: an instance left in a transitional state longer than STUCK_AFTER_MS with no
 * live job goes to erred with "<action> has timed out."; one whose job is alive is left alone.
 */
describe('stuck-state sweeper', () => {
  let t: TestApp;
  let admin: ApiClient;
  let redis: Redis;

  beforeAll(async () => {
    t = await startApp({
      STUCK_AFTER_MS: '1000',
      SWEEP_INTERVAL_MS: '200',
      JOB_TIMEOUT_MS: '5000',
    });
    admin = new ApiClient(t.http, t.adminToken);
    redis = new Redis(t.env.REDIS_URL);
  });
  afterAll(async () => {
    redis.disconnect();
    await t.close();
  });

  it('leaves an instance with a live job alone, and sweeps it once the job is lost', async () => {
    const vm = await admin.online();
    await admin.action(vm.id, 'stop');
    await admin.waitForState(vm.id, 'offline');
    await admin
      .post('/api/simulator/faults', { operation: 'start', instance_id: vm.id, mode: 'hang' })
      .expect(201);
    await admin.action(vm.id, 'start');
    await admin.waitForState(vm.id, 'starting');

    // Well past STUCK_AFTER_MS, but the job is running: not stuck.
    await new Promise((r) => setTimeout(r, 2000));
    expect((await admin.get(`/api/instances/${vm.id}`).expect(200)).body.state).toBe('starting');

    // Redis loses the job, as a restart without persistence would.
    const queueKey = `${t.env.QUEUE_PREFIX}:instance-operations`;
    const active = await redis.lrange(`${queueKey}:active`, 0, -1);
    expect(active).toHaveLength(1);
    await redis.del(`${queueKey}:${active[0]}`, `${queueKey}:${active[0]}:lock`);
    await redis.lrem(`${queueKey}:active`, 0, active[0]);

    const swept = await admin.waitForState(vm.id, 'erred', 5000);
    expect(swept.error_message).toBe('start has timed out.');
    const events = await admin.events(vm.id);
    expect(events.at(-1)).toMatchObject({
      type: 'instance.start.failed',
      state: 'erred',
      error_message: 'start has timed out.',
    });
  });
});
