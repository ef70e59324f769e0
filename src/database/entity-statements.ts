import { Injectable } from '@nestjs/common';
import { InjectDataSource } from '@nestjs/typeorm';
import type { Database as SqliteDatabase, Statement as SqliteStatement } from 'better-sqlite3';
import type { Pool } from 'pg';
import { DataSource, QueryFailedError } from 'typeorm';
import type { EntityManager, EntityTarget, ObjectLiteral } from 'typeorm';
import type { BetterSqlite3Driver } from 'typeorm/driver/better-sqlite3/BetterSqlite3Driver';
import type { PostgresDriver } from 'typeorm/driver/postgres/PostgresDriver';
import type { ColumnMetadata } from 'typeorm/metadata/ColumnMetadata';
import type { EntityMetadata } from 'typeorm/metadata/EntityMetadata';

/**
 * Conditions on columns, all of which must hold; an array value means "one of", and null means
 * the column is null.
 */
export type Where<T> = { [K in keyof T]?: T[K] | readonly T[K][] };

/**
 * Names of PostgreSQL prepared statements, by SQL: one per statement shape, process-wide. Only
 * shapes belong here (values are parameters, never inlined), so the map stays small.
 */
const preparedNames = new Map<string, string>();
let preparedCount = 0;

/**
 * PostgreSQL refuses a prepared statement whose plan a schema change made stale in a way it
 * cannot replan (a selected column changed type: 0A000), or that a connection no longer holds
 * (26000, e.g. behind a pooler). The statement is prepared again under a new name, once.
 */
const STALE_PREPARED = new Set(['0A000', '26000']);

function preparedName(sql: string, fresh = false): string {
  let name = fresh ? undefined : preparedNames.get(sql);
  if (name === undefined) {
    name = `provisor_${++preparedCount}`;
    preparedNames.set(sql, name);
  }
  return name;
}

/**
 * Statements of the SQLite connection, by SQL; one per statement shape, like `preparedNames`.
 * The shapes are the code's (an insert's row count and an IN list's length among them, both
 * small), so the map stays small without an eviction rule.
 */
const sqliteStatements = new WeakMap<SqliteDatabase, Map<string, SqliteStatement>>();

function sqliteStatement(connection: SqliteDatabase, sql: string): SqliteStatement {
  let statements = sqliteStatements.get(connection);
  if (!statements) sqliteStatements.set(connection, (statements = new Map()));
  let statement = statements.get(sql);
  if (!statement) {
    statement = connection.prepare(sql);
    statements.set(sql, statement);
  }
  return statement;
}

/**
 * Runs a statement of the hot path; answers its rows and how many rows it changed. Errors are
 * TypeORM's `QueryFailedError` on either database.
 *
 * PostgreSQL: inside a transaction, on the transaction's connection through TypeORM; outside
 * one, as a named prepared statement on a pooled connection: each connection parses and plans a
 * shape once (PostgreSQL then reuses a generic plan), where a plain query is parsed and planned
 * on every run.
 *
 * SQLite: on TypeORM's one connection (which every transaction uses too, so a statement inside
 * one is part of it), as a better-sqlite3 statement prepared once per shape, run on the spot.
 * TypeORM's query runner would add an allocation-heavy wrapper (events, result objects, two
 * promise hops) around every statement, and a transition runs several.
 */
export async function execute(
  dataSource: DataSource,
  em: EntityManager,
  sql: string,
  values: unknown[],
): Promise<{ rows: Record<string, unknown>[]; affected: number }> {
  if (dataSource.options.type === 'better-sqlite3') {
    const connection = (dataSource.driver as BetterSqlite3Driver)
      .databaseConnection as SqliteDatabase;
    try {
      const statement = sqliteStatement(connection, sql);
      if (statement.reader) {
        // A statement that answers rows; on SQLite that includes `… RETURNING`, whose rows then
        // say what it changed (`insertNumbered`'s ids).
        return { rows: statement.all(...values) as Record<string, unknown>[], affected: 0 };
      }
      return { rows: [], affected: statement.run(...values).changes };
    } catch (error) {
      throw failed(dataSource, sql, values, error);
    }
  }
  if (em.queryRunner) {
    const result = (await em.queryRunner.query(sql, values, true)) as {
      records?: Record<string, unknown>[];
      affected?: number;
    };
    return { rows: result.records ?? [], affected: result.affected ?? 0 };
  }
  const pool = (dataSource.driver as PostgresDriver).master as Pool;
  const run = (name: string) => pool.query<Record<string, unknown>>({ name, text: sql, values });
  try {
    let result;
    try {
      result = await run(preparedName(sql));
    } catch (error) {
      if (!STALE_PREPARED.has((error as { code?: string }).code ?? '')) throw error;
      result = await run(preparedName(sql, true));
    }
    return { rows: result.rows, affected: result.rowCount ?? 0 };
  } catch (error) {
    throw failed(dataSource, sql, values, error);
  }
}

