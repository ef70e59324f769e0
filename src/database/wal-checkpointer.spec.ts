import { Logger } from '@nestjs/common';
import Database from 'better-sqlite3';
import { existsSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { until } from '../../test/support/load';
import { BACKSTOP_PAGES, WalCheckpointer } from './wal-checkpointer';

/**
 * On a real database file, with a connection set up as the service's: the log's pages reach the
 * database file by the checkpointer's thread, not by the connection's commits.
 */
describe('WalCheckpointer', () => {
  let dir: string;
  let file: string;
  let db: Database.Database;
  let started: WalCheckpointer[];

  /** A checkpointer of the file `db` opened, closed after the test whatever happens. */
  function checkpointer(path = file): WalCheckpointer {
    const made = new WalCheckpointer(db, path);
    started.push(made);
    return made;
  }

  /** A new database file, opened as the service opens its own. */
  function open(name: string): Database.Database {
    file = join(dir, name);
    const connection = new Database(file);
    connection.pragma('journal_mode = WAL');
    connection.pragma('synchronous = NORMAL');
    connection.exec('CREATE TABLE items (id INTEGER PRIMARY KEY, body TEXT)');
    return connection;
  }

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'provisor-ckpt-'));
    db = open('db.sqlite');
    started = [];
  });
  afterEach(async () => {
    await Promise.all(started.map((made) => made.close()));
    if (db.open) db.close();
    rmSync(dir, { recursive: true, force: true });
    jest.restoreAllMocks();
  });

  const autocheckpoint = () => db.pragma('wal_autocheckpoint', { simple: true });

  /** About `pages` pages of the log, in transactions of ten rows of most of a page each. */
  function write(pages: number): void {
    const insert = db.prepare('INSERT INTO items (body) VALUES (?)');
    const ten = db.transaction(() => {
      for (let i = 0; i < 10; i++) insert.run('x'.repeat(3000));
    });
    for (let i = 0; i < pages / 10; i++) ten();
  }

  it('copies the log into the database file while the connection only commits', async () => {
    const emptySize = statSync(file).size;
    const running = checkpointer();
    // Once its thread runs, the connection checkpoints only past the backstop.
    await until('the checkpointer running', async () => autocheckpoint() === BACKSTOP_PAGES);

    write(2000);
    // Fewer pages than the backstop: nothing but the checkpointer copies them.
    await until('the pages in the file', async () => statSync(file).size >= 2000 * 4096 * 0.9);
    await running.close();

    // Without it, the same commits leave every page in the log.
    db.close();
    db = open('control.sqlite');
    db.pragma(`wal_autocheckpoint = ${BACKSTOP_PAGES}`);
    write(2000);
    await new Promise((r) => setTimeout(r, 100));
    expect(statSync(file).size).toBe(emptySize);
  });

  it("stops its thread when closed and puts the connection's own checkpoints back", async () => {
    db.pragma('wal_autocheckpoint = 500');
    const running = checkpointer();
    await until('the checkpointer running', async () => autocheckpoint() === BACKSTOP_PAGES);
    write(100);
    await running.close();
    expect(autocheckpoint()).toBe(500);
    // The service's connection is now the last: closing it checkpoints and removes the log.
    db.close();
    expect(existsSync(`${file}-wal`)).toBe(false);
    const reader = new Database(file, { readonly: true });
    expect(reader.prepare('SELECT count(*) FROM items').pluck().get()).toBe(100);
    reader.close();
  });

  it('closes at once when asked before its thread is ready', async () => {
    const running = checkpointer();
    await running.close();
    expect(autocheckpoint()).toBe(1000);
  });

  it('says so when its thread fails, and leaves the connection as it was', async () => {
    const warn = jest.spyOn(Logger.prototype, 'warn').mockImplementation(() => undefined);
    db.pragma('wal_autocheckpoint = 500');
    // A file its connection cannot open: the thread fails as it starts.
    const failing = checkpointer(join(dir, 'missing.sqlite'));
    await until('a warning', async () => warn.mock.calls.length > 0);
    expect(warn).toHaveBeenCalledWith(
      expect.stringMatching(/main thread again: the checkpointer failed: unable to open/),
    );
    await failing.close();
    expect(autocheckpoint()).toBe(500);
  });

  it('answers null, with a warning, when it cannot start; the service runs on without it', () => {
    const warn = jest.spyOn(Logger.prototype, 'warn').mockImplementation(() => undefined);
    db.close();
    expect(WalCheckpointer.start(db, file)).toBeNull();
    expect(warn).toHaveBeenCalledWith(expect.stringMatching(/checkpointer did not start/));
  });
});
