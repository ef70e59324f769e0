import Database from 'better-sqlite3';
import { mkdtempSync, readlinkSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DataSource, EntityManager, QueryFailedError } from 'typeorm';
import { execute } from './entity-statements';
import { GroupAborted, TransactionRunner } from './transaction-runner';
import { BACKSTOP_PAGES } from './wal-checkpointer';
import type { SyncFile } from './wal-sync';

/** A fresh database file with an `items` table, and a read-only second connection to it. */
async function itemsDatabase(synchronous: 'FULL' | 'NORMAL') {
  const dir = mkdtempSync(join(tmpdir(), 'provisor-tx-'));
  const file = join(dir, 'db.sqlite');
  const dataSource = new DataSource({
    type: 'better-sqlite3',
    database: file,
    prepareDatabase: (db: Database.Database) => {
      db.pragma('journal_mode = WAL');
      db.pragma(`synchronous = ${synchronous}`);
    },
  });
  await dataSource.initialize();
  await dataSource.query('CREATE TABLE items (name TEXT PRIMARY KEY)');
  /** Sees committed rows only. */
  const observer = new Database(file, { readonly: true });
  return {
    dataSource,
    committed: (): string[] =>
      (observer.prepare('SELECT name FROM items ORDER BY name').all() as { name: string }[]).map(
        (row) => row.name,
      ),
    async close() {
      observer.close();
      await dataSource.destroy();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** The shared connection's `wal_autocheckpoint`: raised while a checkpointer runs. */
const autocheckpointOf = (dataSource: DataSource) =>
  (
    dataSource.driver as unknown as { databaseConnection: Database.Database }
  ).databaseConnection.pragma('wal_autocheckpoint', { simple: true });

const insert = (name: string) => (em: EntityManager) =>
  em.query('INSERT INTO items (name) VALUES (?)', [name]).then(() => name);

/**
 * The SQLite group commit, on a real database file: what a caller is told must already be on
 * disk, as another connection sees it, and one transaction's failure is its own.
 */
describe('TransactionRunner on SQLite', () => {
  let database: Awaited<ReturnType<typeof itemsDatabase>>;
  let dataSource: DataSource;
  let runner: TransactionRunner;
  let committed: () => string[];
  let commits: number;

  beforeEach(async () => {
    database = await itemsDatabase('FULL');
    ({ dataSource, committed } = database);
    runner = new TransactionRunner(dataSource);
    commits = 0;
    const queryRunner = dataSource.createQueryRunner();
    const query = queryRunner.query.bind(queryRunner);
    jest.spyOn(queryRunner, 'query').mockImplementation((sql: string, ...rest: unknown[]) => {
      if (sql === 'COMMIT') commits++;
      return query(sql, ...(rest as [unknown[]]));
    });
  });

  afterEach(() => database.close());

  it('leaves checkpoints to SQLite where COMMIT syncs by itself (FULL)', async () => {
    await runner.run(insert('a'));
    await new Promise((r) => setTimeout(r, 200));
    expect(autocheckpointOf(dataSource)).toBe(1000);
  });

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

  it("rolls back the hot path's own statements (execute, on the connection) with their transaction", async () => {
    const add = (em: EntityManager, name: string) =>
      execute(dataSource, em, 'INSERT INTO items (name) VALUES (?)', [name]);
    const results = await Promise.allSettled([
      runner.run((em) => add(em, 'kept')),
      runner.run(async (em) => {
        await add(em, 'undone');
        throw new Error('refused by a check');
      }),
      runner.run((em) => add(em, 'kept too')),
    ]);
    expect(results.map((r) => r.status)).toEqual(['fulfilled', 'rejected', 'fulfilled']);
    expect(committed()).toEqual(['kept', 'kept too']);
  });

  it('answers a failed hot-path statement as QueryFailedError, and logs it as TypeORM would', async () => {
    const logged = jest.spyOn(dataSource.logger, 'logQueryError').mockImplementation(() => {});
    const sql = 'INSERT INTO items (name) VALUES (?)';
    await execute(dataSource, dataSource.manager, sql, ['once']);
    await expect(execute(dataSource, dataSource.manager, sql, ['once'])).rejects.toBeInstanceOf(
      QueryFailedError,
    );
    expect(logged).toHaveBeenCalledWith(
      expect.objectContaining({ code: 'SQLITE_CONSTRAINT_PRIMARYKEY' }),
      sql,
      ['once'],
    );
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
    // Its own caller hears the failed release as any failed statement is heard: TypeORM's error.
    expect(results[1]).toMatchObject({ status: 'rejected', reason: expect.any(QueryFailedError) });
    expect((results[1] as PromiseRejectedResult).reason.message).toMatch(/no such savepoint/);
    // The third ran in a later group of its own, or was answered with the group: never lost.
    expect(committed()).toEqual(results[2].status === 'fulfilled' ? ['two'] : []);
    await runner.run(insert('later'));
    expect(committed()).toContain('later');
  });

  it('answers every waiting transaction when a group cannot even begin, instead of retrying for ever', async () => {
    await runner.run(insert('first'));
    // The connection gone under the runner (closed during shutdown, say): BEGIN itself fails.
    (
      dataSource.driver as unknown as { databaseConnection: Database.Database }
    ).databaseConnection.close();
    const results = await Promise.allSettled(
      ['a', 'b', 'c'].map((name) => runner.run(insert(name))),
    );
    expect(results.map((r) => r.status)).toEqual(['rejected', 'rejected', 'rejected']);
    expect((results[0] as PromiseRejectedResult).reason).toBeInstanceOf(GroupAborted);
    expect(committed()).toEqual(['first']);
  });

  it('runs the next transaction in a group of its own when the first ends the transaction', async () => {
    const results = await Promise.allSettled([
      runner.run(async (em) => {
        await em.query('ROLLBACK'); // SQLite on a full disk, at the group's first transaction
        throw new Error('disk full');
      }),
      runner.run(insert('next')),
    ]);
    expect(results.map((r) => r.status)).toEqual(['rejected', 'fulfilled']);
    expect(committed()).toEqual(['next']);
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

  /** What a read on the shared connection sees now. */
  const names = async () =>
    ((await dataSource.query('SELECT name FROM items ORDER BY name')) as { name: string }[]).map(
      (row) => row.name,
    );
  /** A few turns of the event loop, for anything not held back to happen. */
  const turns = async () => {
    for (let i = 0; i < 3; i++) await new Promise((resolve) => setImmediate(resolve));
  };

  it('keeps a read out of a group that holds the connection: it sees neither open nor rolled-back rows', async () => {
    let inserted!: () => void;
    const insertedNow = new Promise<void>((resolve) => (inserted = resolve));
    let fail!: () => void;
    const held = new Promise<void>((_, reject) => (fail = () => reject(new Error('refused'))));
    const write = runner.run(async (em) => {
      await insert('phantom')(em);
      inserted();
      await held;
    });
    await insertedNow;
    let answered = false;
    const read = runner.read(names).finally(() => (answered = true));
    await turns();
    expect(answered).toBe(false);
    fail();
    await expect(write).rejects.toThrow('refused');
    await expect(read).resolves.toEqual([]);
  });

  it('starts a group only once the reads under way are over', async () => {
    let resume!: () => void;
    const paused = new Promise<void>((resolve) => (resume = resolve));
    const read = runner.read(async () => {
      const first = await names();
      await paused;
      // A read inside a read goes ahead, though a group waits.
      return [first, await runner.read(names)];
    });
    await turns();
    let written = false;
    const write = runner.run(insert('later')).then(() => (written = true));
    await turns();
    expect(written).toBe(false);
    resume();
    await expect(read).resolves.toEqual([[], []]);
    await write;
    await expect(runner.read(names)).resolves.toEqual(['later']);
  });
});

/**
 * With `synchronous = NORMAL` SQLite's COMMIT does not fsync; the runner does, off the event
 * loop, and answers no caller before that fsync is done.
 */
describe('TransactionRunner on SQLite with the commit fsync off the event loop', () => {
  let database: Awaited<ReturnType<typeof itemsDatabase>>;
  let committed: () => string[];
  /** fsyncs asked for, each waiting until the test ends it. */
  let syncs: (() => void)[];
  let synced: number[];
  let runner: TransactionRunner;

  beforeEach(async () => {
    database = await itemsDatabase('NORMAL');
    committed = database.committed;
    syncs = [];
    synced = [];
    const held: SyncFile = (fd, done) => syncs.push(() => (synced.push(fd), done(null)));
    runner = new TransactionRunner(database.dataSource, held);
  });

  afterEach(async () => {
    syncs.forEach((finish) => finish());
    await runner.durable();
    await runner.beforeApplicationShutdown();
    await runner.onApplicationShutdown();
    await database.close();
  });

  /** Long enough for a wrongly answered promise to have settled. */
  const turns = () => new Promise((r) => setTimeout(r, 20));
  /** Waits for what must happen (a commit, a sync asked for), however slow the machine. */
  const until = async (check: () => boolean) => {
    for (let i = 0; i < 500 && !check(); i++) await new Promise((r) => setTimeout(r, 5));
    expect(check()).toBe(true);
  };

  it('answers a committed transaction only once the log is synced', async () => {
    let answered = false;
    const first = runner.run(insert('a')).then((value) => ((answered = true), value));
    await until(() => syncs.length === 1);
    expect(committed()).toEqual(['a']);
    await turns();
    expect(answered).toBe(false);
    // Reads that met the commit wait for the same fsync.
    let readDurable = false;
    const read = runner.durable().then(() => (readDurable = true));
    await turns();
    expect(readDurable).toBe(false);

    syncs[0]();
    expect(await first).toBe('a');
    await read;
    // What was synced is the write-ahead log.
    expect(synced).toHaveLength(1);
    expect(readlinkSync(`/proc/self/fd/${synced[0]}`)).toMatch(/db\.sqlite-wal$/);
  });

  it('gathers the transactions asked for during a sync into the next commit, after it', async () => {
    const first = runner.run(insert('a'));
    await until(() => syncs.length === 1);
    const later = [runner.run(insert('b')), runner.run(insert('c'))];
    await turns();
    // The event loop was free to take them in; they wait for the running fsync, not in it.
    expect(committed()).toEqual(['a']);
    expect(syncs).toHaveLength(1);
    syncs[0]();
    expect(await first).toBe('a');
    // One commit for both, then one fsync before either is answered.
    await until(() => syncs.length === 2);
    expect(committed()).toEqual(['a', 'b', 'c']);
    let answered = false;
    void Promise.all(later).then(() => (answered = true));
    await turns();
    expect(answered).toBe(false);
    syncs[1]();
    expect(await Promise.all(later)).toEqual(['b', 'c']);
  });

  const autocheckpoint = () => autocheckpointOf(database.dataSource);

  it("moves the log's checkpoints off the event loop with its first write", async () => {
    const first = runner.run(insert('a'));
    await until(() => syncs.length === 1);
    syncs[0]();
    await first;
    await until(() => autocheckpoint() === BACKSTOP_PAGES);
  });

  it('starts no checkpointer for a first write once shutdown has begun', async () => {
    await runner.beforeApplicationShutdown();
    const first = runner.run(insert('a'));
    await until(() => syncs.length === 1);
    syncs[0]();
    await first;
    await new Promise((r) => setTimeout(r, 200));
    expect(autocheckpoint()).toBe(1000);
  });

  it('asks no fsync for a group that changed nothing', async () => {
    expect(await runner.run((em) => em.query('SELECT count(*) AS n FROM items'))).toEqual([
      { n: 0 },
    ]);
    expect(syncs).toHaveLength(0);
  });

  it('fails what a failed fsync was to make durable, and refuses every later write', async () => {
    const failing: SyncFile = (_fd, done) => done(Object.assign(new Error('EIO'), { code: 'EIO' }));
    const broken = new TransactionRunner(database.dataSource, failing);
    await expect(broken.run(insert('lost'))).rejects.toThrow(/could not be made durable/);
    // Committed, but its caller was told it failed: a power cut could still take it.
    expect(committed()).toEqual(['lost']);
    expect(broken.durabilityFailure?.message).toMatch(/Restart the service/);
    await expect(broken.run(insert('later'))).rejects.toThrow(/could not be made durable/);
    expect(committed()).toEqual(['lost']);
    await broken.beforeApplicationShutdown();
  });

  it('answers a write that does not wait for durability at COMMIT, and tells of durability later, in commit order', async () => {
    const told: string[] = [];
    const options = (name: string, awaitDurable: boolean) => ({
      awaitDurable,
      onCommit: () => told.push(`committed ${name}`),
      onDurable: () => told.push(`durable ${name}`),
    });
    const step = runner.run(insert('a'), options('a', false));
    const answer = runner.run(insert('b'), options('b', true));
    expect(await step).toBe('a');
    // One group, committed; its fsync still waits.
    expect(committed()).toEqual(['a', 'b']);
    expect(syncs).toHaveLength(1);
    expect(told).toEqual(['committed a', 'committed b']);
    let answered = false;
    void answer.then(() => (answered = true));
    await turns();
    expect(answered).toBe(false);
    syncs[0]();
    expect(await answer).toBe('b');
    expect(told).toEqual(['committed a', 'committed b', 'durable a', 'durable b']);
  });

  /**
   * Once the first fsync is done: the chain is answered if that fsync covered its last commit,
   * or a second fsync is asked for (which the test never ends) if it did not.
   */
  const untilAnsweredOrSyncedAgain = async (chain: Promise<unknown>) => {
    let answered = false;
    void chain.then(() => (answered = true));
    await until(() => answered || syncs.length > 1);
  };

  it("commits a job's next step at once, and one fsync covers both", async () => {
    const durable: string[] = [];
    // A job's step answered at COMMIT asks for its next write straight away.
    const chain = runner
      .run(insert('started'), { awaitDurable: false, onDurable: () => durable.push('started') })
      .then(() => runner.run(insert('done'), { onDurable: () => durable.push('done') }));
    await until(() => committed().includes('done'));
    // The step's own fsync waited for the next turn; the second commit's covers both.
    expect(syncs).toHaveLength(1);
    expect(durable).toEqual([]);
    syncs[0]();
    await untilAnsweredOrSyncedAgain(chain);
    expect(syncs).toHaveLength(1);
    expect(await chain).toBe('done');
    expect(durable).toEqual(['started', 'done']);
    await turns();
    expect(syncs).toHaveLength(1);
  });

  it("keeps a job's next step in the same fsync when the step before ran long", async () => {
    // A group that runs past the loop's time slice (a slow machine, a long transaction) must not
    // hand the turn over between it and the step its caller queued at once: that turn would
    // start its fsync first, and the next step would need a second one.
    const slowly = (name: string) => (em: EntityManager) => {
      const until = performance.now() + 25;
      while (performance.now() < until); // longer than the loop's time slice
      return insert(name)(em);
    };
    const chain = runner
      .run(slowly('started'), { awaitDurable: false })
      .then(() => runner.run(insert('done')));
    await until(() => committed().includes('done'));
    expect(syncs).toHaveLength(1);
    syncs[0]();
    await untilAnsweredOrSyncedAgain(chain);
    expect(syncs).toHaveLength(1);
    expect(await chain).toBe('done');
  });

  it('still syncs a step that did not wait, on the next turn, when nothing follows it', async () => {
    const durable: string[] = [];
    await runner.run(insert('started'), {
      awaitDurable: false,
      onDurable: () => durable.push('started'),
    });
    await until(() => syncs.length === 1);
    syncs[0]();
    await until(() => durable.length === 1);
  });

  it('tells no one of durability when the fsync fails, once a caller answered at COMMIT has gone on', async () => {
    const failing: SyncFile = (_fd, done) => done(Object.assign(new Error('EIO'), { code: 'EIO' }));
    const broken = new TransactionRunner(database.dataSource, failing);
    const durable: string[] = [];
    const onDurable = () => durable.push('x');
    expect(await broken.run(insert('step'), { awaitDurable: false, onDurable })).toBe('step');
    await expect(broken.run(insert('answer'), { onDurable })).rejects.toThrow(
      /could not be made durable/,
    );
    expect(durable).toEqual([]);
    await broken.beforeApplicationShutdown();
  });
});