/** A failed statement, logged as TypeORM's query runners log theirs (`logging: ['error']`). */
function failed(dataSource: DataSource, sql: string, values: unknown[], error: unknown): Error {
  dataSource.logger.logQueryError(error as Error, sql, values);
  return new QueryFailedError(sql, values, error as Error);
}

/** Which rows of a set-wise write may write: those whose tag the CTE `cte` answers. */
export interface Gate {
  tags: readonly number[];
  cte: string;
}

/** One of the changes of a set-wise UPDATE or DELETE, `tag` naming whose it is. */
export interface TaggedChange<T> {
  tag: number;
  where: Where<T>;
  set?: Partial<T>;
}

/** The parts of an UPDATE or DELETE that decide its SQL (see `updateShape`). */
interface Shape {
  setKeys: string[];
  whereKeys: string[];
  /** Per condition: a list of n values (n), one value (0), or null (-1, `IS NULL`). */
  sizes: number[];
  key: string;
}

/**
 * Plain statements on one entity's table for the hot paths (transitions, the simulated cloud,
 * event log reads), where TypeORM's query builders cost more CPU than the statements they build
 * (every transition runs several); a read may take one other table's row or expression with it
 * (`findOneWith`, `findOneBeside`). The SQL comes from the entity's TypeORM metadata (table and
 * column names), values go to and come from the database through TypeORM's driver
 * (`preparePersistentValue` / `prepareHydratedValue`: times as UTC text on SQLite, JSON columns,
 * ...), so the entity classes stay the one schema. The SQL of each statement shape is built
 * once, and prepared once per connection (`execute`). Reads match columns equal to values,
 * never null.
 */
export class EntityStatements<T extends ObjectLiteral> {
  private readonly meta: EntityMetadata;
  private readonly byProperty = new Map<string, ColumnMetadata>();
  private readonly table: string;
  private readonly selectList: string;
  private readonly sqlCache = new Map<string, string>();
  /** The FROM item and conditions of set-wise changes, by shape (`unnestMatch`). */
  private readonly matchCache = new Map<string, { from: string; conditions: string }>();
  private readonly postgres: boolean;
  /** The primary key's properties. */
  private readonly primary: string[];
  /** The columns a set-wise update assigns: all but the key's. */
  private readonly settable: ColumnMetadata[];

  constructor(
    private readonly dataSource: DataSource,
    entity: EntityTarget<T>,
  ) {
    this.meta = dataSource.getMetadata(entity);
    this.postgres = dataSource.options.type === 'postgres';
    this.primary = this.meta.primaryColumns.map((column) => column.propertyName);
    this.settable = this.meta.columns.filter((column) => !column.isPrimary);
    for (const column of this.meta.columns) this.byProperty.set(column.propertyName, column);
    this.table = this.quote(this.meta.tableName);
    this.selectList = this.meta.columns.map((c) => this.quote(c.databaseName)).join(', ');
  }

  /**
   * A row whose columns equal `where` (the one, for a key), or null; `forUpdate` locks it on
   * PostgreSQL.
   */
  async findOne(
    em: EntityManager,
    where: Partial<T>,
    options: { forUpdate?: boolean } = {},
  ): Promise<T | null> {
    const keys = Object.keys(where);
    const lock = options.forUpdate && this.postgres;
    const sql = this.sql(`select:${keys.join(',')}:${lock ? 'lock' : ''}`, () => {
      const conditions = this.equalities(keys);
      return (
        `SELECT ${this.selectList} FROM ${this.table} WHERE ${conditions.join(' AND ')} LIMIT 1` +
        (lock ? ' FOR UPDATE' : '')
      );
    });
    const { rows } = await execute(this.dataSource, em, sql, this.values(where, keys));
    return rows.length > 0 ? this.hydrate(rows[0]) : null;
  }

  /**
   * A page of an append-only log: up to `limit` rows whose columns equal `where` and whose
   * `after.key` column is greater than `after.value`, in that column's order.
   */
  async findAfter(
    em: EntityManager,
    where: Partial<T>,
    after: { key: keyof T & string; value: number },
    limit: number,
  ): Promise<T[]> {
    const keys = Object.keys(where);
    const sql = this.sql(`after:${keys.join(',')}:${after.key}`, () => {
      const conditions = this.equalities(keys);
      const order = this.column(after.key);
      conditions.push(`${order} > ${this.placeholder(keys.length)}`);
      return (
        `SELECT ${this.selectList} FROM ${this.table} WHERE ${conditions.join(' AND ')} ` +
        `ORDER BY ${order} LIMIT ${this.placeholder(keys.length + 1)}`
      );
    });
    const values = [...this.values(where, keys), after.value, limit];
    const { rows } = await execute(this.dataSource, em, sql, values);
    return rows.map((row) => this.hydrate(row));
  }

