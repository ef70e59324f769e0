import { Injectable } from '@nestjs/common';
import { InjectDataSource } from '@nestjs/typeorm';
import { Mutex } from 'async-mutex';
import { DataSource, EntityManager } from 'typeorm';
import { DateUtils } from 'typeorm/util/DateUtils';

/** Advisory lock key of the event log ("PROV"). */
const EVENT_LOG_LOCK = 0x50524f56;

/** The longest run of back-to-back SQLite transactions before the event loop gets a turn. */
const YIELD_AFTER_MS = 10;

/** Keys of the locks behind `exclusively`, one per kind of housekeeping. */
export enum Lease {
  StuckSweep = 0x50525357, // "PRSW"
}

/**
 * Runs write transactions. TypeORM's SQLite driver shares ONE connection, so two interleaved
 * transactions on it would nest and corrupt each other: on SQLite every write transaction takes
 * a process-wide mutex. PostgreSQL gets one pooled connection per transaction and needs none.
 * Every write in Provisor goes through here.
 */
@Injectable()
export class TransactionRunner {
  private readonly sqliteWriteLock: Mutex | null;
  private lastYield = 0;

  constructor(@InjectDataSource() private readonly dataSource: DataSource) {
    this.sqliteWriteLock = this.isSqlite ? new Mutex() : null;
  }

  get isSqlite(): boolean {
    return this.dataSource.options.type === 'better-sqlite3';
  }

  run<T>(work: (manager: EntityManager) => Promise<T>): Promise<T> {
    if (this.sqliteWriteLock) {
      return this.sqliteWriteLock.runExclusive(async () => {
        // better-sqlite3 answers synchronously, so queued transactions run one after another in
        // a single chain of microtasks, with no socket read or written while it lasts. Once a
        // chain has run for YIELD_AFTER_MS, the next transaction waits for a turn of the event
        // loop: requests are answered within milliseconds, not after the whole queue.
        if (performance.now() - this.lastYield > YIELD_AFTER_MS) {
          await new Promise<void>((resolve) => setImmediate(resolve));
          this.lastYield = performance.now();
        }
        return this.dataSource.transaction(work);
      });
    }
    return this.dataSource.transaction(work);
  }

  /**
   * Inside a transaction: waits for, and holds until commit, the event log's lock. Event ids come
   * from a sequence at insert time but show at commit; taking ids under this lock makes the two
   * orders agree on PostgreSQL. SQLite's write lock already does.
   */
  async lockEventLog(manager: EntityManager): Promise<void> {
    if (!this.isSqlite) await manager.query('SELECT pg_advisory_xact_lock($1)', [EVENT_LOG_LOCK]);
  }

  /**
   * Runs `work` unless another process is running work under the same lease, in which case it
   * answers null at once. On PostgreSQL the lease is a session advisory lock on a connection of
   * its own, released when the work ends or the process dies; SQLite serves a single process.
   */
  async exclusively<T>(lease: Lease, work: () => Promise<T>): Promise<T | null> {
    if (this.isSqlite) return work();
    const runner = this.dataSource.createQueryRunner();
    await runner.connect();
    try {
      const [{ locked }] = (await runner.query('SELECT pg_try_advisory_lock($1) AS locked', [
        lease,
      ])) as { locked: boolean }[];
      if (!locked) return null;
      try {
        return await work();
      } finally {
        await runner.query('SELECT pg_advisory_unlock($1)', [lease]);
      }
    } finally {
      await runner.release();
    }
  }

  /**
   * A time as a query parameter. TypeORM converts entity values, not raw parameters, and SQLite
   * stores times as UTC text: compare like with like.
   */
  timeParam(date: Date): Date | string {
    return this.isSqlite ? DateUtils.mixedDateToUtcDatetimeString(date) : date;
  }
}
