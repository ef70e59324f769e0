import { getQueueToken } from '@nestjs/bull';
import type { Queue } from 'bull';
import { DataSource } from 'typeorm';
import { InstanceQueries } from '../src/instances/instance-queries.service';
import { QueueName } from '../src/queues/queues';
import { Instance } from '../src/state-machine/instance.entity';
import { ApiClient } from './support/api';
import { startApp, TestApp } from './support/test-app';

/**
 * The read of one instance (`GET /api/instances/{id}`, what a polling client repeats) is a
 * prepared statement of Provisor's own, and the list is built by TypeORM's query builder: every
 * field must read the same through both, times to the millisecond included, while an operation
 * owns the instance and once it has settled.
 */
describe('reading one instance', () => {
  let t: TestApp;
  let admin: ApiClient;
  let alice: ApiClient;
  const queue = () => t.app.get<Queue>(getQueueToken(QueueName.InstanceOperations));

  beforeAll(async () => {
    t = await startApp({ RELAY_INTERVAL_MS: '3600000' });
    admin = new ApiClient(t.http, t.adminToken);
    alice = await admin.createUser('alice');
  });
  afterAll(() => t?.close());

  /** The instance as TypeORM's repository reads it, and as the one-instance read does. */
  async function bothReads(id: string): Promise<[Instance, Instance]> {
    const stored = await t.app.get(DataSource).getRepository(Instance).findOneByOrFail({ id });
    const actor = { id: stored.ownerId, username: 'alice', isStaff: false };
    return [stored, await t.app.get(InstanceQueries).get(id, actor)];
  }

  async function sameInBoth(id: string, state: string): Promise<void> {
    for (const client of [alice, admin]) {
      const listed = (await client.get('/api/instances?name=same-both-ways').expect(200)).body;
      const one = (await client.get(`/api/instances/${id}`).expect(200)).body;
      expect(one.state).toBe(state);
      expect(listed.items).toEqual([one]);
    }
    // Fields the answer leaves out (the operation, the traceback) and the values' types too.
    const [stored, read] = await bothReads(id);
    expect(read).toBeInstanceOf(Instance);
    expect(read.createdAt).toBeInstanceOf(Date);
    expect(read.updatedAt).toBeInstanceOf(Date);
    expect(read).toEqual(stored);
  }

  it('answers the same as the list and the repository, while scheduled and once settled', async () => {
    // The worker takes no job until resumed: the instance stays scheduled, owned by its operation.
    await queue().pause(true, true);
    const made = await alice.create({ name: 'same-both-ways', description: 'db' });
    try {
      await sameInBoth(made.id, 'provisioning_scheduled');
      expect((await bothReads(made.id))[1].operationId).toEqual(expect.any(String));
    } finally {
      await queue().resume(true);
    }
    await alice.waitForState(made.id, 'online');
    await sameInBoth(made.id, 'online');
    expect((await bothReads(made.id))[1].operationId).toBeNull();
  });
});