  /**
   * `findOne` with another expression's value beside it, answered whether or not a row matches:
   * two reads in one statement. `beside` appends its values to `parameters` and answers its SQL
   * (another table's `existsInto`, say). Locks nothing.
   */
  async findOneBeside(
    em: EntityManager,
    where: Partial<T>,
    beside: (parameters: unknown[]) => string,
  ): Promise<{ row: T | null; beside: unknown }> {
    const parameters: unknown[] = [];
    const expression = beside(parameters);
    const keys = Object.keys(where);
    const offset = parameters.length;
    parameters.push(...this.values(where, keys));
    const sql = this.sql(`beside:${expression}:${offset}:${keys.join(',')}`, () => {
      const conditions = this.equalities(keys, offset, 'b');
      return (
        `SELECT ${expression} AS "beside", ${this.aliasedList('b')} FROM (SELECT 1 AS one) one ` +
        `LEFT JOIN ${this.table} b ON ${conditions.join(' AND ')} LIMIT 1`
      );
    });
    const [found] = (await execute(this.dataSource, em, sql, parameters)).rows;
    const row = this.hydrate(found, 'b');
    return { row: this.isMissing(row) ? null : row, beside: found.beside };
  }

  /**
   * PostgreSQL or SQLite: whether a row whose columns equal `where` exists, as an SQL expression
   * whose values are appended to `parameters`, for a larger statement (see `findOneBeside`).
   */
  existsInto(where: Partial<T>, parameters: unknown[]): string {
    const keys = Object.keys(where);
    const offset = parameters.length;
    parameters.push(...this.values(where, keys));
    return this.sql(`exists:${keys.join(',')}:${offset}`, () => {
      const conditions = this.equalities(keys, offset);
      return `EXISTS (SELECT 1 FROM ${this.table} WHERE ${conditions.join(' AND ')})`;
    });
  }

  /**
   * Two reads in one statement: the row whose columns equal `where`, and the row of `other`
   * whose `on.other` column equals its `on.own` column (null when there is none). Locks nothing.
   */
  async findOneWith<U extends ObjectLiteral>(
    em: EntityManager,
    where: Partial<T>,
    other: EntityStatements<U>,
    on: { own: keyof T & string; other: keyof U & string },
  ): Promise<[T, U | null] | null> {
    const keys = Object.keys(where);
    const sql = this.sql(`with:${other.table}:${on.own}:${on.other}:${keys.join(',')}`, () => {
      const conditions = this.equalities(keys, 0, 'a');
      return (
        `SELECT ${this.aliasedList('a')}, ${other.aliasedList('b')} FROM ${this.table} a ` +
        `LEFT JOIN ${other.table} b ON b.${other.column(on.other)} = a.${this.column(on.own)} ` +
        `WHERE ${conditions.join(' AND ')} LIMIT 1`
      );
    });
    const { rows } = await execute(this.dataSource, em, sql, this.values(where, keys));
    if (rows.length === 0) return null;
    const found = other.hydrate(rows[0], 'b');
    return [this.hydrate(rows[0], 'a'), other.isMissing(found) ? null : found];
  }

  /** Inserts the rows in one statement; columns the first row does not set keep their defaults. */
  async insert(em: EntityManager, rows: readonly Partial<T>[]): Promise<void> {
    await this.insertRows(em, rows, '');
  }

  /**
   * `insert`, for a table whose key `id` the database numbers: sets each row's `id`. One
   * statement takes ids in the order of its rows, so the ids it answers (in no set order), sorted,
   * are the rows' in turn.
   */
  async insertNumbered(em: EntityManager, rows: (Partial<T> & { id?: number })[]): Promise<void> {
    const returned = await this.insertRows(em, rows, ` RETURNING ${this.column('id')}`);
    const ids = returned.map((row) => Number(Object.values(row)[0])).sort((a, b) => a - b);
    rows.forEach((row, i) => (row.id = ids[i]));
  }

  /** One INSERT of `rows`, with `tail` after its values; answers the rows it returns. */
  private async insertRows(
    em: EntityManager,
    rows: readonly Partial<T>[],
    tail: string,
  ): Promise<Record<string, unknown>[]> {
    if (rows.length === 0) return [];
    const keys = this.setKeys(rows[0]);
    const sql = this.sql(
      `insert:${keys.join(',')}:${rows.length}:${tail}`,
      () => `${this.insertInto(keys, rows.length)}${tail}`,
    );
    const values = rows.flatMap((row) => this.values(row, keys));
    return (await execute(this.dataSource, em, sql, values)).rows;
  }

  /**
   * Inserts the row unless one with the same `unique` columns (covered by a unique index) is
   * there already; answers whether it did.
   */
  async insertIfAbsent(
    em: EntityManager,
    row: Partial<T>,
    unique: readonly (keyof T & string)[],
  ): Promise<boolean> {
    const keys = this.setKeys(row);
    const sql = this.sql(`insert-absent:${keys.join(',')}:${unique.join(',')}`, () => {
      const conflict = unique.map((key) => this.column(key)).join(', ');
      return `${this.insertInto(keys, 1)} ON CONFLICT (${conflict}) DO NOTHING`;
    });
    return (await execute(this.dataSource, em, sql, this.values(row, keys))).affected === 1;
  }

