import Database from 'better-sqlite3';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DataSource, EntityManager } from 'typeorm';
import { GroupAborted, TransactionRunner } from './transaction-runner';

/**
 * The SQLite group commit, on a real database file: what a caller is told must already be on
 * disk, as another connection sees it, and one transaction's failure is its own.
 */
describe('TransactionRunner on SQLite', () => {
  let dir: string;
  let dataSource: DataSource;
  let runner: TransactionRunner;
  /** A second connection to the same file: it sees committed rows only. */
  let observer: Database.Database;
  let commits: number;

  beforeEach(async () => {
    dir = mkdtempSync(join(tmpdir(), 'provisor-tx-'));
    const file = join(dir, 'db.sqlite');
    dataSource = new DataSource({
      type: 'better-sqlite3',
      database: file,
      prepareDatabase: (db: Database.Database) => {
        db.pragma('journal_mode = WAL');
        db.pragma('synchronous = FULL');
      },
    });
    await dataSource.initialize();
    await dataSource.query('CREATE TABLE items (name TEXT PRIMARY KEY)');
    runner = new TransactionRunner(dataSource);
    observer = new Database(file, { readonly: true });
    commits = 0;
    const queryRunner = dataSource.createQueryRunner();
    const query = queryRunner.query.bind(queryRunner);
    jest.spyOn(queryRunner, 'query').mockImplementation((sql: string, ...rest: unknown[]) => {
      if (sql === 'COMMIT') commits++;
      return query(sql, ...(rest as [unknown[]]));
    });
  });

  afterEach(async () => {
    observer.close();
    await dataSource.destroy();
    rmSync(dir, { recursive: true, force: true });
  });

  const committed = (): string[] =>
    (observer.prepare('SELECT name FROM items ORDER BY name').all() as { name: string }[]).map(
      (row) => row.name,
    );

  const insert = (name: string) => (em: EntityManager) =>
    em.query('INSERT INTO items (name) VALUES (?)', [name]).then(() => name);

  it('answers each caller only once its transaction is committed', async () => {
    const seenAtAnswer = new Map<string, string[]>();
    await Promise.all(
      ['a', 'b', 'c'].map((name) =>
        runner.run(insert(name)).then(() => seenAtAnswer.set(name, committed())),
      ),
    );
    for (const name of ['a', 'b', 'c']) expect(seenAtAnswer.get(name)).toContain(name);
  });

  it('lets transactions queued together share one commit', async () => {
    const names = Array.from({ length: 40 }, (_, i) => `item-${String(i).padStart(2, '0')}`);
    await Promise.all(names.map((name) => runner.run(insert(name))));
    expect(committed()).toEqual(names);
    expect(commits).toBeLessThan(names.length / 4);
  });

  it('rolls back a failing transaction alone; the others in its group commit', async () => {
    const results = await Promise.allSettled([
      runner.run(insert('first')),
      runner.run(async (em) => {
        await em.query('INSERT INTO items (name) VALUES (?)', ['doomed']);
        throw new Error('refused by a check');
      }),
      // A constraint error in SQLite itself: the duplicate of a row in the same group.
      runner.run(insert('first')),
      runner.run(insert('last')),
    ]);
    expect(results.map((r) => r.status)).toEqual([
      'fulfilled',
      'rejected',
      'rejected',
      'fulfilled',
    ]);
    expect((results[1] as PromiseRejectedResult).reason).toEqual(new Error('refused by a check'));
    expect(committed()).toEqual(['first', 'last']);
  });

  it('fails the whole group, and answers no one as committed, when SQLite ends the transaction', async () => {
    const results = await Promise.allSettled([
      runner.run(insert('before')),
      runner.run(async (em) => {
        // What SQLite does by itself on a full disk or an I/O error.
        await em.query('ROLLBACK');
        throw new Error('disk full');
      }),
      runner.run(insert('after')),
    ]);
    expect(results.map((r) => r.status)).toEqual(['rejected', 'rejected', 'fulfilled']);
    // The bystander is told its work was undone with the group, not given another's error.
    expect((results[0] as PromiseRejectedResult).reason).toBeInstanceOf(GroupAborted);
    expect((results[1] as PromiseRejectedResult).reason).toEqual(new Error('disk full'));
    expect(committed()).toEqual(['after']);
    // The runner carries on with real transactions afterwards.
    await runner.run(insert('later'));
    expect(committed()).toEqual(['after', 'later']);
  });

  it('answers everyone and leaves the connection usable when a group breaks part-way', async () => {
    const results = await Promise.allSettled([
      runner.run(insert('one')),
      // Returns normally, but its savepoint is gone: releasing it fails outside the unit's code.
      runner.run((em) => em.query('ROLLBACK')),
      runner.run(insert('two')),
    ]);
    expect(results[0]).toMatchObject({ status: 'rejected', reason: expect.any(GroupAborted) });
    expect(results[1].status).toBe('rejected');
    // The third ran in a later group of its own, or was answered with the group: never lost.
    expect(committed()).toEqual(results[2].status === 'fulfilled' ? ['two'] : []);
    await runner.run(insert('later'));
    expect(committed()).toContain('later');
  });

  it('undoes a failed transaction before its caller hears of the failure', async () => {
    const seenByCaller = await runner
      .run(async (em) => {
        await em.query('INSERT INTO items (name) VALUES (?)', ['half-done']);
        throw new Error('refused');
      })
      .catch(() => dataSource.query('SELECT name FROM items'));
    expect(seenByCaller).toEqual([]);
  });

  it('keeps the answer of each transaction apart', async () => {
    const values = await Promise.all(
      [1, 2, 3].map((n) => runner.run(async (em) => (await insert(`n${n}`)(em)) + '!')),
    );
    expect(values).toEqual(['n1!', 'n2!', 'n3!']);
  });
});
