import {
  BeforeApplicationShutdown,
  Inject,
  Injectable,
  Logger,
  OnApplicationShutdown,
  Optional,
} from '@nestjs/common';
import { InjectDataSource } from '@nestjs/typeorm';
import { fdatasync } from 'node:fs';
import { DataSource, EntityManager, QueryRunner } from 'typeorm';
import type { BetterSqlite3Driver } from 'typeorm/driver/better-sqlite3/BetterSqlite3Driver';
import { DateUtils } from 'typeorm/util/DateUtils';
import { execute } from './entity-statements';
import { WalCheckpointer } from './wal-checkpointer';
import { SYNC_FILE, type SyncFile, WalSync } from './wal-sync';

/**
 * Advisory lock key of the event log ("PROV"): held from storing a transaction's events to its
 * commit on PostgreSQL, so event ids become visible in the order they were given.
 */
export const EVENT_LOG_LOCK = 0x50524f56;

/** The longest run of back-to-back SQLite transactions before the event loop gets a turn. */
const YIELD_AFTER_MS = 10;

/** Keys of the locks behind `exclusively`, one per kind of housekeeping. */
export enum Lease {
  StuckSweep = 0x50525357, // "PRSW"
}

/**
 * The savepoint each transaction of a SQLite group runs in. Its statements go through `execute`,
 * as the transactions' own do: through TypeORM's runner each would also broadcast two transaction
 * events and take several promise hops, for every request and every job step. The group's BEGIN
 * and COMMIT stay TypeORM's, so the runner that `work` is given knows it is in a transaction.
 */
const SAVEPOINT = 'provisor_transaction';

/** The most transactions that share one SQLite commit, and the longest a group takes in. */
const MAX_GROUP = 64;
const GROUP_MS = 5;

/** How the caller of a write hears of it. */
export interface WriteOptions {
  /**
   * Whether the caller is answered only once the commit is durable (the default). With false, on
   * SQLite, it is answered once COMMIT has run, while the commit's fsync is still under way: for
   * a step that nobody outside is told of, whose loss in a crash is undone by doing it again (a
   * job's start, the simulated cloud's own writes). A later durable commit covers it: SQLite's
   * log is written in commit order.
   */
  awaitDurable?: boolean;
  /**
   * Called once COMMIT has run, before the fsync that makes it durable, in commit order: for
   * work that may start before then because a crash that loses the commit also makes it moot
   * (handing a new operation's job to the queue: a job whose operation is not stored is skipped).
   */
  onCommit?: () => void;
  /**
   * Called once the commit is durable, before a caller that waits for that is answered: in
   * commit order, each transaction's after the one committed before it.
   */
  onDurable?: () => void;
}

interface Pending<T = unknown> extends WriteOptions {
  work: (manager: EntityManager) => Promise<T>;
  resolve: (value: T) => void;
  reject: (error: unknown) => void;
}

/**
 * Runs write transactions. Every write in Provisor goes through here.
 *
 * PostgreSQL gets one pooled connection per transaction.
 *
 * TypeORM's SQLite driver shares ONE connection, so transactions there run one at a time, in the
 * order they were asked for. Those that queue up behind each other share a commit (group
 * commit): each runs in a savepoint of one database transaction, and none is answered before
 * that transaction has committed. A transaction that throws is rolled back to its savepoint alone
 * and its caller gets the error; the others go on. The commit's fsync of the write-ahead log is
 * most of a small transaction's cost, so under load one fsync serves many transitions, and every
 * caller still hears of its transaction only once it is durable, unless it asked to hear at
 * COMMIT (`WriteOptions`). That fsync runs off the event loop (`synchronous = NORMAL` and
 * `WalSync`); the next group commits after it, or beside it if its writes were already queued.
 */
@Injectable()
export class TransactionRunner implements BeforeApplicationShutdown, OnApplicationShutdown {
  private readonly logger = new Logger(TransactionRunner.name);
  private readonly queue: Pending[] = [];
  private draining = false;
  private lastYield = 0;
  /** SQLite with `synchronous = NORMAL`: the fsync of each commit, off the event loop. */
  private walSync?: WalSync | null;
  /** With `walSync`: the log's checkpoints, off the event loop. None once shutdown begins. */
  private checkpointer: WalCheckpointer | null = null;
  private shuttingDown = false;
  private totalChangesStatement?: { get(): unknown };
  /** While a group holds the shared SQLite connection: settles once the group is over. */
  private groupOver: Promise<void> | null = null;
  /** Reads (`read`) under way on that connection, and the group waiting for them to end. */
  private reads = 0;
  private readsOver?: () => void;