  /**
   * `insertIfAbsent`, unless `unless` holds: an SQL expression (another table's `existsInto`,
   * say) whose values it appends to `parameters`. One statement: the check and the insert see
   * the same moment.
   */
  async insertUnless(
    em: EntityManager,
    row: Partial<T>,
    unique: readonly (keyof T & string)[],
    unless: (parameters: unknown[]) => string,
  ): Promise<boolean> {
    const keys = this.setKeys(row);
    const parameters = this.values(row, keys);
    const expression = unless(parameters);
    const sql = this.sql(
      `insert-unless:${keys.join(',')}:${unique.join(',')}:${expression}`,
      () => {
        const columns = keys.map((key) => this.column(key)).join(', ');
        const values = keys.map((_, i) => this.placeholder(i)).join(', ');
        const conflict = unique.map((key) => this.column(key)).join(', ');
        // A WHERE of its own, so that SQLite cannot read ON CONFLICT as a join's ON.
        return (
          `INSERT INTO ${this.table} (${columns}) SELECT ${values} WHERE NOT ${expression} ` +
          `ON CONFLICT (${conflict}) DO NOTHING`
        );
      },
    );
    return (await this.affected(em, sql, parameters)) === 1;
  }

  /**
   * Sets `set` on the rows matching `where`, where an array value means "one of"; answers how
   * many rows changed.
   */
  async update(em: EntityManager, where: Where<T>, set: Partial<T>): Promise<number> {
    const shape = this.updateShape(where, set);
    return this.affected(em, this.updateSql(shape, 0), this.updateValues(shape, where, set));
  }

  /**
   * Sets `set` on the row `key` names if its columns equal `guards` and `unless` (as
   * `insertUnless` takes it) does not hold. When it changes nothing, it answers the row (null if
   * there is none) with `unless`'s value beside it, as `findOneBeside` would: on SQLite, which has
   * no writes in a WITH, from a second statement; on PostgreSQL from the same one, whose read
   * sees the row as the statement began. That is the latest row stored then, as a read of its
   * own would be, unless the UPDATE waited for another transaction's change of the row: the row
   * read then is the one `guards` named, older than the one stored, and a change conditional on
   * it misses in turn.
   */
  async updateUnlessElseRead(
    em: EntityManager,
    key: Partial<T>,
    guards: Where<T>,
    set: Partial<T>,
    unless: (parameters: unknown[]) => string,
  ): Promise<{ changed: true } | { changed: false; row: T | null; beside: unknown }> {
    const where = { ...key, ...guards } as Where<T>;
    const shape = this.updateShape(where, set);
    const parameters = this.updateValues(shape, where, set);
    const expression = unless(parameters);
    if (!this.postgres) {
      const sql = this.sql(`update-unless:${shape.key}:${expression}`, () => {
        return `${this.updateSql(shape, 0)} AND NOT ${expression}`;
      });
      if ((await this.affected(em, sql, parameters)) === 1) return { changed: true };
      return { changed: false, ...(await this.findOneBeside(em, key, unless)) };
    }
    const keys = Object.keys(key);
    const offset = parameters.length;
    parameters.push(...this.values(key, keys));
    const sql = this.sql(`update-else-read:${shape.key}:${expression}:${keys.join(',')}`, () => {
      const conditions = this.equalities(keys, offset, 'b');
      return (
        `WITH changed AS (${this.updateSql(shape, 0)} AND NOT ${expression} RETURNING 1) ` +
        `SELECT (SELECT count(*) FROM changed)::int AS "changed", ${expression} AS "beside", ` +
        `${this.aliasedList('b')} FROM (SELECT 1 AS one) one ` +
        `LEFT JOIN ${this.table} b ON ${conditions.join(' AND ')} LIMIT 1`
      );
    });
    const [found] = (await execute(this.dataSource, em, sql, parameters)).rows;
    if (found.changed === 1) return { changed: true };
    const row = this.hydrate(found, 'b');
    return { changed: false, row: this.isMissing(row) ? null : row, beside: found.beside };
  }

  /** Deletes the rows matching `where` (an array value means "one of"); answers how many. */
  async delete(em: EntityManager, where: Where<T>): Promise<number> {
    const shape = this.updateShape(where, {});
    return this.affected(em, this.deleteSql(shape, 0), this.updateValues(shape, where, {}));
  }

  /** Runs a statement and answers how many rows it changed. */
  private async affected(em: EntityManager, sql: string, values: unknown[]): Promise<number> {
    return (await execute(this.dataSource, em, sql, values)).affected;
  }

  /**
   * PostgreSQL: the UPDATE of `update`, its values appended to `parameters`, for use inside a
   * larger statement (a CTE).
   */
  updateInto(where: Where<T>, set: Partial<T>, parameters: unknown[]): string {
    const shape = this.updateShape(where, set);
    const sql = this.updateSql(shape, parameters.length);
    parameters.push(...this.updateValues(shape, where, set));
    return sql;
  }

