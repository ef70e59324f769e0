import { closeSync, fdatasync, openSync } from 'node:fs';

/** Flushes an open file's data to disk: `fs.fdatasync`, or a stand-in where a test holds it. */
export type SyncFile = (fd: number, done: (error: NodeJS.ErrnoException | null) => void) => void;

/** Injection token of the `SyncFile` that `WalSync` uses. */
export const SYNC_FILE = Symbol('SYNC_FILE');

/**
 * Makes SQLite's commits durable off the event loop. With `synchronous = NORMAL` in WAL mode a
 * COMMIT writes its pages to the write-ahead log without an fsync; `synchronous = FULL` differs
 * only by an fsync of that log after every commit, inside COMMIT, on the thread that runs it
 * (better-sqlite3 runs on the event loop, so every request waits it out). Here that same fsync of
 * the log runs in libuv's thread pool instead, and whoever waits on `durable()` hears back once
 * it is done: the guarantee of FULL, while the next transactions run. One sync covers every
 * commit before it, so commits that land while one runs share the next.
 */
export class WalSync {
  /** COMMITs that have run (or failed: a sync too many is harmless). */
  private committed = 0;
  /** COMMITs running: what a read meets now may be their rows. */
  private committing = 0;
  /** After `close`, a late sync opens the log for itself alone. */
  private closed = false;
  private synced = 0;
  private running = false;
  private fd: number | null = null;
  /**
   * Set by the first failed sync, and kept: after a failed fsync Linux may report the next one
   * clean although the pages it dropped are lost, so no later commit is called durable either.
   * SQLite recovers from its log when the process starts again.
   */
  private failed: Error | null = null;
  private waiters: {
    upTo: number;
    /** False for a waiter that lets the next turn of the event loop start its sync. */
    eager: boolean;
    resolve: () => void;
    reject: (error: Error) => void;
  }[] = [];
  private promoting = false;

  /** `walPath`: the database file's `-wal` companion. */
  constructor(
    private readonly walPath: string,
    private readonly syncFile: SyncFile = fdatasync,
  ) {}

  /** The failure that ended durability, if one did. */
  get failure(): Error | null {
    return this.failed;
  }

  /**
   * Brackets a COMMIT: from this call on, `durable()` waits for it too, and no sync started
   * before `end` counts it (its pages may not be written yet).
   */
  commit(): { end(): void } {
    this.committing++;
    let ended = false;
    return {
      end: () => {
        if (ended) return;
        ended = true;
        this.committing--;
        this.committed++;
        this.next();
      },
    };
  }

  /**
   * Settles once every commit made so far (or running) is on disk; at once if it already is.
   *
   * `soon`: the wait need not start a sync before the next turn of the event loop. Commits
   * made meanwhile (the next steps of a job whose step did not wait) share that sync, or one a
   * waiter that cannot wait starts first, instead of each queueing behind a sync of its own.
   */
  durable({ soon = false } = {}): Promise<void> {
    const upTo = this.committed + this.committing;
    if (this.synced >= upTo) return Promise.resolve();
    if (this.failed) return Promise.reject(this.failed);
    return new Promise<void>((resolve, reject) => {
      this.waiters.push({ upTo, eager: !soon, resolve, reject });
      if (soon) this.promoteSoon();
      else this.next();
    });
  }

  /** On the next turn of the event loop, every waiter starts a sync if it needs one. */
  private promoteSoon(): void {
    if (this.promoting) return;
    this.promoting = true;
    setImmediate(() => {
      this.promoting = false;
      for (const waiter of this.waiters) waiter.eager = true;
      this.next();
    });
  }

  /** Waits for what was committed, then lets go of the log file. */
  async close(): Promise<void> {
    try {
      await this.durable();
    } finally {
      this.closed = true;
      if (!this.running) this.releaseFile();
    }
  }

  private next(): void {
    // A waiter for a COMMIT still running is served by the sync its end starts.
    if (this.running || this.failed || this.synced >= this.committed) return;
    if (!this.waiters.some((waiter) => waiter.eager && waiter.upTo > this.synced)) return;
    let fd: number;
    try {
      // The log is the same file for the connection's whole life (SQLite deletes it only when
      // the last connection closes), so it is opened once, at the first commit it must sync.
      // Read and write, as some platforms require of a file they sync; nothing is written.
      fd = this.fd ??= openSync(this.walPath, 'r+');
    } catch (error) {
      this.fail(error as Error);
      return;
    }
    this.running = true;
    const upTo = this.committed;
    this.syncFile(fd, (error) => {
      this.running = false;
      if (this.closed) this.releaseFile();
      if (error) return this.fail(error);
      this.synced = Math.max(this.synced, upTo);
      const waiting = this.waiters;
      this.waiters = waiting.filter((waiter) => waiter.upTo > this.synced);
      for (const waiter of waiting) if (waiter.upTo <= this.synced) waiter.resolve();
      this.next();
    });
  }

  private releaseFile(): void {
    if (this.fd !== null) closeSync(this.fd);
    this.fd = null;
  }

  private fail(cause: Error): void {
    this.failed = new Error(
      'A commit could not be made durable: the fsync of the SQLite log failed. ' +
        'Restart the service; SQLite recovers from its log.',
      { cause },
    );
    const waiting = this.waiters;
    this.waiters = [];
    for (const waiter of waiting) waiter.reject(this.failed);
  }
}
