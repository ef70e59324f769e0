import { getQueueToken } from '@nestjs/bull';
import type { Queue } from 'bull';
import { QueueName } from '../src/queues/queues';
import { ApiClient } from './support/api';
import { startApp, TestApp } from './support/test-app';

/** One operation can be followed from its request to its job by the request id. */
describe('request ids', () => {
  let t: TestApp;
  let admin: ApiClient;

  beforeAll(async () => {
    t = await startApp();
    admin = new ApiClient(t.http, t.adminToken);
  });
  afterAll(() => t.close());

  it('answers the X-Request-Id it was given, and carries it into the job the request scheduled', async () => {
    const res = await admin
      .post('/api/instances', { name: 'traced', flavor: 'small' })
      .set('X-Request-Id', 'trace-me-42')
      .expect(202);
    expect(res.headers['x-request-id']).toBe('trace-me-42');
    await admin.waitForState(res.body.id, 'online');
    const queue = t.app.get<Queue>(getQueueToken(QueueName.InstanceOperations));
    const jobs = await queue.getJobs(['completed']);
    const job = jobs.find((j) => j.data.instanceId === res.body.id);
    expect(job?.data.requestId).toBe('trace-me-42');
  });

  it('makes up an id when none, or an unusable one, is given', async () => {
    const none = await admin.get('/api/users/me').expect(200);
    expect(none.headers['x-request-id']).toMatch(/^[0-9a-f-]{36}$/);
    const bad = await admin
      .get('/api/users/me')
      .set('X-Request-Id', 'has spaces in it')
      .expect(200);
    expect(bad.headers['x-request-id']).toMatch(/^[0-9a-f-]{36}$/);
  });
});
