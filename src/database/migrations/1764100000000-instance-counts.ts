import { MigrationInterface, QueryRunner, Table } from 'typeorm';

/**
 * How many instances each owner has in each state, kept by TransitionService in the transaction
 * of every change, so that a list's `total` is a sum of a few rows rather than a count of the
 * table. Filled from the instances already there.
 */
export class InstanceCounts1764100000000 implements MigrationInterface {
  name = 'InstanceCounts1764100000000';

  async up(runner: QueryRunner): Promise<void> {
    const pg = runner.connection.options.type === 'postgres';
    await runner.createTable(
      new Table({
        name: 'instance_counts',
        columns: [
          {
            name: 'owner_id',
            type: pg ? 'uuid' : 'varchar',
            length: pg ? undefined : '36',
            isPrimary: true,
          },
          { name: 'state', type: 'varchar', length: '32', isPrimary: true },
          { name: 'count', type: 'integer', default: 0 },
        ],
      }),
    );
    await runner.query(
      'INSERT INTO instance_counts (owner_id, state, count) ' +
        'SELECT owner_id, state, COUNT(*) FROM instances GROUP BY owner_id, state',
    );
  }

  async down(runner: QueryRunner): Promise<void> {
    await runner.dropTable('instance_counts');
  }
}
