import { Logger } from '@nestjs/common';
import { Worker } from 'node:worker_threads';

/**
 * Pages in the write-ahead log past which the service's own connection checkpoints after a
 * commit (`wal_autocheckpoint`) while the checkpointer runs: a backstop that bounds the log
 * (about 16 MB of 4 KB pages), since only a writer can start the log over once its pages are all
 * in the database file. SQLite's default is 1,000.
 */
export const BACKSTOP_PAGES = 4000;

/** SQLite's own `wal_autocheckpoint`, put back if the checkpointer stops. */
const SQLITE_AUTOCHECKPOINT = 1000;

/** How soon the checkpointer looks again: soon while the log grows, seldom while it is still. */
const BUSY_EVERY_MS = 10;
const IDLE_EVERY_MS = 250;

/**
 * The checkpointer's thread. It opens a second connection to the database file and copies the
 * log's pages into it (`wal_checkpoint(PASSIVE)`: never waits for, nor blocks, the service's
 * reads and writes), with the fsyncs of log and file that a checkpoint makes.
 */
const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const Database = require(workerData.driver);
const db = new Database(workerData.file, { fileMustExist: true });
db.pragma('synchronous = NORMAL');
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
    throw error;
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
 * the service's one main thread, for 3–10 ms every hundred-odd commits under load. Here a
 * worker thread with its own connection makes those checkpoints as the log grows, and the
 * service's connection checkpoints only past `BACKSTOP_PAGES`, where the log's pages are
 * already in the file but for the last few milliseconds' worth, so that it can start over.
 *
 * If the thread cannot start or fails, the connection's checkpoints go back to SQLite's default
 * and the service runs on as it would without it.
 */
export class WalCheckpointer {
  private readonly logger = new Logger(WalCheckpointer.name);
  private readonly worker: Worker;
  private readonly exited: Promise<void>;
  private closing = false;

  /** `file`: the database file the connection opened (symbolic links resolved). */
  constructor(
    private readonly connection: CheckpointedConnection,
    file: string,
  ) {
    this.worker = new Worker(WORKER_SOURCE, {
      eval: true,
      workerData: {
        driver: require.resolve('better-sqlite3'),
        file,
        busyEveryMs: BUSY_EVERY_MS,
        idleEveryMs: IDLE_EVERY_MS,
      },
      // It allocates next to nothing; the process's heap flags are for the main thread.
      execArgv: [],
      resourceLimits: { maxOldGenerationSizeMb: 16, maxYoungGenerationSizeMb: 2 },
    });
    // The service's shutdown closes it; it never keeps a process alive by itself.
    this.worker.unref();
    this.worker.on('message', () => {
      if (!this.closing) this.autocheckpoint(BACKSTOP_PAGES);
    });
    this.worker.on('error', (error) => {
      this.logger.warn(
        `SQLite checkpoints run on the main thread again: the checkpointer failed: ${error.message}`,
      );
    });
    this.exited = new Promise<void>((resolve) =>
      this.worker.once('exit', () => {
        if (!this.closing) this.autocheckpoint(SQLITE_AUTOCHECKPOINT);
        resolve();
      }),
    );
  }

  /** Stops the thread and closes its connection; the service's connection is then the last. */
  async close(): Promise<void> {
    if (!this.closing) {
      this.closing = true;
      this.worker.postMessage('close');
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
