import { MigrationInterface, QueryRunner, Table, TableIndex } from 'typeorm';
import type { TableColumnOptions } from 'typeorm/schema-builder/options/TableColumnOptions';

/**
 * The first schema, written with TypeORM's database-neutral Table API so that one migration
 * serves SQLite and PostgreSQL. Times are `timestamptz` on PostgreSQL (absolute instants,
 * whatever the server's time zone) and UTC text on SQLite.
 */
export class InitialSchema1764000000000 implements MigrationInterface {
  name = 'InitialSchema1764000000000';

  async up(runner: QueryRunner): Promise<void> {
    const pg = runner.connection.options.type === 'postgres';
    const uuid = (name: string, extra: Partial<TableColumnOptions> = {}): TableColumnOptions => ({
      name,
      type: pg ? 'uuid' : 'varchar',
      length: pg ? undefined : '36',
      ...extra,
    });
    const time = (name: string, extra: Partial<TableColumnOptions> = {}): TableColumnOptions => ({
      name,
      type: pg ? 'timestamptz' : 'datetime',
      ...extra,
    });
    const text = (name: string, length?: number, extra: Partial<TableColumnOptions> = {}) =>
      ({
        name,
        type: length ? 'varchar' : 'text',
        length: length ? String(length) : undefined,
        ...extra,
      }) as TableColumnOptions;
    const serial = (name: string): TableColumnOptions => ({
      name,
      type: 'integer',
      isPrimary: true,
      isGenerated: true,
      generationStrategy: 'increment',
    });

    await runner.createTable(
      new Table({
        name: 'users',
        columns: [
          uuid('id', { isPrimary: true }),
          text('username', 63),
          { name: 'is_staff', type: 'boolean', default: false },
          text('token_hash', 64),
          time('created_at'),
        ],
        indices: [
          new TableIndex({ name: 'uq_users_username', columnNames: ['username'], isUnique: true }),
          new TableIndex({
            name: 'uq_users_token_hash',
            columnNames: ['token_hash'],
            isUnique: true,
          }),
        ],
      }),
    );

    await runner.createTable(
      new Table({
        name: 'instances',
        columns: [
          uuid('id', { isPrimary: true }),
          text('name', 63),
          text('description', 500, { default: "''" }),
          text('flavor', 32),
          text('image', 64),
          text('state', 32),
          text('error_message', undefined, { default: "''" }),
          text('error_traceback', undefined, { default: "''" }),
          text('backend_id', 128, { default: "''" }),
          uuid('owner_id'),
          uuid('operation_id', { isNullable: true }),
          time('created_at'),
          time('updated_at'),
        ],
        indices: [
          // The list: one user's instances, optionally by state, newest first.
          new TableIndex({
            name: 'ix_instances_owner_state_created',
            columnNames: ['owner_id', 'state', 'created_at'],
          }),
          new TableIndex({
            name: 'ix_instances_owner_created',
            columnNames: ['owner_id', 'created_at'],
          }),
          // Staff lists and the stuck sweeper: by state, oldest change first.
          new TableIndex({
            name: 'ix_instances_state_updated',
            columnNames: ['state', 'updated_at'],
          }),
          new TableIndex({
            name: 'ix_instances_state_created',
            columnNames: ['state', 'created_at'],
          }),
          new TableIndex({ name: 'ix_instances_created', columnNames: ['created_at'] }),
        ],
      }),
    );

    await runner.createTable(
      new Table({
        name: 'instance_transitions',
        columns: [
          serial('id'),
          uuid('instance_id'),
          text('action', 32),
          text('from_state', 32, { isNullable: true }),
          text('to_state', 32),
          text('error_message', undefined, { default: "''" }),
          time('at'),
        ],
        indices: [
          new TableIndex({ name: 'ix_transitions_instance', columnNames: ['instance_id', 'id'] }),
        ],
      }),
    );

    await runner.createTable(
      new Table({
        name: 'instance_events',
        columns: [
          serial('id'),
          text('type', 64),
          uuid('instance_id'),
          uuid('owner_id'),
          text('state', 32),
          text('error_message', undefined, { default: "''" }),
          time('at'),
        ],
        indices: [
          new TableIndex({ name: 'ix_events_owner', columnNames: ['owner_id', 'id'] }),
          new TableIndex({ name: 'ix_events_instance', columnNames: ['instance_id', 'id'] }),
        ],
      }),
    );

    await runner.createTable(
      new Table({
        name: 'operations',
        columns: [
          uuid('id', { isPrimary: true }),
          uuid('instance_id'),
          text('action', 32),
          text('params', undefined, { default: "'{}'" }),
          text('status', 16),
          text('error_message', undefined, { default: "''" }),
          text('request_id', 128, { isNullable: true }),
          time('dispatch_after'),
          time('created_at'),
          time('updated_at'),
        ],
        indices: [
          // The relay's poll: pending rows whose hand-over is due.
          new TableIndex({
            name: 'ix_operations_status_dispatch',
            columnNames: ['status', 'dispatch_after'],
          }),
          new TableIndex({ name: 'ix_operations_instance', columnNames: ['instance_id'] }),
        ],
      }),
    );

    await runner.createTable(
      new Table({
        name: 'idempotency_keys',
        columns: [
          uuid('user_id', { isPrimary: true }),
          text('key', 255, { isPrimary: true }),
          text('fingerprint', 64),
          { name: 'status_code', type: 'integer', isNullable: true },
          text('location', 255, { isNullable: true }),
          text('body', undefined, { isNullable: true }),
          time('created_at'),
        ],
        indices: [new TableIndex({ name: 'ix_idempotency_created', columnNames: ['created_at'] })],
      }),
    );

    await runner.createTable(
      new Table({
        name: 'sim_vms',
        columns: [
          text('backend_id', 128, { isPrimary: true }),
          uuid('instance_id'),
          text('name', 63),
          text('flavor', 32),
          text('image', 64),
          text('state', 16),
          uuid('last_operation_id', { isNullable: true }),
          text('op_counts', undefined, { default: "'{}'" }),
          time('created_at'),
          time('updated_at'),
        ],
        indices: [
          new TableIndex({
            name: 'uq_sim_vms_instance',
            columnNames: ['instance_id'],
            isUnique: true,
          }),
        ],
      }),
    );

    await runner.createTable(
      new Table({
        name: 'sim_faults',
        columns: [
          uuid('id', { isPrimary: true }),
          text('operation', 16),
          uuid('instance_id', { isNullable: true }),
          text('mode', 16),
          text('message', 500, { default: "''" }),
          { name: 'remaining', type: 'integer' },
          time('created_at'),
        ],
        indices: [
          new TableIndex({
            name: 'ix_sim_faults_operation',
            columnNames: ['operation', 'created_at'],
          }),
        ],
      }),
    );
  }

  async down(runner: QueryRunner): Promise<void> {
    for (const table of [
      'sim_faults',
      'sim_vms',
      'idempotency_keys',
      'operations',
      'instance_events',
      'instance_transitions',
      'instances',
      'users',
    ]) {
      await runner.dropTable(table);
    }
  }
}