  /** PostgreSQL: the DELETE of `delete`, its values appended to `parameters`, for a CTE. */
  deleteInto(where: Where<T>, parameters: unknown[]): string {
    const shape = this.updateShape(where, {});
    const sql = this.deleteSql(shape, parameters.length);
    parameters.push(...this.updateValues(shape, where, {}));
    return sql;
  }

  private updateShape(where: Where<T>, set: Partial<T>): Shape {
    const setKeys = Object.keys(set).filter((key) => set[key] !== undefined);
    const whereKeys = Object.keys(where);
    const sizes = whereKeys.map((key) => {
      const value = where[key] as unknown;
      if (value === null) return -1;
      return Array.isArray(value) ? value.length : 0;
    });
    return {
      setKeys,
      whereKeys,
      sizes,
      key: `${setKeys.join(',')}:${whereKeys.join(',')}:${sizes}`,
    };
  }

  /** The UPDATE of a shape, its placeholders numbered from `offset` (PostgreSQL). */
  private updateSql(shape: Shape, offset: number): string {
    return this.sql(`update:${shape.key}:${offset}`, () => {
      const assignments = shape.setKeys.map(
        (key, i) => `${this.column(key)} = ${this.placeholder(offset + i)}`,
      );
      const conditions = this.conditions(shape, offset + shape.setKeys.length);
      return `UPDATE ${this.table} SET ${assignments.join(', ')} WHERE ${conditions}`;
    });
  }

  /** The DELETE of a shape (no SET keys), its placeholders numbered from `offset`. */
  private deleteSql(shape: Shape, offset: number): string {
    return this.sql(`delete:${shape.key}:${offset}`, () => {
      return `DELETE FROM ${this.table} WHERE ${this.conditions(shape, offset)}`;
    });
  }

  /** The properties a row sets; the others keep their columns' defaults. */
  private setKeys(row: Partial<T>): string[] {
    return Object.keys(row).filter((key) => row[key] !== undefined);
  }

  /** `INSERT INTO table (columns) VALUES (...), ...` for `count` rows of `keys`. */
  private insertInto(keys: readonly string[], count: number): string {
    const columns = keys.map((key) => this.column(key)).join(', ');
    const tuples = Array.from(
      { length: count },
      (_, r) => `(${keys.map((_, k) => this.placeholder(r * keys.length + k)).join(', ')})`,
    );
    return `INSERT INTO ${this.table} (${columns}) VALUES ${tuples.join(', ')}`;
  }

  /**
   * `column = value` for each key, placeholders numbered from `offset`, columns of `alias`; the
   * primary key's, and the others as guards when it is among them (see `guarded`).
   */
  private equalities(keys: readonly string[], offset = 0, alias?: string): string[] {
    const prefix = alias ? `${alias}.` : '';
    const conditions = keys.map(
      (key, i) => `${prefix}${this.column(key)} = ${this.placeholder(offset + i)}`,
    );
    return this.guarded(
      keys,
      conditions,
      this.primary.every((key) => keys.includes(key)),
    );
  }

  /** A shape's WHERE conditions (an array value means "one of"), placeholders from `offset`. */
  private conditions(shape: Shape, offset: number): string {
    let n = offset;
    const conditions = shape.whereKeys.map((key, i) => {
      if (shape.sizes[i] === -1) return `${this.column(key)} IS NULL`;
      if (shape.sizes[i] === 0) return `${this.column(key)} = ${this.placeholder(n++)}`;
      const list = Array.from({ length: shape.sizes[i] }, () => this.placeholder(n++));
      return `${this.column(key)} IN (${list.join(', ')})`;
    });
    const keyed = this.primary.every((key) => shape.sizes[shape.whereKeys.indexOf(key)] === 0);
    return this.guarded(shape.whereKeys, conditions, keyed).join(' AND ');
  }

  /**
   * Conditions on `keys`, as they are unless they name one row by its primary key (`keyed`).
   * Then the others are guards on that row (its state and version, say), each written as
   * `(condition) IS TRUE`: the same test, but one that no index serves, so the row is always
   * found through its key. Left as plain comparisons, they let PostgreSQL's planner weigh an
   * index that leads with a guarded column against the key, and with the generic plan of a
   * prepared statement it took such indexes (`instances (state, created_at, id)` for a change
   * of state, `(owner_id, created_at, id)` for a user's read of an instance): each lookup then
   * walked the entries of every instance in that state, or of that owner.
   */
  private guarded(keys: readonly string[], conditions: string[], keyed: boolean): string[] {
    if (!keyed) return conditions;
    return conditions.map((condition, i) =>
      this.primary.includes(keys[i]) ? condition : `(${condition}) IS TRUE`,
    );
  }

  private updateValues(shape: Shape, where: Where<T>, set: Partial<T>): unknown[] {
    return [
      ...this.values(set, shape.setKeys),
      ...shape.whereKeys.flatMap((key) => {
        const value = where[key] as unknown;
        const column = this.byProperty.get(key)!;
        if (value === null) return [];
        return Array.isArray(value)
          ? value.map((v: unknown) => this.persistent(v, column))
          : [this.persistent(value, column)];
      }),
    ];
  }

