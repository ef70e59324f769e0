import { DataSource } from 'typeorm';
import { EVENT_LOG_LOCK } from '../src/database/transaction-runner';
import { InstanceEvent } from '../src/state-machine/instance-event.entity';
import { ApiClient } from './support/api';
import { startApp, TestApp } from './support/test-app';

/**
 * A client paging the event log with `after` must never step over an event that commits later.
 * Only PostgreSQL runs writers side by side; SQLite's single writer cannot show the problem.
 */
const onPostgres = process.env.TEST_DATABASE_URL?.startsWith('postgres') ? describe : describe.skip;

onPostgres('event log order on PostgreSQL', () => {
  let t: TestApp;
  let admin: ApiClient;

  beforeAll(async () => {
    t = await startApp();
    admin = new ApiClient(t.http, t.adminToken);
  });
  afterAll(() => t.close());

  it('shows events in id order even when a transaction that took an earlier id commits later', async () => {
    const vm = await admin.online();
    const all = (await admin.get('/api/events?limit=500').expect(200)).body.items;
    const last = all[all.length - 1].id as number;

    // A slow writer: it has stored an event and not committed yet.
    const runner = t.app.get(DataSource).createQueryRunner();
    await runner.startTransaction();
    await runner.query('SELECT pg_advisory_xact_lock($1)', [EVENT_LOG_LOCK]);
    await runner.manager.insert(InstanceEvent, {
      type: 'instance.updated',
      instanceId: vm.id,
      ownerId: vm.owner_id,
      state: 'online',
      errorMessage: '',
      at: new Date(),
    });

    // A fast writer meanwhile.
    const patch = admin.patch(`/api/instances/${vm.id}`, { description: 'fast' }).then((r) => r);
    await new Promise((r) => setTimeout(r, 500));
    const during = (await admin.get(`/api/events?after=${last}`).expect(200)).body.items;
    expect(during).toEqual([]);

    await runner.commitTransaction();
    await runner.release();
    expect((await patch).status).toBe(200);
    const after = (await admin.get(`/api/events?after=${last}`).expect(200)).body.items;
    expect(after).toHaveLength(2);
    expect(after[0].id).toBeLessThan(after[1].id);
    expect(after[1].type).toBe('instance.updated');
  });
});
