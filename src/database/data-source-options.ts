import Database from 'better-sqlite3';
import { mkdirSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import type { DataSourceOptions } from 'typeorm';
import type { AppConfig } from '../config/app-config';
import { MIGRATIONS } from './migration-list';

/**
 * Planner settings of every PostgreSQL session Provisor opens. The operator's `PGOPTIONS` come
 * after them, and win where they set the same thing; an `options` parameter in `DATABASE_URL`
 * replaces both. `random_page_cost` is PostgreSQL's cost of reading one page out of order,
 * 4 by default, a figure for spinning disks; 1.1 is the usual one for SSDs, and for a working
 * set that stays in memory, as the rows of the instances being changed do. At 4 the planner
 * took a hash join over a sequential scan of `instances` for the rows a grouped write changes
 * (`EntityStatements.lockInto`, `unnestUpdateInto`) whenever the table was small or a prepared
 * statement's generic plan expected ten of them: a read of every row of the table, twice, in the
 * one statement that every write waits for. At 1.1 each row is found through the primary key.
 */
export const POSTGRES_SESSION_OPTIONS = '-c random_page_cost=1.1';

/**
 * One place that turns `DATABASE_URL` into TypeORM options, for the app and for the TypeORM CLI.
 * Schema changes are migrations run at start on both databases; `synchronize` stays off.
 */
export function dataSourceOptions(
  config: Pick<AppConfig, 'databaseUrl' | 'databaseKind' | 'databasePoolSize'>,
  environment: NodeJS.ProcessEnv = process.env,
): DataSourceOptions {
  const common = {
    migrations: MIGRATIONS,
    migrationsRun: true,
    synchronize: false,
    logging: ['error'] as ('error' | 'warn')[],
  };
  if (config.databaseKind === 'postgres') {
    return {
      ...common,
      type: 'postgres',
      url: config.databaseUrl,
      poolSize: config.databasePoolSize,
      // node-postgres reads PGOPTIONS only when no `options` is given, so it is passed on here.
      extra: {
        options: [POSTGRES_SESSION_OPTIONS, environment.PGOPTIONS].filter(Boolean).join(' '),
      },
    };
  }
  const path = config.databaseUrl.slice('sqlite:'.length);
  const database = path === ':memory:' ? ':memory:' : resolve(path);
  if (database !== ':memory:') mkdirSync(dirname(database), { recursive: true });
  return {
    ...common,
    type: 'better-sqlite3',
    // The same module `WalCheckpointer`'s thread loads: one SQLite library in the process.
    driver: Database,
    database,
    prepareDatabase: (db: { pragma(sql: string): unknown }) => {
      // WAL lets readers run beside the single writer. A committed transition must survive a
      // power cut, not only a process crash: the log is fsynced after every commit, as
      // `synchronous = FULL` would, but by TransactionRunner off the event loop (see WalSync),
      // and nobody hears of a commit before that. NORMAL is FULL without that one fsync.
      db.pragma('journal_mode = WAL');
      db.pragma('synchronous = NORMAL');
      db.pragma('busy_timeout = 5000');
      db.pragma('foreign_keys = ON');
      // A transition's writes run in a savepoint of the group's transaction (TransactionRunner),
      // and SQLite keeps a savepoint's undo copy of each page it changes in a statement journal.
      // On disk that is a temp file opened, written and deleted per transaction; in memory it is
      // a few pages. It is never part of what a commit makes durable.
      db.pragma('temp_store = MEMORY');
    },
  };
}
