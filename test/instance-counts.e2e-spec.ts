import { DataSource } from 'typeorm';
import { ApiClient } from './support/api';
import { tallyAndRows } from './support/tally';
import { startApp, TestApp } from './support/test-app';

/**
 * A list's `total` comes from `instance_counts`, kept in the transaction of every change. After
 * every kind of change (create, actions, failure, forced states, PATCH, unlink, delete, forced
 * delete) the tally must equal a count of the rows themselves.
 */
describe('instance counts behind list totals', () => {
  let t: TestApp;
  let admin: ApiClient;
  let alice: ApiClient;
  let bob: ApiClient;

  beforeAll(async () => {
    t = await startApp();
    admin = new ApiClient(t.http, t.adminToken);
    alice = await admin.createUser('alice');
    bob = await admin.createUser('bob');
  });
  afterAll(() => t?.close());

  async function expectTallyMatchesRows(): Promise<void> {
    const { tally, rows } = await tallyAndRows(t.app.get(DataSource));
    expect(tally).toEqual(rows);
  }

  it('matches the rows after every kind of change', async () => {
    const a = await Promise.all([1, 2, 3, 4].map((i) => alice.online({ name: `a-${i}` })));
    const b = await Promise.all([1, 2].map((i) => bob.online({ name: `b-${i}` })));
    await expectTallyMatchesRows();

    await alice.action(a[0].id, 'stop');
    await alice.waitForState(a[0].id, 'offline');
    await alice.patch(`/api/instances/${a[1].id}`, { name: 'renamed' }).expect(200);
    await admin.post('/api/simulator/faults', {
      operation: 'stop',
      instance_id: a[2].id,
      mode: 'error',
      message: 'disk on fire',
    });
    await alice.action(a[2].id, 'stop');
    await alice.waitForState(a[2].id, 'erred');
    await admin.post(`/api/instances/${b[0].id}/set_erred`, { error_message: 'x' }).expect(200);
    await admin.post(`/api/instances/${b[0].id}/set_ok`, { state: 'offline' }).expect(200);
    await admin.post(`/api/instances/${b[1].id}/unlink`).expect(204);
    await alice.action(a[0].id, 'delete');
    await alice.waitForState(a[0].id, 'gone');
    // Deleting an erred instance is forced: gone even though the backend fails the delete.
    await admin.post('/api/simulator/faults', {
      operation: 'delete',
      instance_id: a[2].id,
      mode: 'error',
      message: 'no',
    });
    await alice.action(a[2].id, 'delete');
    await alice.waitForState(a[2].id, 'gone');
    await expectTallyMatchesRows();

    // The totals users see, each only of their own.
    expect((await alice.get('/api/instances').expect(200)).body.total).toBe(2);
    expect((await alice.get('/api/instances?state=online').expect(200)).body.total).toBe(2);
    expect((await bob.get('/api/instances?state=offline').expect(200)).body.total).toBe(1);
    expect((await bob.get('/api/instances?state=online').expect(200)).body.total).toBe(0);
    expect((await admin.get('/api/instances').expect(200)).body.total).toBe(3);
    expect((await alice.get('/api/instances?name=renamed').expect(200)).body.total).toBe(1);
  });
});
