import { randomUUID } from 'node:crypto';
import { escapeLiteral } from 'pg';
import { DataSource, QueryRunner } from 'typeorm';
import { EntityStatements } from '../src/database/entity-statements';
import { Instance } from '../src/state-machine/instance.entity';
import { InstanceState } from '../src/state-machine/instance.machine';
import { seedInstances } from './support/seed';
import { startApp, TestApp } from './support/test-app';

/**
 * Every change of an instance's state is an update conditional on the row being as it was read
 * (its id, state, operation and `updated_at`), and every user's read of one instance matches its
 * id and owner. Each must find its row through the primary key, whatever else the condition
 * names: an index that leads with the state or the owner walks the entries of every instance in
 * that state, or of that owner. Asked of the planner after ANALYZE, for the statements
 * `EntityStatements` builds; on PostgreSQL for both the generic plan a prepared statement
 * settles on and the custom plan of its first runs, with sequential scans off (a table this
 * small would otherwise never use an index).
 */
describe('looking up one instance by its key', () => {
  let t: TestApp;
  let db: DataSource;
  let statements: EntityStatements<Instance>;
  const owner = randomUUID();
  const at = new Date(Date.now() - 3_600_000);

  beforeAll(async () => {
    t = await startApp();
    db = t.app.get(DataSource);
    statements = new EntityStatements(db, Instance);
    // 3,000 settled instances, most of them one owner's, many sharing a millisecond. The
    // statistics then know of no instance in a transitional state, so an index that leads with
    // the state looks like it holds just the row changed: the plan a busy service is left with
    // after an ANALYZE, and the plan that walks thousands of entries once a burst of work puts
    // that many instances in the state.
    await seedInstances(db, 3000, (i) => {
      const time = new Date(at.getTime() + Math.floor(i / 20));
      return {
        state: i % 2 === 0 ? InstanceState.Online : InstanceState.Offline,
        ownerId: i % 10 === 0 ? randomUUID() : owner,
        createdAt: time,
        updatedAt: time,
      };
    });
    await db.query('ANALYZE');
  });
  afterAll(() => t?.close());

  const id = randomUUID();
  const statementsOf: [string, (parameters: unknown[]) => string][] = [
    [
      'an unlocked change of state (one state, the version read)',
      (parameters) =>
        statements.updateInto(
          {
            id,
            state: [InstanceState.StoppingScheduled],
            operationId: randomUUID(),
            updatedAt: at,
          },
          { state: InstanceState.Stopping, updatedAt: new Date() },
          parameters,
        ),
    ],
    [
      'a locked change of state (any of several states)',
      (parameters) =>
        statements.updateInto(
          { id, state: [InstanceState.StoppingScheduled, InstanceState.Stopping] },
          { state: InstanceState.Offline, operationId: null, updatedAt: new Date() },
          parameters,
        ),
    ],
    [
      'a removal of the version read',
      (parameters) =>
        statements.deleteInto(
          { id, state: [InstanceState.Deleting], operationId: randomUUID(), updatedAt: at },
          parameters,
        ),
    ],
    [
      "a user's read of one instance",
      (parameters) => `SELECT 1 WHERE ${statements.existsInto({ id, ownerId: owner }, parameters)}`,
    ],
  ];

  // PostgreSQL stores writes that meet as one statement, set-wise over arrays: `others` rows
  // besides the one `id` names.
  const setWise = (others: number): [string, (parameters: unknown[]) => string][] => {
    const keys = () => [id, ...Array.from({ length: others }, () => randomUUID())];
    return [
      [
        'changes of state stored together',
        (parameters) =>
          statements.unnestUpdateInto(
            keys().map((key, tag) => ({
              tag,
              where: {
                id: key,
                state: [InstanceState.StoppingScheduled],
                operationId: tag === 0 ? null : randomUUID(),
                updatedAt: at,
              },
              set: { state: InstanceState.Stopping, updatedAt: new Date() },
            })),
            parameters,
          ),
      ],
      [
        'rows locked before changes stored together',
        (parameters) =>
          statements.lockInto(
            keys().map((key, tag) => ({ tag, key })),
            parameters,
          ),
      ],
      [
        'removals stored together',
        (parameters) =>
          statements.unnestDeleteInto(
            keys().map((key, tag) => ({
              tag,
              where: { id: key, state: [InstanceState.Deleting], operationId: null, updatedAt: at },
            })),
            parameters,
          ),
      ],
    ];
  };

  async function plan(runner: QueryRunner, sql: string, parameters: unknown[]): Promise<string> {
    if (db.options.type !== 'postgres') {
      const rows = (await runner.query(`EXPLAIN QUERY PLAN ${sql}`, parameters)) as {
        detail: string;
      }[];
      return rows.map((row) => row.detail).join('\n');
    }
    // EXPLAIN takes no parameters: the values go in as literals of the prepared statement's.
    const text = (value: unknown) => (value instanceof Date ? value.toISOString() : String(value));
    const element = (value: unknown) =>
      value === null ? 'NULL' : `"${text(value).replace(/["\\]/g, '\\$&')}"`;
    const literals = parameters.map((value) => {
      if (value === null) return 'NULL';
      if (Array.isArray(value)) return escapeLiteral(`{${value.map(element).join(',')}}`);
      return escapeLiteral(text(value));
    });
    const rows = (await runner.query(`EXPLAIN EXECUTE probe(${literals.join(', ')})`)) as {
      'QUERY PLAN': string;
    }[];
    return rows.map((row) => row['QUERY PLAN']).join('\n');
  }

  const onPostgres = process.env.TEST_DATABASE_URL?.startsWith('postgres') ? it : it.skip;

  it.each(statementsOf)('%s: through the primary key', (_, build) => throughTheKey(build));

  onPostgres.each(setWise(1))('%s: each row through the primary key', (_, build) =>
    throughTheKey(build),
  );

  // A group of the size a busy service stores, in a table this small (50 pages), with nothing
  // steering the planner: each row is still looked up, not the whole table read and hashed, in
  // the sessions Provisor opens (`POSTGRES_SESSION_OPTIONS`); at PostgreSQL's default
  // random_page_cost of 4 the custom plans of all three read the table instead (the control).
  onPostgres.each(setWise(23))(
    '%s, 24 of them, sequential scans allowed: each row through the primary key',
    (_, build) => throughTheKey(build, { seqScans: true }),
  );

  onPostgres.each(setWise(23))(
    "%s, 24 of them, at PostgreSQL's default random_page_cost: the table is read (control)",
    (_, build) =>
      probing(build, ['random_page_cost = 4'], async (runner, sql, parameters) => {
        await runner.query('SET plan_cache_mode = force_custom_plan');
        expect(await plan(runner, sql, parameters)).toMatch(/Seq Scan on instances/);
      }),
  );

  /**
   * PostgreSQL: prepares `build`'s statement as `probe` on a connection of the app's pool with
   * `settings` made, runs `check`, then puts the connection back as it was: the probe gone, every
   * setting back to the session's own (Provisor's, from its startup options).
   */
  async function probing(
    build: (parameters: unknown[]) => string,
    settings: string[],
    check: (runner: QueryRunner, sql: string, parameters: unknown[]) => Promise<void>,
  ): Promise<void> {
    const parameters: unknown[] = [];
    const sql = build(parameters);
    const runner = db.createQueryRunner();
    try {
      for (const setting of settings) await runner.query(`SET ${setting}`);
      await runner.query(`PREPARE probe AS ${sql}`);
      await check(runner, sql, parameters);
    } finally {
      // Only the probe: the app's own prepared statements on this pooled connection stay.
      await runner.query('DEALLOCATE probe').catch(() => undefined);
      await runner.query('RESET plan_cache_mode');
      for (const setting of settings) await runner.query(`RESET ${setting.split(' ')[0]}`);
      await runner.release();
    }
  }

  async function throughTheKey(
    build: (parameters: unknown[]) => string,
    { seqScans = false } = {},
  ): Promise<void> {
    if (db.options.type !== 'postgres') {
      const parameters: unknown[] = [];
      const sql = build(parameters);
      const runner = db.createQueryRunner();
      try {
        const shown = await plan(runner, sql, parameters);
        expect(shown).toMatch(/USING INDEX sqlite_autoindex_instances_1 \(id=\?\)/);
      } finally {
        await runner.release();
      }
      return;
    }
    await probing(
      build,
      seqScans ? [] : ['enable_seqscan = off'],
      async (runner, sql, parameters) => {
        if (seqScans) {
          // The session's own setting, from its startup options: nothing here changes it.
          const [{ random_page_cost }] = (await runner.query('SHOW random_page_cost')) as {
            random_page_cost: string;
          }[];
          expect(random_page_cost).toBe('1.1');
        }
        for (const mode of ['force_generic_plan', 'force_custom_plan']) {
          await runner.query(`SET plan_cache_mode = ${mode}`);
          const shown = await plan(runner, sql, parameters);
          expect({ mode, shown }).toEqual({
            mode,
            shown: expect.stringMatching(/Index (Only )?Scan using "PK_\w+" on instances/),
          });
          expect(shown).toMatch(/Index Cond: \(id = /);
          expect(shown).not.toMatch(/Seq Scan on instances|Scan using ix_instances_/);
        }
      },
    );
  }
});