  /**
   * PostgreSQL: an `INSERT ... SELECT FROM unnest(...)` of the rows, one array parameter per
   * column appended to `parameters`, for use inside a larger statement (a CTE). The rows are
   * inserted in their order (ids from a sequence follow it). `join` names another FROM item the
   * insert must wait for, e.g. a CTE that takes a lock. Null when there are no rows.
   */
  unnestInsert(
    rows: readonly Partial<T>[],
    parameters: unknown[],
    options: { join?: string; returning?: string; gate?: Gate } = {},
  ): string | null {
    if (rows.length === 0) return null;
    const keys = Object.keys(rows[0]).filter((key) => rows[0][key] !== undefined);
    const { join = '', returning = '', gate } = options;
    if (gate) {
      if (gate.tags.length !== rows.length) throw new Error('A gated insert needs a tag per row');
      // Every row must set the same columns: one left unset would get null, not its default.
      const same = (row: Partial<T>) =>
        Object.keys(row)
          .filter((key) => row[key] !== undefined)
          .join() === keys.join();
      if (!rows.every(same)) throw new Error(`${this.meta.name} rows set different columns`);
    }
    const offset = parameters.length;
    for (const key of keys) {
      const column = this.byProperty.get(key)!;
      parameters.push(rows.map((row) => this.persistent(row[key], column)));
    }
    if (gate) parameters.push(gate.tags);
    const gated = gate ? gate.cte : '';
    return this.sql(`unnest:${keys.join(',')}:${offset}:${join}:${returning}:${gated}`, () => {
      const arrays = keys.map(
        (key, i) => `$${offset + i + 1}::${this.arrayType(this.byProperty.get(key)!)}[]`,
      );
      const aliases = keys.map((_, i) => `c${i}`);
      if (gate) {
        arrays.push(`$${offset + keys.length + 1}::int[]`);
        aliases.push('tag');
      }
      return (
        `INSERT INTO ${this.table} (${keys.map((key) => this.column(key)).join(', ')}) ` +
        `SELECT ${keys.map((_, i) => `v.c${i}`).join(', ')} ` +
        `FROM ${join ? `${join}, ` : ''}unnest(${arrays.join(', ')}) ` +
        `WITH ORDINALITY AS v(${aliases.join(', ')}, n)` +
        (gate ? ` WHERE v.tag IN (SELECT tag FROM ${gate.cte})` : '') +
        ` ORDER BY v.n` +
        (returning ? ` RETURNING ${returning}` : '')
      );
    });
  }

  /**
   * PostgreSQL: locks the rows whose primary key is one of `rows`' keys (`FOR UPDATE`), one after
   * another in the key's order, for a CTE; answers the `tag` of each row found. Statements that
   * take their rows so take them in one order, and never wait on each other's rows in opposite
   * orders. With `gate` (a CTE answering `tag`s) only the rows of those tags are locked.
   */
  lockInto(
    rows: readonly { tag: number; key: unknown }[],
    parameters: unknown[],
    { gate }: { gate?: string } = {},
  ): string {
    if (this.primary.length !== 1) throw new Error(`${this.meta.name} has a composite key`);
    const key = this.byProperty.get(this.primary[0])!;
    const offset = parameters.length;
    parameters.push(
      rows.map((row) => this.persistent(row.key, key)),
      rows.map((row) => row.tag),
    );
    return this.sql(`lock:${offset}:${gate ?? ''}`, () => {
      const column = this.quote(key.databaseName);
      return (
        `SELECT v.tag FROM ${this.table} t JOIN unnest($${offset + 1}::${this.arrayType(key)}[], ` +
        `$${offset + 2}::int[]) AS v(key, tag) ON t.${column} = v.key` +
        (gate ? ` WHERE v.tag IN (SELECT tag FROM ${gate})` : '') +
        ` ORDER BY t.${column} FOR UPDATE OF t`
      );
    });
  }

