import { Client } from 'pg';
import { DataSource } from 'typeorm';
import { ApiClient } from './support/api';
import { untilWaitingOnLock } from './support/pg-locks';
import { tallyAndRows } from './support/tally';
import { startApp, TestApp } from './support/test-app';

/**
 * On PostgreSQL a change reads its instance without a lock and stores everything it writes as one
 * statement, conditional on the row still being the version it read. Here another session
 * changes the row between the read and the write, deterministically: the change must write
 * nothing on that miss (no transition, event, operation or count), then read again and apply
 * once.
 */
const onPostgres = process.env.TEST_DATABASE_URL?.startsWith('postgres') ? describe : describe.skip;

onPostgres('a change whose row changed after it was read (PostgreSQL)', () => {
  let t: TestApp;
  let alice: ApiClient;
  let other: Client;

  beforeAll(async () => {
    t = await startApp();
    const admin = new ApiClient(t.http, t.adminToken);
    alice = await admin.createUser('alice');
    other = new Client({ connectionString: t.env.DATABASE_URL });
    await other.connect();
  });
  afterAll(async () => {
    await other?.end();
    await t?.close();
  });

  async function rowsOf(instanceId: string): Promise<Record<string, number>> {
    const [row] = (await t.app.get(DataSource).query(
      `SELECT (SELECT count(*) FROM instance_transitions WHERE instance_id = $1)::int AS transitions,
         (SELECT count(*) FROM instance_events WHERE instance_id = $1)::int AS events,
         (SELECT count(*) FROM operations WHERE instance_id = $1)::int AS operations`,
      [instanceId],
    )) as Record<string, number>[];
    return row;
  }

  /**
   * Runs `request` while another session holds a change of the instance uncommitted, as a PATCH
   * would: its row (same state and operation, a later time) and a transition of its history.
   */
  async function raceWithOtherSession<T>(instanceId: string, request: () => Promise<T>) {
    await other.query('BEGIN');
    await other.query(
      `UPDATE instances SET updated_at = updated_at + interval '1 millisecond' WHERE id = $1`,
      [instanceId],
    );
    await other.query(
      `INSERT INTO instance_transitions (instance_id, action, from_state, to_state, error_message, at)
       SELECT id, 'update', state, state, '', now() FROM instances WHERE id = $1`,
      [instanceId],
    );
    const answer = request();
    // The request read the row as it was and now waits on the other session's row lock.
    await untilWaitingOnLock(
      t.app.get(DataSource),
      'WITH instance_',
      'the change to wait on the row lock',
    );
    await other.query('COMMIT');
    return answer;
  }

  it('writes nothing on the miss, then applies once on a fresh read', async () => {
    const vm = await alice.online();
    const before = await rowsOf(vm.id);

    const res = await raceWithOtherSession(vm.id, async () =>
      alice.post(`/api/instances/${vm.id}/stop`),
    );
    expect(res.status).toBe(202);
    expect(res.body.state).toBe('stopping_scheduled');
    await alice.waitForState(vm.id, 'offline');

    // The other session's transition, then one stop: scheduled, started, succeeded; one
    // operation. A write that landed on the miss would show as a second of each.
    expect(await rowsOf(vm.id)).toEqual({
      transitions: before.transitions + 4,
      events: before.events + 3,
      operations: before.operations + 1,
    });
    const { items } = (await alice.get(`/api/instances/${vm.id}/transitions`).expect(200)).body;
    expect(items.slice(-3).map((i: { from: string; to: string }) => `${i.from}>${i.to}`)).toEqual([
      'online>stopping_scheduled',
      'stopping_scheduled>stopping',
      'stopping>offline',
    ]);
    const { tally, rows } = await tallyAndRows(t.app.get(DataSource));
    expect(tally).toEqual(rows);
  });

  it('removes an instance and all its history even when a change got in first', async () => {
    const vm = await alice.online();
    const admin = new ApiClient(t.http, t.adminToken);
    const res = await raceWithOtherSession(vm.id, async () =>
      admin.post(`/api/instances/${vm.id}/unlink`),
    );
    expect(res.status).toBe(204);
    await alice.get(`/api/instances/${vm.id}`).expect(404);
    expect(await rowsOf(vm.id)).toMatchObject({ transitions: 0 });
    const { tally, rows } = await tallyAndRows(t.app.get(DataSource));
    expect(tally).toEqual(rows);
  });
});
