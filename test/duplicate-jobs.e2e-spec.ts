import { getQueueToken } from '@nestjs/bull';
import type { Queue } from 'bull';
import { DataSource } from 'typeorm';
import { QueueName } from '../src/queues/queues';
import { ApiClient } from './support/api';
import { startApp, TestApp } from './support/test-app';

/**
 * A job that runs twice (re-sent by the relay, or re-run after its worker stalled) does no harm:
 * the processor finds its operation finished, or carries on where the first run was, and the
 * simulated cloud performs each operation once.
 */
describe('jobs that run twice', () => {
  let t: TestApp;
  let admin: ApiClient;
  let queue: Queue;

  beforeAll(async () => {
    t = await startApp({ SIM_LATENCY_MS: '300' });
    admin = new ApiClient(t.http, t.adminToken);
    queue = t.app.get<Queue>(getQueueToken(QueueName.InstanceOperations));
  });
  afterAll(() => t.close());

  /** The operation id behind an instance's latest job, read from the job Bull completed. */
  async function lastJobOf(instanceId: string) {
    const jobs = await queue.getJobs(['completed', 'active', 'waiting', 'delayed']);
    const mine = jobs.filter((job) => job.data.instanceId === instanceId);
    mine.sort((a, b) => b.timestamp - a.timestamp);
    return mine[0];
  }

  it('a finished operation sent again changes nothing', async () => {
    const vm = await admin.online();
    const provision = await lastJobOf(vm.id);
    const eventsBefore = (await admin.events(vm.id)).length;

    const again = await queue.add(provision.name, provision.data, {
      jobId: `${provision.id}-again`,
    });
    await again.finished();

    expect((await admin.get(`/api/instances/${vm.id}`).expect(200)).body.state).toBe('online');
    expect(await admin.events(vm.id)).toHaveLength(eventsBefore);
    const vms = await admin.get(`/api/simulator/vms?instance_id=${vm.id}`).expect(200);
    expect(vms.body.items).toHaveLength(1);
    expect(vms.body.items[0].op_counts).toEqual({ provision: 1 });
  });

  it('a second run beside the first performs the operation once and records one success', async () => {
    const vm = await admin.online();
    await admin.action(vm.id, 'stop');
    await admin.waitForState(vm.id, 'stopping');
    const stop = await lastJobOf(vm.id);

    // As if Bull judged the first run stalled and handed the job to another worker.
    const twin = await queue.add(stop.name, stop.data, { jobId: `${stop.id}-twin` });
    await twin.finished();
    await admin.waitForState(vm.id, 'offline');

    const types = (await admin.events(vm.id)).map((e) => e.type);
    expect(types.filter((type) => type === 'instance.stop.started')).toHaveLength(1);
    expect(types.filter((type) => type === 'instance.stop.succeeded')).toHaveLength(1);
    const vms = await admin.get(`/api/simulator/vms?instance_id=${vm.id}`).expect(200);
    expect(vms.body.items[0].op_counts).toEqual({ provision: 1, stop: 1 });
    // The outbox row keeps the outcome of the run that finished first.
    const row = await t.app
      .get(DataSource)
      .createQueryBuilder()
      .select('o.status', 'status')
      .from('operations', 'o')
      .where('o.id = :id', { id: stop.data.operationId })
      .getRawOne();
    expect(row.status).toBe('succeeded');
  });
});
