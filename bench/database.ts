import Database from 'better-sqlite3';
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client, Pool } from 'pg';

/**
 * The write transactions one Provisor operation commits, from the request to the target state,
 * read from the service's code (no Idempotency-Key; the bench sends none):
 *
 *  1. schedule: TransitionService.create / .schedule, in the request: the instance row, the
 *     operation (outbox) row, the transition and the event, in one transaction;
 *  2. begin: TransitionService.begin, in the worker: scheduled -> in progress, operation running,
 *     transition, event;
 *  3. backend: the simulated driver keeps its VMs in the database and changes one in a transaction
 *     of its own (provision inserts it; start, stop and delete update it);
 *  4. succeed: TransitionService.succeed: target state (or the row removed), transition, event,
 *     operation closed.
 *
 * Authentication and the fault check of the simulated driver only read. The outbox relay adds at
 * most one batched update a second for rows left waiting past its grace period, shared by up to
 * 500 operations: no commit of its own per operation. So the floor makes four commits per job,
 * each one small write as the service's are; the first before the job is queued, as a request
 * commits before it hands its job over.
 */
export const COMMITS_PER_OPERATION = 4;
export type FloorStep = 'schedule' | 'begin' | 'backend' | 'succeed';

export interface BenchDatabase {
  readonly kind: 'sqlite' | 'postgres';
  /** DATABASE_URL for the service. */
  readonly serviceUrl: string;
  /** Where it is, for the report; no credentials. */
  readonly label: string;
  version(): Promise<string>;
  countInstances(): Promise<number>;
  /**
   * Adds `count` instances of `ownerId`, online and offline with their simulated VMs, older than
   * anything the bench creates: a fleet that has been running a while.
   */
  seedInstances(ownerId: string, count: number): Promise<void>;
  /**
   * Leaves the table as it would settle between bursts in production before a growth step
   * measures: its statistics fresh and its pages written out.
   */
  settle(): Promise<void>;
  floorSetup(): Promise<void>;
  floorCommit(step: FloorStep, operationId: string, instanceId: string): Promise<void>;
  floorTeardown(): Promise<void>;
  /** Drops what the bench created. */
  destroy(): Promise<void>;
}

const FLAVORS = ['small', 'medium', 'large'];
/** Seeded rows are this much older than the run, spaced a second apart. */
const SEED_AGE_MS = 200_000_000;

function seedState(i: number): 'online' | 'offline' {
  return i % 10 < 7 ? 'online' : 'offline';
}

/**
 * The service keeps a tally of instances per owner and state beside the table (its list totals
 * read it); rows seeded behind its back are added to the tally as it would have added them.
 */
function seedTally(from: number, to: number): Map<string, number> {
  const tally = new Map<string, number>();
  for (let i = from; i < to; i++) tally.set(seedState(i), (tally.get(seedState(i)) ?? 0) + 1);
  return tally;
}

/** A fresh SQLite file in a scratch directory; the service creates its schema on start. */
export class SqliteBenchDatabase implements BenchDatabase {
  readonly kind = 'sqlite';
  readonly serviceUrl: string;
  readonly label: string;
  readonly dir: string;
  private readonly path: string;
  private db?: Database.Database;
  private seeded = 0;
  private readonly seedBase = Date.now() - SEED_AGE_MS;
  private floor?: Record<FloorStep, Database.Statement>;

  constructor() {
    this.dir = mkdtempSync(join(tmpdir(), 'provisor-bench-'));
    this.path = join(this.dir, 'provisor.sqlite');
    this.serviceUrl = `sqlite:${this.path}`;
    this.label = `SQLite ${this.path}`;
  }

  /**
   * Opened once the service has migrated, with the service's pragmas but `synchronous = FULL`:
   * each floor commit is on disk when COMMIT returns, which is what the service makes sure of
   * before it answers (it runs that same fsync of the log off its event loop; see WalSync).
   */
  private conn(): Database.Database {
    if (!this.db) {
      this.db = new Database(this.path);
      this.db.pragma('journal_mode = WAL');
      this.db.pragma('synchronous = FULL');
      this.db.pragma('busy_timeout = 5000');
      this.db.pragma('foreign_keys = ON');
      this.db.pragma('temp_store = MEMORY');
    }
    return this.db;
  }

