import { randomBytes, randomUUID } from 'node:crypto';
import { DataSource, QueryFailedError } from 'typeorm';
import { AppConfig } from '../src/config/app-config';
import { validateEnvironment } from '../src/config/environment';
import { dataSourceOptions } from '../src/database/data-source-options';
import { EntityStatements } from '../src/database/entity-statements';
import { InstanceEvent } from '../src/state-machine/instance-event.entity';
import { InstanceTransition } from '../src/state-machine/instance-transition.entity';
import { Instance } from '../src/state-machine/instance.entity';
import { InstanceState, Action } from '../src/state-machine/instance.machine';
import { Operation, OperationStatus } from '../src/state-machine/operation.entity';
import { createDatabase } from './support/test-app';

/**
 * The hot path's plain statements must read and write exactly what TypeORM's repositories do:
 * the same rows, times, nulls and JSON, on the migrated schema. SQLite here, PostgreSQL when
 * TEST_DATABASE_URL is set.
 */
const onPostgres = process.env.TEST_DATABASE_URL?.startsWith('postgres') ? it : it.skip;

describe('EntityStatements against TypeORM', () => {
  let database: { url: string; drop(): Promise<void> };
  let dataSource: DataSource;
  let instances: EntityStatements<Instance>;
  let operations: EntityStatements<Operation>;

  beforeAll(async () => {
    database = await createDatabase(randomBytes(5).toString('hex'));
    dataSource = new DataSource({
      ...dataSourceOptions(new AppConfig(validateEnvironment({ DATABASE_URL: database.url }))),
      logging: false, // the failures below are on purpose
      entities: [Instance, Operation, InstanceTransition, InstanceEvent],
    });
    await dataSource.initialize();
    instances = new EntityStatements(dataSource, Instance);
    operations = new EntityStatements(dataSource, Operation);
  });
  afterAll(async () => {
    await dataSource.destroy();
    await database.drop();
  });

  /** Runs two statements as CTEs of one; answers `$1` and how many rows each touched. */
  async function runBoth(missed: string, hit: string, parameters: unknown[]) {
    const [counts] = (await dataSource.query(
      `WITH missed AS (${missed} RETURNING 1), hit AS (${hit} RETURNING 1)
       SELECT $1::text AS first, (SELECT count(*) FROM missed)::int AS missed,
         (SELECT count(*) FROM hit)::int AS hit`,
      parameters,
    )) as { first: string; missed: number; hit: number }[];
    return counts;
  }

  const instance = (overrides: Partial<Instance> = {}): Instance =>
    Object.assign(new Instance(), {
      id: randomUUID(),
      name: 'vm',
      description: 'a "quoted" description',
      flavor: 'small',
      image: 'debian-12',
      state: InstanceState.Online,
      errorMessage: '',
      errorTraceback: '',
      backendId: 'sim-1',
      ownerId: randomUUID(),
      operationId: null,
      createdAt: new Date('2026-01-02T03:04:05.678Z'),
      updatedAt: new Date('2026-06-07T08:09:10.011Z'),
      ...overrides,
    });

  const operation = (overrides: Partial<Operation> = {}): Operation =>
    Object.assign(new Operation(), {
      id: randomUUID(),
      instanceId: randomUUID(),
      action: Action.Resize,
      params: { flavor: 'large' },
      status: OperationStatus.Pending,
      errorMessage: '',
      requestId: null,
      dispatchAfter: new Date('2026-03-04T05:06:07.089Z'),
      createdAt: new Date('2026-03-04T05:06:07.089Z'),
      updatedAt: new Date('2026-03-04T05:06:07.089Z'),
      ...overrides,
    });

  it('writes rows that TypeORM reads back unchanged', async () => {
    const written = instance();
    await instances.insert(dataSource.manager, [written]);
    const read = await dataSource.getRepository(Instance).findOneByOrFail({ id: written.id });
    expect(read).toEqual(written);
  });

  it('inserts a row unless its unique key is taken, and says which', async () => {
    const first = instance();
    expect(await instances.insertIfAbsent(dataSource.manager, first, ['id'])).toBe(true);
    const again = { ...first, name: 'another' };
    expect(await instances.insertIfAbsent(dataSource.manager, again, ['id'])).toBe(false);
    const read = await dataSource.getRepository(Instance).findOneByOrFail({ id: first.id });
    expect(read).toEqual(first);
  });

  it('reads rows that TypeORM wrote unchanged, and null for none', async () => {
    const written = instance({ operationId: randomUUID(), errorMessage: 'boom' });
    await dataSource.getRepository(Instance).insert(written);
    expect(await instances.findOne(dataSource.manager, { id: written.id })).toEqual(written);
    expect(
      await instances.findOne(dataSource.manager, { id: written.id, ownerId: randomUUID() }),
    ).toBeNull();
  });

  it('reads a row and the row it names in one statement, and null for a name that finds none', async () => {
    const vm = instance({ operationId: randomUUID(), errorMessage: 'boom' });
    await dataSource.getRepository(Instance).insert(vm);
    const named = operation({ instanceId: vm.id });
    const orphan = operation();
    await dataSource.getRepository(Operation).insert([named, orphan]);
    const on = { own: 'instanceId', other: 'id' } as const;

    expect(
      await operations.findOneWith(dataSource.manager, { id: named.id }, instances, on),
    ).toEqual([named, vm]);
    expect(
      await operations.findOneWith(dataSource.manager, { id: orphan.id }, instances, on),
    ).toEqual([orphan, null]);
    expect(
      await operations.findOneWith(dataSource.manager, { id: randomUUID() }, instances, on),
    ).toBeNull();
  });

  it('reads a row with another read beside it, whether or not the row exists', async () => {
    const vm = instance();
    await dataSource.getRepository(Instance).insert(vm);
    await dataSource
      .getRepository(Operation)
      .insert(operation({ instanceId: vm.id, action: Action.Stop }));
    const read = async (id: string, action: Action) => {
      const { row, beside } = await instances.findOneBeside(dataSource.manager, { id }, (p) =>
        operations.existsInto({ instanceId: vm.id, action }, p),
      );
      // true on PostgreSQL, 1 on SQLite.
      return { row, exists: beside === true || beside === 1 };
    };

    expect(await read(vm.id, Action.Stop)).toEqual({ row: vm, exists: true });
    expect(await read(vm.id, Action.Start)).toEqual({ row: vm, exists: false });
    expect(await read(randomUUID(), Action.Stop)).toEqual({ row: null, exists: true });
    expect(await read(randomUUID(), Action.Start)).toEqual({ row: null, exists: false });
  });

  it('reads a page of the event log after a cursor, as TypeORM finds it', async () => {
    const owner = randomUUID();
    const [first, second] = [randomUUID(), randomUUID()];
    const at = new Date('2026-05-06T07:08:09.123Z');
    const log = dataSource.getRepository(InstanceEvent);
    for (const [instanceId, ownerId] of [
      [first, owner],
      [second, owner],
      [first, randomUUID()],
      [second, owner],
      [first, owner],
    ]) {
      await log.insert({
        type: 'instance.updated',
        instanceId,
        ownerId,
        state: 'online',
        errorMessage: '',
        at,
      });
    }
    const events = new EntityStatements(dataSource, InstanceEvent);
    const mine = await log.find({ where: { ownerId: owner }, order: { id: 'ASC' } });
    expect(mine).toHaveLength(4);

    const page = (where: Partial<InstanceEvent>, after: number, limit: number) =>
      events.findAfter(dataSource.manager, where, { key: 'id', value: after }, limit);
    expect(await page({ ownerId: owner }, 0, 2)).toEqual(mine.slice(0, 2));
    expect(await page({ ownerId: owner }, mine[1].id, 10)).toEqual(mine.slice(2));
    expect(await page({ ownerId: owner, instanceId: first }, 0, 10)).toEqual(
      mine.filter((e) => e.instanceId === first),
    );
    expect(await page({ ownerId: owner }, mine[3].id, 10)).toEqual([]);
  });

  it('numbers the rows of one insert as the database did, in the order of the rows', async () => {
    const events = new EntityStatements(dataSource, InstanceEvent);
    const log = dataSource.getRepository(InstanceEvent);
    const instanceId = randomUUID();
    const rows = ['a', 'b', 'c', 'd'].map((state) =>
      Object.assign(new InstanceEvent(), {
        type: 'instance.updated',
        instanceId,
        ownerId: randomUUID(),
        state,
        errorMessage: '',
        at: new Date('2026-05-06T07:08:09.123Z'),
      }),
    );
    await events.insertNumbered(dataSource.manager, rows.slice(0, 1));
    await events.insertNumbered(dataSource.manager, rows.slice(1));
    const stored = await log.find({ where: { instanceId }, order: { id: 'ASC' } });
    expect(stored.map((e) => e.state)).toEqual(['a', 'b', 'c', 'd']);
    expect(rows.map((e) => e.id)).toEqual(stored.map((e) => e.id));
  });

  it('keeps JSON columns, nulls and several rows in one insert', async () => {
    const rows = [1, 2].map((n) =>
      Object.assign(new Operation(), {
        id: randomUUID(),
        instanceId: randomUUID(),
        action: Action.Resize,
        params: { flavor: `large-${n}`, force: n === 2 },
        status: OperationStatus.Pending,
        errorMessage: '',
        requestId: n === 1 ? null : 'req-2',
        dispatchAfter: new Date('2026-03-04T05:06:07.089Z'),
        createdAt: new Date('2026-03-04T05:06:07.089Z'),
        updatedAt: new Date('2026-03-04T05:06:07.089Z'),
      }),
    );
    await operations.insert(dataSource.manager, rows);
    for (const row of rows) {
      expect(await dataSource.getRepository(Operation).findOneByOrFail({ id: row.id })).toEqual(
        row,
      );
      expect(await operations.findOne(dataSource.manager, { id: row.id })).toEqual(row);
    }
  });

  it('updates only rows matching every condition, one-of lists included, and counts them', async () => {
    const vm = instance({ state: InstanceState.Offline });
    await instances.insert(dataSource.manager, [vm]);
    const at = new Date('2026-09-10T11:12:13.141Z');
    const missed = await instances.update(
      dataSource.manager,
      { id: vm.id, state: [InstanceState.Online, InstanceState.Erred] },
      { state: InstanceState.StartingScheduled, updatedAt: at },
    );
    expect(missed).toBe(0);
    const hit = await instances.update(
      dataSource.manager,
      { id: vm.id, state: [InstanceState.Offline] },
      { state: InstanceState.StartingScheduled, updatedAt: at, operationId: null },
    );
    expect(hit).toBe(1);
    expect(await dataSource.getRepository(Instance).findOneByOrFail({ id: vm.id })).toEqual({
      ...vm,
      state: InstanceState.StartingScheduled,
      updatedAt: at,
    });
  });

  it("fails with TypeORM's QueryFailedError, in a transaction or not (a prepared statement)", async () => {
    const vm = instance();
    await instances.insert(dataSource.manager, [vm]);
    for (let i = 0; i < 3; i++) {
      // The same shape again and again (on PostgreSQL a prepared statement): it keeps working.
      expect(await instances.findOne(dataSource.manager, { id: vm.id })).toEqual(vm);
      const duplicate = instances.insert(dataSource.manager, [vm]);
      await expect(duplicate).rejects.toBeInstanceOf(QueryFailedError);
    }
    const inTransaction = dataSource.transaction((em) => instances.insert(em, [vm]));
    await expect(inTransaction).rejects.toBeInstanceOf(QueryFailedError);
  });

  onPostgres('prepares a statement again when a schema change made it stale', async () => {
    const vm = instance();
    await instances.insert(dataSource.manager, [vm]);
    expect(await instances.findOne(dataSource.manager, { id: vm.id })).toEqual(vm);
    // A selected column changes type: the prepared SELECT can no longer run as prepared.
    await dataSource.query('ALTER TABLE instances ALTER COLUMN description TYPE text');
    try {
      for (let i = 0; i < 3; i++) {
        expect(await instances.findOne(dataSource.manager, { id: vm.id })).toEqual(vm);
      }
    } finally {
      await dataSource.query('ALTER TABLE instances ALTER COLUMN description TYPE varchar(500)');
    }
  });

  it('deletes only rows matching every condition, times and nulls included, and counts them', async () => {
    const vm = instance({ state: InstanceState.Offline });
    const other = instance({ state: InstanceState.Offline });
    await instances.insert(dataSource.manager, [vm, other]);
    const stale = new Date(vm.updatedAt.getTime() - 1);
    expect(
      await instances.delete(dataSource.manager, {
        id: vm.id,
        state: [InstanceState.Offline],
        updatedAt: stale,
      }),
    ).toBe(0);
    expect(
      await instances.delete(dataSource.manager, { id: vm.id, operationId: randomUUID() }),
    ).toBe(0);
    const busy = instance({ operationId: randomUUID() });
    await instances.insert(dataSource.manager, [busy]);
    expect(await instances.delete(dataSource.manager, { id: busy.id, operationId: null })).toBe(0);
    expect(
      await instances.delete(dataSource.manager, {
        id: vm.id,
        state: [InstanceState.Online, InstanceState.Offline],
        updatedAt: vm.updatedAt,
        operationId: null,
      }),
    ).toBe(1);
    expect(await instances.findOne(dataSource.manager, { id: vm.id })).toBeNull();
    expect(await instances.findOne(dataSource.manager, { id: other.id })).toEqual(other);
  });

  onPostgres('deletes inside a larger statement, with the same conditions', async () => {
    const vm = instance({ state: InstanceState.Erred });
    await instances.insert(dataSource.manager, [vm]);
    const parameters: unknown[] = ['unrelated'];
    const missed = instances.deleteInto({ id: vm.id, state: [InstanceState.Online] }, parameters);
    const hit = instances.deleteInto(
      { id: vm.id, state: [InstanceState.Erred], operationId: null, updatedAt: vm.updatedAt },
      parameters,
    );
    expect(await runBoth(missed, hit, parameters)).toEqual({
      first: 'unrelated',
      missed: 0,
      hit: 1,
    });
    expect(await instances.findOne(dataSource.manager, { id: vm.id })).toBeNull();
  });

  onPostgres('inserts rows in their order through unnest inside a larger statement', async () => {
    const transitions = new EntityStatements(dataSource, InstanceTransition);
    const instanceId = randomUUID();
    const at = new Date('2026-05-06T07:08:09.010Z');
    const rows = [
      InstanceState.Offline,
      InstanceState.StartingScheduled,
      InstanceState.Starting,
    ].map((toState, i) => ({
      instanceId,
      action: Action.Start,
      fromState: i === 0 ? null : InstanceState.Offline,
      toState,
      errorMessage: `it's step ${i}`,
      at,
    }));
    const parameters: unknown[] = [];
    const insert = transitions.unnestInsert(rows, parameters, { returning: 'id' });
    const ids = (await dataSource.query(
      `WITH stored AS (${insert}) SELECT id FROM stored ORDER BY id`,
      parameters,
    )) as { id: number }[];
    expect(ids).toHaveLength(3);
    const read = await dataSource
      .getRepository(InstanceTransition)
      .find({ where: { instanceId }, order: { id: 'ASC' } });
    expect(read.map(({ id: _id, ...row }) => row)).toEqual(rows);
    expect(read.map((row) => row.id)).toEqual(ids.map((row) => Number(row.id)));
    expect(transitions.unnestInsert([], [])).toBeNull();
  });

  onPostgres('updates inside a larger statement, with the same conditions', async () => {
    const vm = instance({ state: InstanceState.Offline });
    await instances.insert(dataSource.manager, [vm]);
    const at = new Date('2026-10-11T12:13:14.151Z');
    const parameters: unknown[] = ['unrelated'];
    const missed = instances.updateInto(
      { id: vm.id, state: [InstanceState.Online] },
      { state: InstanceState.Erred },
      parameters,
    );
    const hit = instances.updateInto(
      { id: vm.id, state: [InstanceState.Offline, InstanceState.Erred] },
      { state: InstanceState.StartingScheduled, updatedAt: at },
      parameters,
    );
    expect(await runBoth(missed, hit, parameters)).toEqual({
      first: 'unrelated',
      missed: 0,
      hit: 1,
    });
    expect(await instances.findOne(dataSource.manager, { id: vm.id })).toEqual({
      ...vm,
      state: InstanceState.StartingScheduled,
      updatedAt: at,
    });
  });

  onPostgres('locks the row it reads for update until the transaction ends', async () => {
    const vm = instance();
    await instances.insert(dataSource.manager, [vm]);
    const other = dataSource.createQueryRunner();
    await other.connect();
    try {
      await dataSource.transaction(async (em) => {
        await instances.findOne(em, { id: vm.id }, { forUpdate: true });
        await expect(
          other.query('SELECT id FROM instances WHERE id = $1 FOR UPDATE NOWAIT', [vm.id]),
        ).rejects.toThrow(/could not obtain lock/);
      });
      // Free again once that transaction is over.
      expect(
        await other.query('SELECT id FROM instances WHERE id = $1 FOR UPDATE NOWAIT', [vm.id]),
      ).toEqual([{ id: vm.id }]);
    } finally {
      await other.release();
    }
  });

  it('reads for update inside a transaction', async () => {
    const vm = instance();
    await instances.insert(dataSource.manager, [vm]);
    const locked = await dataSource.transaction((em) =>
      instances.findOne(em, { id: vm.id }, { forUpdate: true }),
    );
    expect(locked).toEqual(vm);
  });
});