  /**
   * PostgreSQL: one UPDATE of many rows, each change with its own row (`where`) and values
   * (`set`), for a CTE; values are appended to `parameters` as one array per column, so the
   * statement's shape does not depend on how many changes it makes. It answers the `tag` of each
   * change that hit a row (`RETURNING tag`). Every column but the key's is assigned, to itself
   * where a change does not set it, so that changes setting different columns share one shape.
   * `where` is as `unnestDeleteInto` takes it. With `gate`, a change whose tag is not in that
   * CTE changes nothing.
   */
  unnestUpdateInto(
    changes: readonly TaggedChange<T>[],
    parameters: unknown[],
    options: { gate?: string } = {},
  ): string {
    const settable = this.settable;
    if (settable.length > 30) throw new Error(`${this.meta.name} has too many columns to set`);
    const sets = changes.map(({ set }) => (set ?? {}) as Record<string, unknown>);
    for (const set of sets) {
      // A key of no column, or the primary key's, is one no set-wise update can assign.
      const unknown = Object.keys(set).find(
        (key) => set[key] !== undefined && (this.byProperty.get(key)?.isPrimary ?? true),
      );
      if (unknown) throw new Error(`${this.meta.name} has no column to set for '${unknown}'`);
    }
    const masks = sets.map((set) =>
      settable.reduce(
        (mask, c, i) => (set[c.propertyName] === undefined ? mask : mask | (1 << i)),
        0,
      ),
    );
    const values = settable.map((column) =>
      sets.map((set) => {
        const value = set[column.propertyName];
        return value === undefined ? null : this.persistent(value, column);
      }),
    );
    const match = this.unnestMatch(
      changes,
      parameters,
      options.gate,
      [masks, ...values],
      ['int', ...settable.map((column) => this.arrayType(column))],
    );
    return this.sql(`unnest-update:${match.key}`, () => {
      const assignments = settable.map((column, i) => {
        const name = this.quote(column.databaseName);
        return `${name} = CASE WHEN v.x0 & ${1 << i} <> 0 THEN v.x${i + 1} ELSE t.${name} END`;
      });
      return (
        `UPDATE ${this.table} t SET ${assignments.join(', ')} FROM ${match.from} ` +
        `WHERE ${match.conditions} RETURNING v.tag`
      );
    });
  }

  /**
   * PostgreSQL: one DELETE of the rows of many changes, for a CTE, answering the `tag` of each
   * change that hit a row. Every `where` names the same properties; a value that is a list of
   * one stands for that value, and a longer list must be the same in every change (then
   * `column IN (list)`). Where `where` names the whole primary key, the other conditions match
   * null to null (`IS NOT DISTINCT FROM`) and, as in `guarded`, no index serves them; otherwise
   * every condition is a plain `=`. With `gate`, a change whose tag is not in that CTE deletes
   * nothing.
   */
  unnestDeleteInto(
    changes: readonly TaggedChange<T>[],
    parameters: unknown[],
    options: { gate?: string } = {},
  ): string {
    const match = this.unnestMatch(changes, parameters, options.gate);
    return this.sql(`unnest-delete:${match.key}`, () => {
      return `DELETE FROM ${this.table} t USING ${match.from} WHERE ${match.conditions} RETURNING v.tag`;
    });
  }

  /**
   * The rows of tagged changes as `unnest(...) AS v(tag, w0, ..., x0, ...)`, with the columns
   * `extra` of the types `extraTypes` as `x0, ...`, and the conditions that match the table (as
   * `t`) against them; the values are appended to `parameters`.
   */
  private unnestMatch(
    changes: readonly TaggedChange<T>[],
    parameters: unknown[],
    gate: string | undefined,
    extra: readonly unknown[][] = [],
    extraTypes: readonly string[] = [],
  ): { from: string; conditions: string; key: string } {
    const keys = Object.keys(changes[0].where);
    const isList = (value: unknown): value is readonly unknown[] =>
      Array.isArray(value) && value.length !== 1;
    const lists = keys.map((key) => {
      const value = changes[0].where[key] as unknown;
      return isList(value) ? value : null;
    });
    for (const { where } of changes) {
      const same =
        Object.keys(where).join() === keys.join() &&
        keys.every((key, i) => {
          const value = where[key] as unknown;
          const list = lists[i];
          if (!list) return !isList(value);
          return (
            isList(value) && value.length === list.length && list.every((v, j) => v === value[j])
          );
        });
      if (!same) throw new Error(`${this.meta.name} changes differ in their conditions`);
    }
    const keyed = this.primary.every((k) => keys.includes(k) && !lists[keys.indexOf(k)]);
    if (lists.some((list) => list?.length === 0)) throw new Error('An empty list matches no row');
    if (!keyed && changes.some(({ where }) => keys.some((key) => where[key] === null))) {
      // `=` would never match it; only changes of one row each may match nulls.
      throw new Error(`${this.meta.name} changes match null without naming their rows`);
    }
    const offset = parameters.length;
    parameters.push(changes.map((change) => change.tag));
    keys.forEach((key, i) => {
      const column = this.byProperty.get(key)!;
      const list = lists[i];
      if (list) {
        parameters.push(...list.map((value) => this.persistent(value, column)));
        return;
      }
      parameters.push(
        changes.map(({ where }) => {
          const value = where[key] as unknown;
          return this.persistent(Array.isArray(value) ? (value[0] as unknown) : value, column);
        }),
      );
    });
    parameters.push(...extra);
    const key =
      `${keys.map((k, i) => (lists[i] ? `${k}[${lists[i].length}]` : k)).join(',')}:` +
      `${extraTypes.join(',')}:${offset}:${gate ?? ''}`;
    let built = this.matchCache.get(key);
    if (!built) {
      let n = offset + 1;
      const arrays = [`$${n++}::int[]`];
      const aliases = ['tag'];
      const conditions = keys.map((k, i) => {
        const column = this.column(k);
        const list = lists[i];
        if (list) return `t.${column} IN (${list.map(() => `$${n++}`).join(', ')})`;
        arrays.push(`$${n++}::${this.arrayType(this.byProperty.get(k)!)}[]`);
        aliases.push(`w${i}`);
        if (!keyed || this.primary.includes(k)) return `t.${column} = v.w${i}`;
        return `t.${column} IS NOT DISTINCT FROM v.w${i}`;
      });
      extraTypes.forEach((type, i) => {
        arrays.push(`$${n++}::${type}[]`);
        aliases.push(`x${i}`);
      });
      const guarded = this.guarded(keys, conditions, keyed);
      if (gate) guarded.push(`v.tag IN (SELECT tag FROM ${gate})`);
      built = {
        from: `unnest(${arrays.join(', ')}) AS v(${aliases.join(', ')})`,
        conditions: guarded.join(' AND '),
      };
      this.matchCache.set(key, built);
    }
    return { ...built, key };
  }

