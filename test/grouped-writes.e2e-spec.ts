import { getQueueToken } from '@nestjs/bull';
import { EventEmitter2 } from '@nestjs/event-emitter';
import type { Queue } from 'bull';
import { DataSource, In } from 'typeorm';
import { InstanceJobData, QueueName, scheduledOf } from '../src/queues/queues';
import { INSTANCE_EVENT } from '../src/state-machine/domain-events';
import { InstanceEvent } from '../src/state-machine/instance-event.entity';
import { Instance } from '../src/state-machine/instance.entity';
import { Operation, OperationStatus } from '../src/state-machine/operation.entity';
import { TransitionService } from '../src/state-machine/transition.service';
import { ApiClient, InstanceBody } from './support/api';
import { tallyAndRows } from './support/tally';
import { startApp, TestApp } from './support/test-app';

const onPostgres = process.env.TEST_DATABASE_URL?.startsWith('postgres') ? describe : describe.skip;

/**
 * On PostgreSQL, unlocked writes that meet while a statement runs are stored together as one
 * statement. Each of them still holds or misses by itself: a write whose instance changed since
 * it read stores nothing and reads again, while the others in its statement hold; every event
 * gets its own id, and the list totals still match the rows. The worker is paused, so the test
 * drives the operations' steps itself, many at once.
 */
