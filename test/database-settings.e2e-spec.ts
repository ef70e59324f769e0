import { randomBytes } from 'node:crypto';
import { DataSource } from 'typeorm';
import { AppConfig } from '../src/config/app-config';
import { validateEnvironment } from '../src/config/environment';
import { dataSourceOptions } from '../src/database/data-source-options';
import { createDatabase } from './support/test-app';

/**
 * The SQLite connection's settings are part of Provisor's promise: a transition that answered
 * `202` survives a power cut (WAL; the fsync after every commit that FULL would make runs off
 * the event loop, see durable-answers), and foreign keys hold. Savepoints' undo pages stay in
 * memory: no temp file per transaction.
 */
const onSqlite = process.env.TEST_DATABASE_URL?.startsWith('postgres') ? it.skip : it;

describe('SQLite connection settings', () => {
  onSqlite(
    'is durable at every commit, checks foreign keys and journals savepoints in memory',
    async () => {
      const database = await createDatabase(randomBytes(5).toString('hex'));
      const dataSource = new DataSource(
        dataSourceOptions(new AppConfig(validateEnvironment({ DATABASE_URL: database.url }))),
      );
      await dataSource.initialize();
      try {
        const pragma = async (name: string): Promise<unknown> =>
          Object.values(((await dataSource.query(`PRAGMA ${name}`)) as object[])[0])[0];
        expect(await pragma('journal_mode')).toBe('wal');
        // NORMAL: COMMIT itself does not fsync; TransactionRunner does, before answering.
        expect(await pragma('synchronous')).toBe(1);
        expect(await pragma('foreign_keys')).toBe(1);
        expect(await pragma('temp_store')).toBe(2); // MEMORY
      } finally {
        await dataSource.destroy();
        await database.drop();
      }
    },
  );
});