  version(): Promise<string> {
    const row = this.conn().prepare('SELECT sqlite_version() AS v').get() as { v: string };
    return Promise.resolve(row.v);
  }

  countInstances(): Promise<number> {
    const row = this.conn().prepare('SELECT COUNT(*) AS n FROM instances').get() as { n: number };
    return Promise.resolve(row.n);
  }

  seedInstances(ownerId: string, count: number): Promise<void> {
    const db = this.conn();
    const instance = db.prepare(
      `INSERT INTO instances (id, name, description, flavor, image, state, error_message,
         error_traceback, backend_id, owner_id, operation_id, created_at, updated_at)
       VALUES (?, ?, '', ?, 'debian-12', ?, '', '', ?, ?, NULL, ?, ?)`,
    );
    const vm = db.prepare(
      `INSERT INTO sim_vms (backend_id, instance_id, name, flavor, image, state,
         last_operation_id, op_counts, created_at, updated_at)
       VALUES (?, ?, ?, ?, 'debian-12', ?, NULL, '{"provision":1}', ?, ?)`,
    );
    const batch = db.transaction((from: number, to: number) => {
      for (let i = from; i < to; i++) {
        const id = randomUUID();
        const backendId = `sim-${randomUUID()}`;
        const name = `seed-${i}`;
        const flavor = FLAVORS[i % 3];
        // TypeORM keeps SQLite times as UTC text of this shape; the list sorts on it.
        const at = sqliteTime(new Date(this.seedBase + i * 1000));
        instance.run(id, name, flavor, seedState(i), backendId, ownerId, at, at);
        vm.run(backendId, id, name, flavor, seedState(i), at, at);
      }
    });
    const end = this.seeded + count;
    for (let from = this.seeded; from < end; from += 10_000) {
      batch(from, Math.min(end, from + 10_000));
    }
    const tally = db.prepare(
      `INSERT INTO instance_counts (owner_id, state, count) VALUES (?, ?, ?)
       ON CONFLICT (owner_id, state) DO UPDATE SET count = instance_counts.count + excluded.count`,
    );
    for (const [state, n] of seedTally(this.seeded, end)) tally.run(ownerId, state, n);
    this.seeded = end;
    return Promise.resolve();
  }

  settle(): Promise<void> {
    // The pages written so far go into the database file now, as CHECKPOINT settles them on
    // PostgreSQL: otherwise the service's next commit would copy them out of the WAL, and the
    // first request measured would pay for the seeding.
    this.conn().pragma('wal_checkpoint(TRUNCATE)');
    return Promise.resolve();
  }

  floorSetup(): Promise<void> {
    const db = this.conn();
    db.exec(`
      CREATE TABLE bench_floor_operations (id varchar(36) PRIMARY KEY,
        instance_id varchar(36) NOT NULL, status varchar(16) NOT NULL,
        created_at datetime NOT NULL, updated_at datetime NOT NULL);
      CREATE INDEX ix_bench_floor_operations_instance ON bench_floor_operations (instance_id);
      CREATE TABLE bench_floor_vms (backend_id varchar(128) PRIMARY KEY,
        instance_id varchar(36) NOT NULL, state varchar(16) NOT NULL,
        created_at datetime NOT NULL, updated_at datetime NOT NULL);
      CREATE UNIQUE INDEX uq_bench_floor_vms_instance ON bench_floor_vms (instance_id);
    `);
    this.floor = {
      schedule: db.prepare(
        `INSERT INTO bench_floor_operations VALUES (@operationId, @instanceId, 'pending', @at, @at)`,
      ),
      begin: db.prepare(
        `UPDATE bench_floor_operations SET status = 'running', updated_at = @at
         WHERE id = @operationId AND instance_id = @instanceId`,
      ),
      backend: db.prepare(
        `INSERT INTO bench_floor_vms VALUES ('sim-' || @operationId, @instanceId, 'online', @at, @at)`,
      ),
      succeed: db.prepare(
        `UPDATE bench_floor_operations SET status = 'succeeded', updated_at = @at
         WHERE id = @operationId AND instance_id = @instanceId`,
      ),
    };
    return Promise.resolve();
  }

