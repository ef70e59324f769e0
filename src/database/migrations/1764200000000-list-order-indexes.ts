import { MigrationInterface, QueryRunner, TableIndex } from 'typeorm';

/** The instance list's indexes before and after: the same columns, then `id`. */
const INDEXES: { name: string; columns: string[] }[] = [
  { name: 'ix_instances_owner_state_created', columns: ['owner_id', 'state', 'created_at'] },
  { name: 'ix_instances_owner_created', columns: ['owner_id', 'created_at'] },
  { name: 'ix_instances_state_created', columns: ['state', 'created_at'] },
  { name: 'ix_instances_created', columns: ['created_at'] },
];

/**
 * Lists are ordered `created_at DESC, id DESC`; the indexes they read had `created_at` last, so
 * instances created in the same millisecond (a burst of creates) had to be sorted after the scan,
 * and PostgreSQL's planner could prefer the plain `created_at` index, filtering owner and state
 * row by row: 2,000 rows read for a page of 50 in one bench run. With `id` as the last column
 * each index gives the list's order as it is, and a page reads its 50 rows.
 *
 * On PostgreSQL the indexes are rebuilt inside the migration's transaction, which holds the
 * `instances` table locked until the last one is built: seconds for a table of a million rows,
 * during which every read and write of instances waits. Upgrade to it at a quiet moment.
 */
export class ListOrderIndexes1764200000000 implements MigrationInterface {
  name = 'ListOrderIndexes1764200000000';

  async up(runner: QueryRunner): Promise<void> {
    for (const { name, columns } of INDEXES) {
      await runner.dropIndex('instances', name);
      await runner.createIndex(
        'instances',
        new TableIndex({ name, columnNames: [...columns, 'id'] }),
      );
    }
  }

  async down(runner: QueryRunner): Promise<void> {
    for (const { name, columns } of INDEXES) {
      await runner.dropIndex('instances', name);
      await runner.createIndex('instances', new TableIndex({ name, columnNames: columns }));
    }
  }
}
