import { randomUUID } from 'node:crypto';
import { DataSource } from 'typeorm';
import { InstanceState } from '../src/state-machine/instance.machine';
import { ApiClient } from './support/api';
import { seedInstances } from './support/seed';
import { startApp, TestApp } from './support/test-app';

/**
 * A page of the instance list must come out of an index in the list's own order
 * (`created_at DESC, id DESC`): no sort after the scan, so a page reads its rows and not every
 * row that shares a millisecond, however large the table grows. Asked of the database's planner
 * after ANALYZE (sequential scans off on PostgreSQL, where a table this small would otherwise
 * never use an index).
 */
describe('the instance list query plan', () => {
  let t: TestApp;
  let alice: ApiClient;
  const owners = Array.from({ length: 30 }, () => randomUUID());

  beforeAll(async () => {
    t = await startApp();
    const admin = new ApiClient(t.http, t.adminToken);
    alice = await admin.createUser('alice');
    await Promise.all([1, 2, 3].map((i) => alice.create({ name: `plan-${i}` })));
    // A table the planner has statistics for: 3,000 instances in three states, half of them one
    // owner's (the one whose lists are asked for) and half 29 others',
    // many sharing a millisecond, as a burst of creates leaves them.
    const db = t.app.get(DataSource);
    const states = [InstanceState.Online, InstanceState.Offline, InstanceState.Erred];
    const base = Date.now() - 3_600_000;
    await seedInstances(db, 3000, (i) => {
      const at = new Date(base + Math.floor(i / 20));
      return {
        state: states[i % 3],
        ownerId: i % 2 === 0 ? owners[0] : owners[1 + (i % (owners.length - 1))],
        createdAt: at,
        updatedAt: at,
      };
    });
    await db.query('ANALYZE');
  });
  afterAll(() => t?.close());

  // The list's shapes without a name filter, as InstanceQueries.list builds them. A user's list of
  // one state must read the owner-and-state index; the others may take whichever index the
  // planner finds cheaper, so long as no sort follows. (One state or none: several states need a
  // merge of the index's runs.)
  const lists: [string, string, string][] = [
    [
      'one owner, one state',
      'owner_id = :owner AND state IN (:state)',
      'ix_instances_owner_state_created',
    ],
    ['one owner', 'owner_id = :owner', 'ix_instances_'],
    ['staff, one state', 'state IN (:state)', 'ix_instances_'],
    ['staff, all', '1 = 1', 'ix_instances_'],
  ];

  it.each(lists)('%s: read in order from its index, no sort', async (_, where, index) => {
    const db = t.app.get(DataSource);
    const postgres = db.options.type === 'postgres';
    const owner = owners[0];
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
        expect(plan).toMatch(new RegExp(`Index Scan Backward using ${index}\\w* on instances`));
        expect(plan).not.toMatch(/Sort/);
      } else {
        const rows = (await runner.query(`EXPLAIN QUERY PLAN ${sql}`, values)) as {
          detail: string;
        }[];
        plan = rows.map((row) => row.detail).join('\n');
        expect(plan).toMatch(new RegExp(`USING INDEX ${index}\\w*`));
        expect(plan).not.toMatch(/TEMP B-TREE/);
      }
    } finally {
      if (postgres) await runner.query('RESET enable_seqscan');
      await runner.release();
    }
  });
});