  constructor(
    @InjectDataSource() private readonly dataSource: DataSource,
    @Optional() @Inject(SYNC_FILE) private readonly syncFile: SyncFile = fdatasync,
  ) {}

  get isSqlite(): boolean {
    return this.dataSource.options.type === 'better-sqlite3';
  }

  run<T>(work: (manager: EntityManager) => Promise<T>, options: WriteOptions = {}): Promise<T> {
    if (!this.isSqlite) {
      // PostgreSQL's COMMIT returns once the commit is durable.
      return this.dataSource.transaction(work).then((value) => {
        this.notify(options.onCommit);
        this.notify(options.onDurable);
        return value;
      });
    }
    return new Promise<T>((resolve, reject) => {
      this.queue.push({ ...options, work, resolve, reject } as Pending);
      if (!this.draining) void this.drain();
    });
  }

  /**
   * Runs work whose every write is one statement that holds by itself (conditional on the rows
   * being as the work read them, which it checks): on PostgreSQL with no transaction, each
   * statement on a pooled connection; on SQLite as a write transaction like `run`, since its one
   * connection and group commit serve every write.
   */
  runUnlocked<T>(
    work: (manager: EntityManager) => Promise<T>,
    options: Pick<WriteOptions, 'awaitDurable'> = {},
  ): Promise<T> {
    return this.isSqlite ? this.run(work, options) : work(this.dataSource.manager);
  }

  /**
   * Runs `work`, reads made outside any transaction, and answers once what they read is on disk
   * (`durable`): none shows a change a power cut could still undo. With `durable: false` it
   * answers at once, for figures that must stay readable when durability is lost (metrics).
   *
   * On SQLite the reads share the one connection with the write groups, and a group's
   * statements are a chain of microtasks that another chain can run between. A read there would
   * see rows the group has not committed, or rolls back later. So a read waits for a group that
   * holds the connection, and a group waits for reads under way. A read inside another read goes
   * ahead. `work` must only read, and never run inside a transaction's own work: a group would
   * wait for itself.
   */
  async read<T>(work: () => Promise<T>, { durable = true } = {}): Promise<T> {
    if (!this.isSqlite) return work();
    while (this.groupOver && this.reads === 0) await this.groupOver;
    this.reads++;
    let value: T;
    try {
      value = await work();
    } finally {
      if (--this.reads === 0) this.readsOver?.();
    }
    if (durable) await this.durable();
    return value;
  }

  /**
   * Settles once every transaction committed so far is on disk: at once on PostgreSQL, whose
   * COMMIT returns only then, and on SQLite unless a commit's fsync is still running (see
   * `WalSync`). Work answers its callers only after this, and so does `read`.
   */
  durable(options?: { soon?: boolean }): Promise<void> {
    return this.walSync ? this.walSync.durable(options) : Promise.resolve();
  }

  /**
   * The checkpointer stops before any module's `onApplicationShutdown`, TypeORM's included: the
   * service's connection, then the last, checkpoints and removes the log as it closes.
   */
  async beforeApplicationShutdown(): Promise<void> {
    this.shuttingDown = true;
    await this.checkpointer?.close();
  }

  async onApplicationShutdown(): Promise<void> {
    // Whatever happened to durability, the other modules must still close.
    await this.walSync?.close().catch(() => undefined);
  }

