import { DataSource } from 'typeorm';
import { ApiClient } from './support/api';
import { startApp, TestApp } from './support/test-app';

/**
 * A page of the instance list must come out of an index in the list's own order
 * (`created_at DESC, id DESC`): no sort after the scan, so a page reads its rows and not every
 * row that shares a millisecond, however large the table grows. Asked of the database's planner
 * (sequential scans off on PostgreSQL, where a small table would otherwise never use an index).
 */
describe('the instance list query plan', () => {
  let t: TestApp;
  let alice: ApiClient;

  beforeAll(async () => {
    t = await startApp();
    const admin = new ApiClient(t.http, t.adminToken);
    alice = await admin.createUser('alice');
    await Promise.all([1, 2, 3].map((i) => alice.create({ name: `plan-${i}` })));
  });
  afterAll(() => t?.close());

  const lists: [string, string][] = [
    ['one owner, one state', 'owner_id = :owner AND state IN (:state)'],
    ['one owner', 'owner_id = :owner'],
    ['staff, one state', 'state IN (:state)'],
    ['staff, all', '1 = 1'],
  ];

  it.each(lists)('%s: read in order from an index, no sort', async (_, where) => {
    const db = t.app.get(DataSource);
    const postgres = db.options.type === 'postgres';
    const owner = (await alice.get('/api/instances?limit=1').expect(200)).body.items[0].owner_id;
    const values: string[] = [];
    const condition = where.replace(/:(\w+)/g, (_m, name: string) => {
      values.push(name === 'owner' ? owner : 'online');
      return postgres ? `$${values.length}` : '?';
    });
    const sql = `SELECT * FROM instances WHERE ${condition} ORDER BY created_at DESC, id DESC LIMIT 50`;
    const runner = db.createQueryRunner();
    try {
      let plan: string;
      if (postgres) {
        await runner.query('SET enable_seqscan = off');
        const rows = (await runner.query(`EXPLAIN ${sql}`, values)) as { 'QUERY PLAN': string }[];
        plan = rows.map((row) => row['QUERY PLAN']).join('\n');
        await runner.query('RESET enable_seqscan');
        expect(plan).toMatch(/Index Scan Backward using ix_instances_/);
        expect(plan).not.toMatch(/Sort/);
      } else {
        const rows = (await runner.query(`EXPLAIN QUERY PLAN ${sql}`, values)) as {
          detail: string;
        }[];
        plan = rows.map((row) => row.detail).join('\n');
        expect(plan).toMatch(/ix_instances_/);
        expect(plan).not.toMatch(/TEMP B-TREE/);
      }
    } finally {
      await runner.release();
    }
  });
});
