import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type SyncFile, WalSync } from './wal-sync';

/** A sync function the test finishes by hand: each call waits in `calls` until it is ended. */
function heldSync(): { sync: SyncFile; calls: ((error?: Error) => void)[] } {
  const calls: ((error?: Error) => void)[] = [];
  return {
    sync: (_fd, done) => calls.push((error) => done(error ?? null)),
    calls,
  };
}

/** A COMMIT that has run. */
const commit = (walSync: WalSync) => walSync.commit().end();

/** Whether a promise has settled by the next turns of the event loop. */
async function settled(promise: Promise<unknown>): Promise<'resolved' | 'rejected' | 'pending'> {
  let state: 'resolved' | 'rejected' | 'pending' = 'pending';
  promise.then(
    () => (state = 'resolved'),
    () => (state = 'rejected'),
  );
  await new Promise((r) => setImmediate(r));
  return state;
}

describe('WalSync', () => {
  let dir: string;
  let wal: string;

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'provisor-wal-'));
    wal = join(dir, 'db.sqlite-wal');
    writeFileSync(wal, '');
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('is durable at once while nothing is committed, and syncs nothing', async () => {
    const { sync, calls } = heldSync();
    const walSync = new WalSync(wal, sync);
    expect(await settled(walSync.durable())).toBe('resolved');
    expect(calls).toHaveLength(0);
  });

  it('answers a commit only once a sync that began after it has finished', async () => {
    const { sync, calls } = heldSync();
    const walSync = new WalSync(wal, sync);
    commit(walSync);
    const first = walSync.durable();
    expect(calls).toHaveLength(1);
    // Committed while the first sync runs: that sync may have missed its pages.
    commit(walSync);
    const second = walSync.durable();
    const third = (commit(walSync), walSync.durable());
    calls[0]();
    expect(await settled(first)).toBe('resolved');
    expect(await settled(second)).toBe('pending');
    // One more sync covers both commits that came in meanwhile.
    expect(calls).toHaveLength(2);
    calls[1]();
    expect(await settled(second)).toBe('resolved');
    expect(await settled(third)).toBe('resolved');
    expect(calls).toHaveLength(2);
    expect(await settled(walSync.durable())).toBe('resolved');
  });

  it('lets a wait that can wait start its sync on the next turn, shared with the commits made by then', async () => {
    const { sync, calls } = heldSync();
    const walSync = new WalSync(wal, sync);
    commit(walSync);
    const step = walSync.durable({ soon: true });
    expect(calls).toHaveLength(0);
    // The job's next commit, before the event loop turns: one sync for both.
    commit(walSync);
    const outcome = walSync.durable();
    expect(calls).toHaveLength(1);
    calls[0]();
    expect(await settled(step)).toBe('resolved');
    expect(await settled(outcome)).toBe('resolved');
    expect(calls).toHaveLength(1);
    // With no other wait, the next turn starts the sync all the same.
    commit(walSync);
    const alone = walSync.durable({ soon: true });
    expect(calls).toHaveLength(1);
    await new Promise((r) => setImmediate(r));
    expect(calls).toHaveLength(2);
    calls[1]();
    expect(await settled(alone)).toBe('resolved');
  });

  it('makes a read during a COMMIT wait for that commit, and syncs only once it has run', async () => {
    const { sync, calls } = heldSync();
    const walSync = new WalSync(wal, sync);
    commit(walSync);
    const before = walSync.durable();
    // A COMMIT starts while the first sync runs; a read meets its rows before it returns.
    const running = walSync.commit();
    const read = walSync.durable();
    calls[0]();
    expect(await settled(before)).toBe('resolved');
    // No sync may count a COMMIT whose pages may not be written yet.
    expect(calls).toHaveLength(1);
    expect(await settled(read)).toBe('pending');
    running.end();
    expect(calls).toHaveLength(2);
    calls[1]();
    expect(await settled(read)).toBe('resolved');
  });

  it('counts each of two COMMITs running at once until its own end', async () => {
    const { sync, calls } = heldSync();
    const walSync = new WalSync(wal, sync);
    const first = walSync.commit();
    const second = walSync.commit();
    const read = walSync.durable();
    first.end();
    first.end(); // a second end of one COMMIT counts nothing
    calls[0]();
    expect(await settled(read)).toBe('pending');
    second.end();
    calls[1]();
    expect(await settled(read)).toBe('resolved');
  });

  it('syncs the file for real with fdatasync by default', async () => {
    const walSync = new WalSync(wal);
    commit(walSync);
    await expect(walSync.durable()).resolves.toBeUndefined();
    await walSync.close();
  });

  it('fails every waiting commit when a sync fails, and every later one', async () => {
    const { sync, calls } = heldSync();
    const walSync = new WalSync(wal, sync);
    commit(walSync);
    const waiting = [walSync.durable(), walSync.durable()];
    calls[0](Object.assign(new Error('EIO: i/o error'), { code: 'EIO' }));
    for (const promise of waiting) {
      await expect(promise).rejects.toThrow(/could not be made durable.*Restart the service/);
    }
    // Linux may call the next fsync clean although the failed one's pages are lost.
    commit(walSync);
    expect(walSync.failure?.message).toMatch(/could not be made durable/);
    await expect(walSync.durable()).rejects.toThrow(/could not be made durable/);
    expect(calls).toHaveLength(1);
  });

  it('fails the commit when the log cannot be opened', async () => {
    const walSync = new WalSync(join(dir, 'missing-wal'));
    commit(walSync);
    await expect(walSync.durable()).rejects.toThrow(/could not be made durable/);
  });
});