onPostgres('writes stored together (PostgreSQL)', () => {
  let t: TestApp;
  let admin: ApiClient;
  let alice: ApiClient;
  let transitions: TransitionService;

  beforeAll(async () => {
    t = await startApp({ RELAY_INTERVAL_MS: '3600000' });
    await t.app.get<Queue>(getQueueToken(QueueName.InstanceOperations)).pause(true, true);
    admin = new ApiClient(t.http, t.adminToken);
    alice = await admin.createUser('alice');
    transitions = t.app.get(TransitionService);
  });
  afterAll(() => t?.close());

  const db = () => t.app.get(DataSource);

  async function operationsOf(instances: InstanceBody[]): Promise<Operation[]> {
    const rows = await db()
      .getRepository(Operation)
      .findBy({ instanceId: In(instances.map((instance) => instance.id)) });
    // The latest operation of each instance, in the order of `instances`.
    return instances.map(
      ({ id }) =>
        rows
          .filter((row) => row.instanceId === id)
          .sort((a, b) => b.createdAt.getTime() - a.createdAt.getTime())[0],
    );
  }

  async function history(id: string): Promise<[string | null, string][]> {
    const { items } = (await alice.get(`/api/instances/${id}/transitions`).expect(200)).body as {
      items: { from: string | null; to: string }[];
    };
    return items.map((row) => [row.from, row.to]);
  }

  /** Runs `steps` all at once; answers their results and the events they announced. */
  async function together<R>(steps: (() => Promise<R>)[]) {
    const announced: InstanceEvent[] = [];
    const listener = (event: InstanceEvent) => announced.push(event);
    const emitter = t.app.get(EventEmitter2);
    emitter.on(INSTANCE_EVENT, listener);
    const before = transitions.groupStats;
    try {
      const results = await Promise.all(steps.map((step) => step()));
      const after = transitions.groupStats;
      return {
        results,
        announced,
        grouped: after.grouped - before.grouped,
        groups: after.groups - before.groups,
      };
    } finally {
      emitter.off(INSTANCE_EVENT, listener);
    }
  }

  /** Every announced event is the row the log holds under its id. */
  async function expectLogged(announced: InstanceEvent[]): Promise<void> {
    const ids = announced.map((event) => event.id);
    expect(new Set(ids).size).toBe(ids.length);
    const rows = await db()
      .getRepository(InstanceEvent)
      .findBy({ id: In(ids) });
    const byId = new Map(rows.map((row) => [row.id, row]));
    for (const event of announced) {
      expect(byId.get(event.id)).toMatchObject({
        type: event.type,
        instanceId: event.instanceId,
        state: event.state,
      });
    }
  }

  it('begins many operations in one statement; the one whose instance moved reads again alone', async () => {
    const vms = await Promise.all(
      Array.from({ length: 12 }, (_, i) => alice.create({ name: `together-${i}` })),
    );
    const operations = await operationsOf(vms);
    const queue = t.app.get<Queue<InstanceJobData>>(getQueueToken(QueueName.InstanceOperations));
    const jobs = await Promise.all(operations.map((operation) => queue.getJob(operation.id)));
    // Staff moves one after its job was sent: the job's copy of it is stale.
    await admin
      .post(`/api/instances/${vms[5].id}/set_erred`, { error_message: 'moved by staff' })
      .expect(200);

    const run = await together(
      operations.map(
        (operation, i) => () => transitions.begin(operation.id, scheduledOf(jobs[i]!.data)),
      ),
    );

    // The first went alone; the eleven that came while it ran went in one statement.
    expect(run.groups).toBeGreaterThanOrEqual(1);
    expect(run.grouped).toBeGreaterThanOrEqual(11);
    expect(run.results[5]).toBeNull();
    const stored = await operationsOf(vms);
    expect(stored[5].status).toBe(OperationStatus.Abandoned);
    expect((await alice.get(`/api/instances/${vms[5].id}`).expect(200)).body).toMatchObject({
      state: 'erred',
      error_message: 'moved by staff',
    });
    // Nothing of its missed begin was stored: no transition, no event.
    expect(await history(vms[5].id)).toEqual([
      [null, 'provisioning_scheduled'],
      ['provisioning_scheduled', 'erred'],
    ]);
    for (const i of vms.keys()) {
      if (i === 5) continue;
      expect(run.results[i]?.instance).toMatchObject({ id: vms[i].id, state: 'provisioning' });
      expect(stored[i].status).toBe(OperationStatus.Running);
      expect(await history(vms[i].id)).toEqual([
        [null, 'provisioning_scheduled'],
        ['provisioning_scheduled', 'provisioning'],
      ]);
    }
    expect(run.announced.map((event) => event.type).sort()).toEqual(
      Array(11).fill('instance.provision.started'),
    );
    await expectLogged(run.announced);
    const { tally, rows } = await tallyAndRows(db());
    expect(tally).toEqual(rows);
  });

  it('finishes operations together, each with its own outcome, and removes instances with their history', async () => {
    const vms = await Promise.all(
      Array.from({ length: 8 }, (_, i) => alice.create({ name: `outcome-${i}` })),
    );
    const begun = (
      await together(
        (await operationsOf(vms)).map((operation) => () => transitions.begin(operation.id)),
      )
    ).results.map((started) => started!);

    // Six succeed and two fail, all at once.
    const finished = await together(
      begun.map(
        ({ operation, instance }, i) =>
          () =>
            i % 4 === 3
              ? transitions.fail(operation, `backend refused ${i}`, 'trace', instance)
              : transitions.succeed(operation, { backendId: `vm-${i}` }, instance),
      ),
    );
    expect(finished.grouped).toBeGreaterThanOrEqual(7);
    for (const [i, vm] of vms.entries()) {
      const shown = (await alice.get(`/api/instances/${vm.id}`).expect(200)).body as InstanceBody;
      if (i % 4 === 3) {
        expect(shown).toMatchObject({ state: 'erred', error_message: `backend refused ${i}` });
      } else {
        expect(shown).toMatchObject({ state: 'online', error_message: '', backend_id: `vm-${i}` });
      }
    }
    expect((await operationsOf(vms)).map((operation) => operation.status)).toEqual(
      vms.map((_, i) => (i % 4 === 3 ? OperationStatus.Failed : OperationStatus.Succeeded)),
    );
    await expectLogged(finished.announced);

    // Delete the online ones (stop first), then begin and finish the deletes together.
    const online = vms.filter((_, i) => i % 4 !== 3);
    for (const vm of online) await alice.post(`/api/instances/${vm.id}/stop`).expect(202);
    const stops = await together(
      (await operationsOf(online)).map((operation) => async () => {
        const started = (await transitions.begin(operation.id))!;
        await transitions.succeed(started.operation, {}, started.instance);
      }),
    );
    expect(stops.grouped).toBeGreaterThan(0);
    for (const vm of online) await alice.delete(`/api/instances/${vm.id}`).expect(202);
    const deletes = await together(
      (await operationsOf(online)).map((operation) => async () => {
        const started = (await transitions.begin(operation.id))!;
        await transitions.succeed(started.operation, {}, started.instance);
      }),
    );
    expect(deletes.grouped).toBeGreaterThan(0);

    const left = await db()
      .getRepository(Instance)
      .findBy({ id: In(online.map((vm) => vm.id)) });
    expect(left).toEqual([]);
    const histories = (await db().query(
      'SELECT count(*)::int AS n FROM instance_transitions WHERE instance_id = ANY($1)',
      [online.map((vm) => vm.id)],
    )) as { n: number }[];
    expect(histories[0].n).toBe(0);
    expect(deletes.announced.filter((event) => event.type === 'instance.deleted')).toHaveLength(
      online.length,
    );
    await expectLogged([...stops.announced, ...deletes.announced]);
    const { tally, rows } = await tallyAndRows(db());
    expect(tally).toEqual(rows);
  });

  it('shows its statements and the writes they stored in /metrics', async () => {
    const { groups, grouped } = transitions.groupStats;
    expect(groups).toBeGreaterThan(0);
    const text = (await t.http.get('/metrics').expect(200)).text;
    expect(text).toMatch(new RegExp(`^provisor_write_groups_total ${groups}$`, 'm'));
    expect(text).toMatch(new RegExp(`^provisor_grouped_writes_total ${grouped}$`, 'm'));
  });
});
