import Database from 'better-sqlite3';
import { fdatasync } from 'node:fs';
import { SYNC_FILE, type SyncFile } from '../src/database/wal-sync';
import { ApiClient } from './support/api';
import { startApp, TestApp } from './support/test-app';

/**
 * On SQLite a commit's fsync runs off the event loop (WalSync). What a client is told must be on
 * disk all the same: with the fsync held back, a create is committed but not answered, and a read
 * that meets the new row is not answered either; both answer once the fsync is done.
 */
const onSqlite = process.env.TEST_DATABASE_URL?.startsWith('postgres') ? describe.skip : describe;

onSqlite('answers only what is on disk (SQLite)', () => {
  let t: TestApp;
  let alice: ApiClient;
  let observer: Database.Database;
  let held = false;
  const parked: (() => void)[] = [];
  const gatedSync: SyncFile = (fd, done) => {
    if (held) parked.push(() => fdatasync(fd, done));
    else fdatasync(fd, done);
  };
  const release = () => {
    held = false;
    parked.splice(0).forEach((sync) => sync());
  };

  beforeAll(async () => {
    t = await startApp({}, (builder) => builder.overrideProvider(SYNC_FILE).useValue(gatedSync));
    const admin = new ApiClient(t.http, t.adminToken);
    alice = await admin.createUser('alice');
    observer = new Database(t.env.DATABASE_URL.slice('sqlite:'.length), { readonly: true });
  });
  afterAll(async () => {
    release();
    observer.close();
    await t.close();
  });

  const committedNames = () =>
    (observer.prepare('SELECT name FROM instances').all() as { name: string }[]).map(
      (row) => row.name,
    );

  const waitFor = async (check: () => boolean) => {
    for (let i = 0; i < 200 && !check(); i++) await new Promise((r) => setTimeout(r, 10));
    expect(check()).toBe(true);
  };

  it('holds the 202 of a committed create, and a list that shows it, until the fsync is done', async () => {
    held = true;
    const answered: string[] = [];
    const create = alice
      .post('/api/instances', { name: 'held-1', flavor: 'small' })
      .then((res) => (answered.push('create'), res));
    await waitFor(() => committedNames().includes('held-1'));
    const list = alice.get('/api/instances').then((res) => (answered.push('list'), res));
    // Long enough for both to have answered, were either answered at commit.
    await new Promise((r) => setTimeout(r, 300));
    expect(answered).toEqual([]);
    expect(parked.length).toBeGreaterThan(0);

    release();
    const [created, listed] = await Promise.all([create, list]);
    expect(created.status).toBe(202);
    expect(listed.status).toBe(200);
    expect(listed.body.items.map((i: { name: string }) => i.name)).toContain('held-1');
    await alice.waitForState(created.body.id, 'online');
  });
});