  private async drain(): Promise<void> {
    this.draining = true;
    /** The group about to run was queued at once by the callers of one whose fsync waits. */
    let chained = false;
    try {
      while (this.queue.length > 0) {
        // better-sqlite3 answers synchronously, so queued transactions run one after another in
        // a single chain of microtasks, with no socket read or written while it lasts. Once a
        // chain has run for YIELD_AFTER_MS, the next group waits for a turn of the event loop:
        // requests are answered within milliseconds, not after the whole queue. Not between a
        // group whose callers all went on at COMMIT and the writes they queued at once, though:
        // that turn would start the first group's fsync (`WalSync`'s `soon`) before the second
        // commits, and each would need its own. The turn then comes one group later.
        if (!chained && performance.now() - this.lastYield > YIELD_AFTER_MS) {
          await new Promise<void>((resolve) => setImmediate(resolve));
          this.lastYield = performance.now();
        }
        const deferredSync = await this.holdingConnection(() => this.runGroup());
        // Writes already queued once this group is done (with the continuations it set off,
        // such as a job's next step answered at COMMIT) commit at once, beside its fsync: a
        // later fsync covers both. Otherwise the next group waits for this one's fsync: the
        // event loop serves requests meanwhile, and the writes they ask for queue up into one
        // commit, where commits as frequent as requests would each write the same index pages
        // to the log again.
        await new Promise<void>((resolve) => process.nextTick(resolve));
        chained = deferredSync && !chained && this.queue.length > 0;
        if (this.queue.length === 0) await this.durable().catch(() => undefined);
      }
    } finally {
      this.draining = false;
    }
  }

  /**
   * Runs `group` once reads under way are over, and keeps new reads waiting until it ends;
   * answers what it answers.
   */
  private async holdingConnection<T>(group: () => Promise<T>): Promise<T> {
    let over!: () => void;
    this.groupOver = new Promise<void>((resolve) => (over = resolve));
    try {
      while (this.reads > 0) await new Promise<void>((resolve) => (this.readsOver = resolve));
      this.readsOver = undefined;
      return await group();
    } finally {
      this.groupOver = null;
      over();
    }
  }

  /**
   * Runs queued transactions, each in a savepoint, and commits them together. Never throws: every
   * transaction it takes is answered, and the connection is out of any transaction afterwards.
   * Answers whether the commit's fsync was left for the next turn (`soon`).
   */
  private async runGroup(): Promise<boolean> {
    let failure: Error | null | undefined;
    try {
      if (this.walSync === undefined) this.walSync = this.openWalSync();
      failure = this.walSync?.failure;
    } catch (error) {
      failure = error as Error; // the connection is closed, say
    }
    if (failure) {
      // Durability is lost until a restart: nothing more is written, to be reported as failed.
      for (const pending of this.queue.splice(0)) pending.reject(failure);
      return false;
    }
    const runner = this.dataSource.createQueryRunner();
    const savepoint = (sql: string) => execute(this.dataSource, runner.manager, sql, []);
    const done: { pending: Pending; value: unknown }[] = [];
    let current: Pending | null = null;
    /** How many queued transactions the group took: none if it failed before its first. */
    let taken = 0;
    try {
      this.recover(runner);
      const changesBefore = this.totalChanges();
      await runner.startTransaction();
      // Transactions queued while the group runs join it, for up to GROUP_MS or MAX_GROUP: a
      // longer group would keep the event loop, and every request waiting on it, too long.
      const started = performance.now();
      while (taken < MAX_GROUP && this.queue.length > 0 && performance.now() - started < GROUP_MS) {
        current = this.queue.shift()!;
        taken++;
        await savepoint(`SAVEPOINT ${SAVEPOINT}`);
        try {
          const value = await current.work(runner.manager);
          await savepoint(`RELEASE ${SAVEPOINT}`);
          done.push({ pending: current, value });
        } catch (error) {
          if (!this.sqliteConnection().inTransaction) {
            // SQLite rolled the whole transaction back by itself (disk full, I/O error): what
            // the group did before is gone too. Those still queued go into the next group.
            current.reject(error);
            current = null;
            throw new GroupAborted(error);
          }
          // Undone before its caller hears of it: the caller's next read sees none of it.
          await savepoint(`ROLLBACK TO ${SAVEPOINT}`);
          await savepoint(`RELEASE ${SAVEPOINT}`);
          current.reject(error);
        }
        current = null;
      }
      // Reads that meet this commit's rows, from here on, wait for its sync. A group that
      // changed nothing (a relay pass with nothing due) commits nothing to sync.
      const wrote = this.totalChanges() !== changesBefore;
      const commit = wrote ? this.walSync?.commit() : undefined;
      try {
        await runner.commitTransaction();
      } finally {
        commit?.end();
      }
    } catch (error) {
      const aborted = error instanceof GroupAborted ? error : new GroupAborted(error);
      // A group that failed before taking any transaction (its BEGIN refused, the connection
      // closed) answers the first one waiting, so that each attempt ends one: the queue drains
      // instead of retrying the same failure for ever, and a passing fault costs one answer.
      if (taken === 0) current = this.queue.shift() ?? null;
      current?.reject(aborted);
      for (const { pending } of done) pending.reject(aborted);
      this.recover(runner);
      return false;
    }
    // Callers that wait for durability hear once the group's commit is synced; the others now.
    for (const { pending, value } of done) {
      this.notify(pending.onCommit);
      if (pending.awaitDurable === false) pending.resolve(value);
    }
    // A group whose callers have all gone on lets the next turn start its fsync: their next
    // writes, committed by then, share it.
    const soon = done.every(({ pending }) => pending.awaitDurable === false);
    this.durable({ soon }).then(
      () => {
        for (const { pending, value } of done) {
          this.notify(pending.onDurable);
          if (pending.awaitDurable !== false) pending.resolve(value);
        }
      },
      (error: unknown) => {
        // A caller answered at COMMIT has gone on; the failed fsync stops every later write.
        for (const { pending } of done) if (pending.awaitDurable !== false) pending.reject(error);
      },
    );
    return soon && done.length > 0;
  }