  floorCommit(step: FloorStep, operationId: string, instanceId: string): Promise<void> {
    const statement = this.floor![step];
    const at = sqliteTime(new Date());
    // BEGIN ... COMMIT around one write, as TypeORM wraps each of the service's transactions.
    this.conn().transaction(() => statement.run({ operationId, instanceId, at }))();
    return Promise.resolve();
  }

  floorTeardown(): Promise<void> {
    this.conn().exec('DROP TABLE bench_floor_operations; DROP TABLE bench_floor_vms;');
    this.floor = undefined;
    return Promise.resolve();
  }

  destroy(): Promise<void> {
    this.db?.close();
    rmSync(this.dir, { recursive: true, force: true });
    return Promise.resolve();
  }
}

function sqliteTime(date: Date): string {
  return date.toISOString().replace('T', ' ').slice(0, 23);
}

/**
 * A fresh database on the given PostgreSQL server, created for the run and dropped after it; the
 * URL's own database is used only to create and drop it.
 */
export class PostgresBenchDatabase implements BenchDatabase {
  readonly kind = 'postgres';
  readonly serviceUrl: string;
  readonly label: string;
  private pool?: Pool;
  private seeded = 0;
  private readonly seedBase = new Date(Date.now() - SEED_AGE_MS);

  private constructor(
    private readonly serverUrl: string,
    readonly name: string,
  ) {
    const url = new URL(serverUrl);
    url.pathname = `/${name}`;
    this.serviceUrl = url.toString();
    this.label = `PostgreSQL ${url.host}/${name}`;
  }

  static async create(serverUrl: string): Promise<PostgresBenchDatabase> {
    const name = `provisor_bench_${randomBytes(4).toString('hex')}`;
    await withAdmin(serverUrl, (admin) => admin.query(`CREATE DATABASE ${name}`));
    return new PostgresBenchDatabase(serverUrl, name);
  }

  /** As many connections as the service's pool, so the floor may commit as much in parallel. */
  private conn(): Pool {
    this.pool ??= new Pool({ connectionString: this.serviceUrl, max: 20 });
    return this.pool;
  }

  async version(): Promise<string> {
    const { rows } = await this.conn().query<{ v: string }>(
      "SELECT current_setting('server_version') AS v",
    );
    return rows[0].v;
  }

  async countInstances(): Promise<number> {
    const { rows } = await this.conn().query<{ n: number }>(
      'SELECT COUNT(*)::int AS n FROM instances',
    );
    return rows[0].n;
  }

  async seedInstances(ownerId: string, count: number): Promise<void> {
    const end = this.seeded + count;
    for (let from = this.seeded; from < end; from += 25_000) {
      const to = Math.min(end, from + 25_000) - 1;
      await this.conn().query(
        `WITH added AS (
           INSERT INTO instances (id, name, description, flavor, image, state, error_message,
             error_traceback, backend_id, owner_id, operation_id, created_at, updated_at)
           SELECT gen_random_uuid(), 'seed-' || g, '', (ARRAY['small','medium','large'])[1 + g % 3],
             'debian-12', CASE WHEN g % 10 < 7 THEN 'online' ELSE 'offline' END, '', '',
             'sim-' || gen_random_uuid(), $1::uuid, NULL,
             $2::timestamptz + make_interval(secs => g), $2::timestamptz + make_interval(secs => g)
           FROM generate_series($3::int, $4::int) AS g
           RETURNING id, name, flavor, image, state, backend_id, created_at
         )
         INSERT INTO sim_vms (backend_id, instance_id, name, flavor, image, state,
           last_operation_id, op_counts, created_at, updated_at)
         SELECT backend_id, id, name, flavor, image, state, NULL, '{"provision":1}', created_at,
           created_at
         FROM added`,
        [ownerId, this.seedBase, from, to],
      );
    }
    for (const [state, n] of seedTally(this.seeded, end)) {
      await this.conn().query(
        `INSERT INTO instance_counts (owner_id, state, count) VALUES ($1, $2, $3)
         ON CONFLICT (owner_id, state) DO UPDATE SET count = instance_counts.count + excluded.count`,
        [ownerId, state, n],
      );
    }
    this.seeded = end;
  }

