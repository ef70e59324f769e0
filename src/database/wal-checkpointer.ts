import { Logger } from '@nestjs/common';
import { Worker } from 'node:worker_threads';

/**
 * Pages in the write-ahead log past which the service's own connection checkpoints after a
 * commit (`wal_autocheckpoint`) while the checkpointer runs: a backstop that bounds the log
 * (about 16 MB of 4 KB pages), since only a writer can start the log over once its pages are all
 * in the database file. SQLite's default is 1,000.
 */
export const BACKSTOP_PAGES = 4000;

/** How soon the checkpointer looks again: soon while the log grows, seldom while it is still. */
const BUSY_EVERY_MS = 10;
const IDLE_EVERY_MS = 250;

/** How long `close` waits for a checkpoint under way before it stops the thread outright. */
const CLOSE_WITHIN_MS = 5000;

/**
 * The checkpointer's thread. It opens a second connection to the database file and copies the
 * log's pages into it (`wal_checkpoint(PASSIVE)`: never waits for, nor blocks, the service's
 * reads and writes), with the fsyncs of log and file that a checkpoint makes.
 */
const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const Database = require(workerData.driver);
// better-sqlite3's errors reach the service's thread as bare objects: send plain ones.
const plain = (error) => new Error(error.code ? error.message + ' (' + error.code + ')' : error.message);
let db;
try {
  db = new Database(workerData.file, { fileMustExist: true });
  // What makes a checkpoint fsync the log before it copies and the file after: the log may
  // start over only once the file holds its pages durably. Never lower.
  db.pragma('synchronous = NORMAL');
} catch (error) {
  throw plain(error);
}
let timer;
let lastLog = 0;
function pass() {
  let growing = false;
  try {
    const [{ log, checkpointed }] = db.pragma('wal_checkpoint(PASSIVE)');
    growing = log !== lastLog || checkpointed < log;
    lastLog = log;
  } catch (error) {
    db.close();
    throw plain(error);
  }
  timer = setTimeout(pass, growing ? workerData.busyEveryMs : workerData.idleEveryMs);
}
parentPort.on('message', () => {
  clearTimeout(timer);
  db.close();
  parentPort.close();
});
parentPort.postMessage('ready');
pass();
`;

/** What the checkpointer uses of better-sqlite3's connection. */
export interface CheckpointedConnection {
  pragma(sql: string, options?: { simple: true }): unknown;
}

/**
 * Takes SQLite's checkpoints off the event loop. In WAL mode a commit appends pages to the log,
 * and once the log holds `wal_autocheckpoint` pages (1,000 by default) the commit that crossed
 * it also copies them into the database file and fsyncs both, on the thread that ran COMMIT:
 * the service's one main thread, for a few milliseconds every hundred-odd commits under load.
 * Here a worker thread with its own connection makes those checkpoints as the log grows, and the
 * service's connection checkpoints only past `BACKSTOP_PAGES`, where the log's pages are already
 * in the file but for the last few milliseconds' worth, so that it can start over.
 *
 * If the thread cannot start or fails, the connection's checkpoints go back to what they were,
 * a warning says so, and the service runs on as it would without it.
 */
export class WalCheckpointer {
  private readonly logger = new Logger(WalCheckpointer.name);
  private readonly worker: Worker;
  private readonly exited: Promise<void>;
  /** The connection's own `wal_autocheckpoint`, put back when the thread stops. */
  private readonly own: number;
  private closing = false;
  private failure: Error | null = null;

  /**
   * Starts the thread for `file`, the database file the connection opened (symbolic links
   * resolved), or answers null, with a warning, if it cannot.
   */
  static start(connection: CheckpointedConnection, file: string): WalCheckpointer | null {
    try {
      return new WalCheckpointer(connection, file);
    } catch (error) {
      new Logger(WalCheckpointer.name).warn(
        `SQLite checkpoints stay on the main thread: the checkpointer did not start: ${
          (error as Error).message
        }`,
      );
      return null;
    }
  }

  constructor(
    private readonly connection: CheckpointedConnection,
    file: string,
  ) {
    this.own = Number(connection.pragma('wal_autocheckpoint', { simple: true }));
    this.worker = new Worker(WORKER_SOURCE, {
      eval: true,
      workerData: {
        // The module TypeORM's driver was given (see data-source-options): one SQLite library
        // in the process, whose locks know of both connections.
        driver: require.resolve('better-sqlite3'),
        file,
        busyEveryMs: BUSY_EVERY_MS,
        idleEveryMs: IDLE_EVERY_MS,
      },
      // It allocates next to nothing; the process's heap flags are for the main thread.
      execArgv: [],
      resourceLimits: { maxOldGenerationSizeMb: 16, maxYoungGenerationSizeMb: 2 },
    });
    // Idle, it keeps no process alive; `close` holds the process until the thread is done.
    this.worker.unref();
    this.worker.on('message', () => {
      if (!this.closing) this.autocheckpoint(BACKSTOP_PAGES);
    });
    this.worker.on('error', (error) => (this.failure = error));
    this.exited = new Promise<void>((resolve) =>
      this.worker.once('exit', (code) => {
        this.autocheckpoint(this.own);
        if (!this.closing) {
          const why = this.failure ? `failed: ${this.failure.message}` : `exited (code ${code})`;
          this.logger.warn(
            `SQLite checkpoints run on the main thread again: the checkpointer ${why}`,
          );
        }
        resolve();
      }),
    );
  }

  /**
   * Stops the thread once its checkpoint under way is done (within `CLOSE_WITHIN_MS`), closes
   * its connection and puts the service's connection's checkpoints back as they were. Call it
   * before that connection closes, so that the service's is the last and removes the log.
   */
  async close(): Promise<void> {
    if (!this.closing) {
      this.closing = true;
      this.worker.ref();
      this.worker.postMessage('close');
      const deadline = setTimeout(() => void this.worker.terminate(), CLOSE_WITHIN_MS);
      void this.exited.then(() => clearTimeout(deadline));
    }
    await this.exited;
  }

  private autocheckpoint(pages: number): void {
    try {
      this.connection.pragma(`wal_autocheckpoint = ${pages}`);
    } catch {
      // The connection is closed: nothing is left to checkpoint on it.
    }
  }
}