  /**
   * A `WalSync` when SQLite itself does not fsync at commit: a database file in WAL mode with
   * `synchronous = NORMAL`. With FULL (or in memory) COMMIT returns once it is durable. The
   * same file's checkpoints move to a `WalCheckpointer`.
   */
  private openWalSync(): WalSync | null {
    const connection = this.sqliteConnection();
    const wal = connection.pragma('journal_mode', { simple: true }) === 'wal';
    const normal = connection.pragma('synchronous', { simple: true }) === 1;
    if (!wal || !normal || connection.memory) return null;
    // The file as SQLite opened it (symbolic links resolved): its log lies beside it.
    const [main] = connection.pragma('database_list') as { name: string; file: string }[];
    // A first write during shutdown gets none: nothing would be left to close it.
    if (!this.shuttingDown) this.checkpointer = WalCheckpointer.start(connection, main.file);
    return new WalSync(`${main.file}-wal`, this.syncFile);
  }

  /**
   * Runs a transaction's `onCommit` or `onDurable`. What it was told of holds whatever the
   * callback does, so a callback that throws (a bug) is logged and changes no answer.
   */
  private notify(callback: (() => void) | undefined): void {
    try {
      callback?.();
    } catch (error) {
      this.logger.error(
        `A write's notification failed: ${(error as Error).stack ?? String(error)}`,
      );
    }
  }

  /** Why writes are refused: a commit's fsync failed (SQLite), or null. */
  get durabilityFailure(): Error | null {
    return this.walSync?.failure ?? null;
  }

  /** Rows changed on the connection since it opened (SQLite's `total_changes()`). */
  private totalChanges(): number {
    this.totalChangesStatement ??= this.sqliteConnection()
      .prepare('SELECT total_changes()')
      .pluck();
    return this.totalChangesStatement.get() as number;
  }

  private sqliteConnection(): SqliteConnection {
    return (this.dataSource.driver as BetterSqlite3Driver).databaseConnection as SqliteConnection;
  }

  /**
   * Leaves the shared connection out of any transaction, and the shared runner believing so:
   * after a failure part-way through a group, or a transaction SQLite ended by itself.
   */
  private recover(runner: QueryRunner): void {
    const connection = this.sqliteConnection();
    if (connection.inTransaction) {
      try {
        connection.exec('ROLLBACK');
      } catch {
        // Nothing more to do here; the next group's BEGIN will say what is wrong.
      }
    }
    Object.assign(runner, { isTransactionActive: false, transactionDepth: 0 });
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

/** What the runner uses of better-sqlite3's connection. */
interface SqliteConnection {
  readonly inTransaction: boolean;
  readonly memory: boolean;
  exec(sql: string): unknown;
  pragma(sql: string, options?: { simple: true }): unknown;
  prepare(sql: string): { pluck(): { get(): unknown } };
}

/**
 * What the other callers of a group get when the group's database transaction is lost (its
 * COMMIT failed, or SQLite ended it): their work is undone and was not the cause, so they must
 * not take the cause's error for their own (a unique violation, say). The cause is `cause`.
 */
export class GroupAborted extends Error {
  constructor(cause: unknown) {
    super(
      `The write transaction was rolled back with others sharing its commit: ${
        cause instanceof Error ? cause.message : String(cause)
      }`,
      { cause },
    );
    this.name = 'GroupAborted';
  }
}