  private arrayType(column: ColumnMetadata): string {
    const type = column.type;
    if (type === Date || type === 'timestamptz' || type === 'timestamp with time zone') {
      return 'timestamptz';
    }
    if (type === 'uuid') return 'uuid';
    if (type === Number || type === 'integer' || type === 'int') return 'int';
    if (type === Boolean || type === 'boolean') return 'boolean';
    if (type === 'varchar' || type === 'text' || type === String || type === 'simple-json') {
      return 'text'; // simple-json is stored as text
    }
    // A set-wise statement passes each column as an array of this type: a guess would make it
    // fail (or convert) at run time, so a column of any other type must be added here.
    throw new Error(`${this.meta.name}.${column.propertyName}: no array type for ${String(type)}`);
  }

  /**
   * An entity from a row as the database answers it (column names, database values): the rows of
   * an `UPDATE … RETURNING *` a query builder ran, say.
   */
  fromRow(row: Record<string, unknown>): T {
    return this.hydrate(row);
  }

  /** An entity from a row; with `alias`, from the columns `aliasedList(alias)` selected. */
  private hydrate(row: Record<string, unknown>, alias?: string): T {
    const entity = this.meta.create() as T;
    for (const column of this.meta.columns) {
      const name = alias ? `${alias}_${column.databaseName}` : column.databaseName;
      const value = this.dataSource.driver.prepareHydratedValue(row[name], column);
      column.setEntityValue(entity, value);
    }
    return entity;
  }

  /** The columns of the table as `alias`, each selected as `<alias>_<column>`. */
  private aliasedList(alias: string): string {
    return this.meta.columns
      .map((c) => {
        const name = `${alias}_${c.databaseName}`;
        // PostgreSQL would cut a longer name short, and the column would read as missing.
        if (name.length > 63) throw new Error(`Column alias '${name}' is over 63 characters`);
        return `${alias}.${this.quote(c.databaseName)} AS ${this.quote(name)}`;
      })
      .join(', ');
  }

  /** Whether an entity hydrated from an outer join's side found no row: its key is null. */
  private isMissing(entity: T): boolean {
    return this.meta.primaryColumns.some((c) => c.getEntityValue(entity) == null);
  }

  private values(source: Partial<T>, keys: readonly string[]): unknown[] {
    return keys.map((key) => this.persistent(source[key], this.byProperty.get(key)!));
  }

  private persistent(value: unknown, column: ColumnMetadata): unknown {
    const prepared: unknown = this.dataSource.driver.preparePersistentValue(value, column);
    // better-sqlite3 binds no booleans.
    return typeof prepared === 'boolean' && !this.postgres ? (prepared ? 1 : 0) : prepared;
  }

  private column(property: string): string {
    const column = this.byProperty.get(property);
    if (!column) throw new Error(`${this.meta.name} has no column for '${property}'`);
    return this.quote(column.databaseName);
  }

  private placeholder(index: number): string {
    return this.postgres ? `$${index + 1}` : '?';
  }

  private quote(name: string): string {
    return `"${name}"`;
  }

  private sql(key: string, build: () => string): string {
    let sql = this.sqlCache.get(key);
    if (sql === undefined) {
      sql = build();
      this.sqlCache.set(key, sql);
    }
    return sql;
  }
}

/**
 * Every service's `EntityStatements`, one per entity: the services that read or write one table
 * share its column mapping and its cache of built SQL, rather than each building its own.
 */
@Injectable()
export class Statements {
  private readonly byEntity = new Map<
    EntityTarget<ObjectLiteral>,
    EntityStatements<ObjectLiteral>
  >();

  constructor(@InjectDataSource() private readonly dataSource: DataSource) {}

  of<T extends ObjectLiteral>(entity: EntityTarget<T>): EntityStatements<T> {
    let statements = this.byEntity.get(entity);
    if (!statements) {
      statements = new EntityStatements<ObjectLiteral>(this.dataSource, entity);
      this.byEntity.set(entity, statements);
    }
    return statements as EntityStatements<T>;
  }
}
