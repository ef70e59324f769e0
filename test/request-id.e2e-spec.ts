import { getQueueToken } from '@nestjs/bull';
import type { Queue } from 'bull';
import { AsyncLocalStorage } from 'node:async_hooks';
import { QueueName } from '../src/queues/queues';
import { ApiClient } from './support/api';
import { startApp, TestApp } from './support/test-app';

/** One operation can be followed from its request to its job by the request id. */
describe('request ids', () => {
  let t: TestApp;
  let admin: ApiClient;
  // Watched from before the app boots: a store entered once, at start, would turn the hooks on
  // for the whole process. Jest's runner enters stores of its own; those are not the app's.
  const entered: string[] = [];
  const watch = <M extends 'run' | 'enterWith'>(method: M) => {
    const original = AsyncLocalStorage.prototype[method] as (...args: unknown[]) => unknown;
    return jest.spyOn(AsyncLocalStorage.prototype, method).mockImplementation(function (
      this: unknown,
      ...args: unknown[]
    ) {
      const stack = new Error().stack ?? '';
      if (!stack.includes('jest-circus')) entered.push(`${method}: ${stack}`);
      return original.apply(this, args);
    } as never);
  };
  const run = watch('run');
  const enterWith = watch('enterWith');

  beforeAll(async () => {
    t = await startApp();
    admin = new ApiClient(t.http, t.adminToken);
  });
  afterAll(async () => {
    run.mockRestore();
    enterWith.mockRestore();
    await t.close();
  });

  /** The completed jobs of an instance's operations, once there are `count` of them. */
  async function completedJobsOf(instanceId: string, count: number) {
    const queue = t.app.get<Queue>(getQueueToken(QueueName.InstanceOperations));
    // The instance shows its new state once the job's last transition commits, a moment before
    // Bull moves the job to completed.
    const deadline = Date.now() + 5_000;
    for (;;) {
      const jobs = (await queue.getJobs(['completed'])).filter(
        (job) => job.data.instanceId === instanceId,
      );
      if (jobs.length >= count || Date.now() > deadline) return jobs;
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }

  it('answers the X-Request-Id it was given, and carries it into the job the request scheduled', async () => {
    const res = await admin
      .post('/api/instances', { name: 'traced', flavor: 'small' })
      .set('X-Request-Id', 'trace-me-42')
      .expect(202);
    expect(res.headers['x-request-id']).toBe('trace-me-42');
    await admin.waitForState(res.body.id, 'online');
    const jobs = await completedJobsOf(res.body.id, 1);
    expect(jobs.map((job) => job.data.requestId)).toEqual(['trace-me-42']);
  });

  it('carries the id of each action request into its job, as of a create', async () => {
    const vm = await admin.create({ name: 'traced-actions' });
    await admin.waitForState(vm.id, 'online');
    await admin
      .post(`/api/instances/${vm.id}/stop`)
      .set('X-Request-Id', 'trace-stop-7')
      .expect(202);
    await admin.waitForState(vm.id, 'offline');
    await admin
      .post(`/api/instances/${vm.id}/resize`, { flavor: 'large' })
      .set('X-Request-Id', 'trace-resize-8')
      .expect(202);
    expect(await admin.waitForState(vm.id, 'offline')).toMatchObject({ flavor: 'large' });
    const jobs = await completedJobsOf(vm.id, 3);
    const requestIds = Object.fromEntries(jobs.map((j) => [j.name, j.data.requestId]));
    expect(requestIds).toEqual({
      // The create sent none: the id made up for it.
      provision: expect.stringMatching(/^[0-9a-f-]{36}$/),
      stop: 'trace-stop-7',
      resize: 'trace-resize-8',
    });
  });

  // On Node 20 an AsyncLocalStorage that has been entered installs promise hooks that run for
  // every promise of the process: about a tenth of an operation's CPU. Request ids travel as
  // arguments instead; this keeps a library or a change from bringing the hooks back unseen.
  it('boots, serves requests and runs their jobs without entering an AsyncLocalStorage', async () => {
    const vm = await admin.create({ name: 'no-context' });
    await admin.waitForState(vm.id, 'online');
    await admin.action(vm.id, 'stop');
    await admin.waitForState(vm.id, 'offline');
    await admin.get(`/api/instances/${vm.id}/transitions`).expect(200);
    await admin.get('/api/events?limit=5').expect(200);
    await admin.post('/api/instances', { name: '' }).expect(400);
    expect(entered).toEqual([]);
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
