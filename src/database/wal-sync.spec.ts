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
    walSync.commit();
    const first = walSync.durable();
    expect(calls).toHaveLength(1);
    // Committed while the first sync runs: that sync may have missed its pages.
    walSync.commit();
    const second = walSync.durable();
    const third = (walSync.commit(), walSync.durable());
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

  it('syncs the file for real with fdatasync by default', async () => {
    const walSync = new WalSync(wal);
    walSync.commit();
    await expect(walSync.durable()).resolves.toBeUndefined();
    await walSync.close();
  });

  it('fails every waiting commit when a sync fails, and every later one', async () => {
    const { sync, calls } = heldSync();
    const walSync = new WalSync(wal, sync);
    walSync.commit();
    const waiting = [walSync.durable(), walSync.durable()];
    calls[0](Object.assign(new Error('EIO: i/o error'), { code: 'EIO' }));
    for (const promise of waiting) {
      await expect(promise).rejects.toThrow(/could not be made durable.*Restart the service/);
    }
    // Linux may call the next fsync clean although the failed one's pages are lost.
    walSync.commit();
    await expect(walSync.durable()).rejects.toThrow(/could not be made durable/);
    expect(calls).toHaveLength(1);
  });

  it('fails the commit when the log cannot be opened', async () => {
    const walSync = new WalSync(join(dir, 'missing-wal'));
    walSync.commit();
    await expect(walSync.durable()).rejects.toThrow(/could not be made durable/);
  });
});
