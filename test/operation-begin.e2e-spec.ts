import { getQueueToken } from '@nestjs/bull';
import type { Queue } from 'bull';
import { DataSource } from 'typeorm';
import { InstanceJobData, QueueName, scheduledOf } from '../src/queues/queues';
import { Instance } from '../src/state-machine/instance.entity';
import { Operation, OperationStatus } from '../src/state-machine/operation.entity';
import { TransitionService } from '../src/state-machine/transition.service';
import { ApiClient } from './support/api';
import { startApp, TestApp } from './support/test-app';

/**
 * A worker begins an operation by reading it and its instance in one statement (an outer join;
 * PostgreSQL's locked retry reads them apart), or, on PostgreSQL, from what the request's job
 * carries, conditional on the row being unchanged since. Here the worker is paused, so the test
 * begins operations itself, on whichever database the suite runs on.
 */
describe('beginning an operation', () => {
  let t: TestApp;
  let admin: ApiClient;
  let alice: ApiClient;

  beforeAll(async () => {
    t = await startApp({ RELAY_INTERVAL_MS: '3600000' });
    // This process's worker takes no job; the jobs the requests hand over wait in the queue.
    await t.app.get<Queue>(getQueueToken(QueueName.InstanceOperations)).pause(true, true);
    admin = new ApiClient(t.http, t.adminToken);
    alice = await admin.createUser('alice');
  });
  afterAll(() => t?.close());

  const queue = () =>
    t.app.get<Queue<InstanceJobData>>(getQueueToken(QueueName.InstanceOperations));

  async function operationOf(instanceId: string): Promise<Operation> {
    const [operation] = await t.app.get(DataSource).getRepository(Operation).findBy({ instanceId });
    return operation;
  }

  it('reads the operation and its instance as stored, and moves it in progress', async () => {
    const created = await alice.create({ name: 'begin-read' });
    const operation = await operationOf(created.id);

    const started = await t.app.get(TransitionService).begin(operation.id);

    expect(started?.operation).toMatchObject({
      id: operation.id,
      instanceId: created.id,
      action: 'provision',
      status: OperationStatus.Running,
    });
    expect(started?.operation.params).toEqual({});
    expect(started?.operation.createdAt).toEqual(operation.createdAt);
    expect(started?.instance).toMatchObject({
      id: created.id,
      name: 'begin-read',
      state: 'provisioning',
      operationId: operation.id,
      errorMessage: '',
    });
    expect(started?.instance.createdAt.toISOString()).toBe(created.created_at);
    const shown = (await alice.get(`/api/instances/${created.id}`).expect(200)).body;
    expect(shown.state).toBe('provisioning');
  });

  it('abandons an operation whose instance was removed before it began', async () => {
    const created = await alice.create({ name: 'begin-gone' });
    const operation = await operationOf(created.id);
    await admin.post(`/api/instances/${created.id}/unlink`).expect(204);

    expect(await t.app.get(TransitionService).begin(operation.id)).toBeNull();
    expect((await operationOf(created.id)).status).toBe(OperationStatus.Abandoned);
  });

  it('answers null for an operation that does not exist', async () => {
    const missing = '0190a0a0-0000-7000-8000-000000000000';
    expect(await t.app.get(TransitionService).begin(missing)).toBeNull();
  });

  it("carries the request's operation and instance in its job, and begins from them", async () => {
    const created = await alice.create({ name: 'begin-carried' });
    const operation = await operationOf(created.id);
    const job = await queue().getJob(operation.id);
    const scheduled = scheduledOf(job!.data);
    expect(scheduled?.operation).toMatchObject({ id: operation.id, status: 'pending' });
    expect(scheduled?.instance).toMatchObject({
      id: created.id,
      state: 'provisioning_scheduled',
      operationId: operation.id,
    });
    expect(scheduled?.instance.updatedAt).toEqual(operation.createdAt);

    const started = await t.app.get(TransitionService).begin(operation.id, scheduled);

    expect(started?.instance).toMatchObject({ state: 'provisioning', name: 'begin-carried' });
    expect(started?.operation.status).toBe(OperationStatus.Running);
    expect((await operationOf(created.id)).status).toBe(OperationStatus.Running);
    const history = (await alice.get(`/api/instances/${created.id}/transitions`).expect(200)).body;
    expect(history.items.map((row: { from: string | null; to: string }) => row)).toMatchObject([
      { from: null, to: 'provisioning_scheduled' },
      { from: 'provisioning_scheduled', to: 'provisioning' },
    ]);
  });

  it('begins from the stored rows when the instance changed after its job was sent', async () => {
    const created = await alice.create({ name: 'begin-stale' });
    const operation = await operationOf(created.id);
    const job = await queue().getJob(operation.id);
    await admin
      .post(`/api/instances/${created.id}/set_erred`, { error_message: 'moved by staff' })
      .expect(200);

    // The job's copy says provisioning_scheduled; the row is erred and no longer this
    // operation's: nothing moves, and the operation is closed as abandoned.
    expect(
      await t.app.get(TransitionService).begin(operation.id, scheduledOf(job!.data)),
    ).toBeNull();
    expect((await operationOf(created.id)).status).toBe(OperationStatus.Abandoned);
    const shown = (await alice.get(`/api/instances/${created.id}`).expect(200)).body;
    expect(shown).toMatchObject({ state: 'erred', error_message: 'moved by staff' });
  });

  it('begins from the stored rows when the copy a job carries is not whole', async () => {
    const created = await alice.create({ name: 'begin-partial' });
    const operation = await operationOf(created.id);
    const data = (await queue().getJob(operation.id))!.data;
    // A copy without a time (or without a column a later release added) is not used.
    const instance: Partial<Instance> = { ...data.scheduled!.instance };
    delete instance.updatedAt;
    const partial = { ...data, scheduled: { ...data.scheduled!, instance } } as InstanceJobData;

    const started = await t.app.get(TransitionService).begin(operation.id, scheduledOf(partial));

    expect(started?.instance).toMatchObject({ state: 'provisioning', name: 'begin-partial' });
    expect(started?.instance.updatedAt.getTime()).not.toBeNaN();
    expect((await operationOf(created.id)).status).toBe(OperationStatus.Running);
  });

  it('begins a job that carries nothing, as the outbox relay re-sends them', async () => {
    const created = await alice.create({ name: 'begin-resent' });
    const operation = await operationOf(created.id);
    const started = await t.app.get(TransitionService).begin(operation.id, undefined);
    expect(started?.instance.state).toBe('provisioning');
  });
});