  async settle(): Promise<void> {
    // A table that grew like this in production would have been vacuumed and analysed by
    // autovacuum soon after; measure that steady state, not the minute before it. Every step,
    // seeded or not: the accept measurements before it add thousands of instances, all newer
    // than the seed and in other states, and with statistics from before them the list's plan
    // walked the time index past them (6.5 ms against 1.8 at "5,000 rows" where the server's
    // autovacuum was off).
    await this.conn().query('VACUUM ANALYZE instances');
    await this.conn().query('VACUUM ANALYZE sim_vms');
    // Nor would it have its pages freshly dirty: without this, the checkpointer writes the
    // seed's pages out while the growth phase measures (list p99 at 100k 1.85x that at 1k in
    // one run, 1.03x with it). CHECKPOINT needs a superuser or pg_checkpoint; without, measure
    // as it is.
    await this.conn()
      .query('CHECKPOINT')
      .catch(() => undefined);
  }

  async floorSetup(): Promise<void> {
    await this.conn().query(`
      CREATE TABLE bench_floor_operations (id uuid PRIMARY KEY, instance_id uuid NOT NULL,
        status varchar(16) NOT NULL, created_at timestamptz NOT NULL,
        updated_at timestamptz NOT NULL);
      CREATE INDEX ix_bench_floor_operations_instance ON bench_floor_operations (instance_id);
      CREATE TABLE bench_floor_vms (backend_id varchar(128) PRIMARY KEY, instance_id uuid NOT NULL,
        state varchar(16) NOT NULL, created_at timestamptz NOT NULL,
        updated_at timestamptz NOT NULL);
      CREATE UNIQUE INDEX uq_bench_floor_vms_instance ON bench_floor_vms (instance_id);
    `);
  }

  async floorCommit(step: FloorStep, operationId: string, instanceId: string): Promise<void> {
    const sql: Record<FloorStep, string> = {
      schedule: `INSERT INTO bench_floor_operations VALUES ($1, $2, 'pending', $3, $3)`,
      begin: `UPDATE bench_floor_operations SET status = 'running', updated_at = $3
              WHERE id = $1 AND instance_id = $2`,
      backend: `INSERT INTO bench_floor_vms VALUES ('sim-' || $1, $2, 'online', $3, $3)`,
      succeed: `UPDATE bench_floor_operations SET status = 'succeeded', updated_at = $3
                WHERE id = $1 AND instance_id = $2`,
    };
    // A pooled connection per transaction, START ... COMMIT around it: what TypeORM does.
    const client = await this.conn().connect();
    try {
      await client.query('START TRANSACTION');
      await client.query(sql[step], [operationId, instanceId, new Date()]);
      await client.query('COMMIT');
    } catch (error) {
      await client.query('ROLLBACK').catch(() => undefined);
      throw error;
    } finally {
      client.release();
    }
  }

  async floorTeardown(): Promise<void> {
    await this.conn().query('DROP TABLE bench_floor_operations; DROP TABLE bench_floor_vms;');
  }

  async destroy(): Promise<void> {
    await this.pool?.end();
    await withAdmin(this.serverUrl, (admin) =>
      admin.query(`DROP DATABASE IF EXISTS ${this.name} WITH (FORCE)`),
    );
  }
}

async function withAdmin<T>(serverUrl: string, work: (client: Client) => Promise<T>): Promise<T> {
  const admin = new Client({ connectionString: serverUrl });
  await admin.connect();
  try {
    return await work(admin);
  } finally {
    await admin.end();
  }
}
