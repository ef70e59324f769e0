import type { DataSource } from 'typeorm';
import { until } from './load';

/**
 * PostgreSQL: resolves once exactly one statement of this database whose text starts with
 * `prefix` waits on a lock (another session's row lock, held open by the test), as
 * `pg_stat_activity` shows it. The prefix is a `LIKE` pattern: `_` stands for any character.
 */
export async function untilWaitingOnLock(
  dataSource: DataSource,
  prefix: string,
  what: string,
): Promise<void> {
  await until(what, async () => {
    const [{ n }] = (await dataSource.query(
      `SELECT count(*)::int AS n FROM pg_stat_activity
       WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE $1`,
      [`${prefix}%`],
    )) as { n: number }[];
    return n === 1;
  });
}
