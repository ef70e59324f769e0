import Database from 'better-sqlite3';
import { fdatasync } from 'node:fs';
import { TransactionRunner } from '../src/database/transaction-runner';
import { Instance } from '../src/state-machine/instance.entity';
import { SYNC_FILE, type SyncFile } from '../src/database/wal-sync';
import type { Response } from 'supertest';
import { ApiClient } from './support/api';
import { until } from './support/load';
import { startApp, TestApp } from './support/test-app';

/**
 * On SQLite a commit's fsync runs off the event loop (WalSync). What a client is told must be on
 * disk all the same: with the fsync held back, a change is committed but not answered, and the
 * reads that meet it (list, instance, history, events) are not answered either; all answer once
 * the fsync is done.
 */
const onSqlite = process.env.TEST_DATABASE_URL?.startsWith('postgres') ? describe.skip : describe;

onSqlite('answers only what is on disk (SQLite)', () => {
  let t: TestApp;
  let alice: ApiClient;
  let observer: Database.Database;
  /** Once this holds, each fsync that starts waits for `release`. */
  let holdWhen: (() => boolean) | null = null;
  const parked: (() => void)[] = [];
  const gatedSync: SyncFile = (fd, done) => {
    if (holdWhen?.()) parked.push(() => fdatasync(fd, done));
    else fdatasync(fd, done);
  };
  const release = () => {
    holdWhen = null;
    parked.splice(0).forEach((sync) => sync());
  };
  /** Reads of instances and events that have reached their wait for the fsync. */
  let readsWaiting = 0;

  beforeAll(async () => {
    t = await startApp({}, (builder) => builder.overrideProvider(SYNC_FILE).useValue(gatedSync));
    const admin = new ApiClient(t.http, t.adminToken);
    alice = await admin.createUser('alice');
    observer = new Database(t.env.DATABASE_URL.slice('sqlite:'.length), { readonly: true });
    const tx = t.app.get(TransactionRunner);
    const durable = tx.durable.bind(tx);
    jest.spyOn(tx, 'durable').mockImplementation(() => {
      if (/TransactionRunner\.read/.test(new Error().stack ?? '')) readsWaiting++;
      return durable();
    });
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

  const waitFor = (check: () => boolean) =>
    until('the change to be committed and its readers to wait', async () => check(), 10_000);
  /** A little longer, for any answer that was wrongly sent to arrive. */
  const settle = () => new Promise((r) => setTimeout(r, 100));

  it('holds the 202 of a committed create, and a list that shows it, until the fsync is done', async () => {
    // Syncs of other commits (a relay pass, say) go through; the create's waits.
    holdWhen = () => committedNames().includes('held-1');
    const answered: string[] = [];
    const create = alice
      .post('/api/instances', { name: 'held-1', flavor: 'small' })
      .then((res) => (answered.push('create'), res));
    await waitFor(() => parked.length > 0);
    const before = readsWaiting;
    const list = alice.get('/api/instances').then((res) => (answered.push('list'), res));
    await waitFor(() => readsWaiting > before);
    await settle();
    expect(answered).toEqual([]);

    release();
    const [created, listed] = await Promise.all([create, list]);
    expect(created.status).toBe(202);
    expect(listed.status).toBe(200);
    expect(listed.body.items.map((i: { name: string }) => i.name)).toContain('held-1');
    await alice.waitForState(created.body.id, 'online');
  });

  it('holds reads of an instance, its history and the event log that meet a change not yet synced', async () => {
    const created = await alice.create({ name: 'held-2' });
    await alice.waitForState(created.id, 'online');
    const stateOf = () =>
      (
        observer.prepare('SELECT state FROM instances WHERE id = ?').get(created.id) as {
          state: string;
        }
      ).state;

    holdWhen = () => stateOf() === 'stopping_scheduled';
    const answered: string[] = [];
    const track = (name: string, req: PromiseLike<Response>) =>
      Promise.resolve(req).then((res) => (answered.push(name), res));
    const stop = track('stop', alice.post(`/api/instances/${created.id}/stop`));
    await waitFor(() => parked.length > 0);
    const before = readsWaiting;
    const reads = [
      track('get', alice.get(`/api/instances/${created.id}`)),
      track('history', alice.get(`/api/instances/${created.id}/transitions`)),
      track('events', alice.get(`/api/events?instance_id=${created.id}`)),
    ];
    await waitFor(() => readsWaiting >= before + 3);
    await settle();
    expect(answered).toEqual([]);

    release();
    expect((await stop).status).toBe(202);
    const [got, history, events] = await Promise.all(reads);
    expect(got.body.state).toBe('stopping_scheduled');
    expect(history.body.items.at(-1)).toMatchObject({ to: 'stopping_scheduled' });
    expect(events.body.items.at(-1)).toMatchObject({ state: 'stopping_scheduled' });
  });

  it("calls the backend for a job only once its operation's commit is synced", async () => {
    // The job is handed to the queue at COMMIT, while the create's fsync is held. With one
    // request alone the runner also holds the job's first write behind that fsync; under load
    // only begin's own wait does (transition.service.spec.ts covers that).
    holdWhen = () => committedNames().includes('held-3');
    const vmsOf = (name: string) =>
      (
        observer
          .prepare(
            'SELECT count(*) AS n FROM sim_vms v JOIN instances i ON i.id = v.instance_id WHERE i.name = ?',
          )
          .get(name) as { n: number }
      ).n;
    // A supertest request goes out once something waits on it.
    const create = Promise.resolve(
      alice.post('/api/instances', { name: 'held-3', flavor: 'small' }),
    );
    await waitFor(() => parked.length > 0);
    // Time for the job to start and its simulated 10 ms call to end, were it not held.
    await new Promise((r) => setTimeout(r, 300));
    expect(vmsOf('held-3')).toBe(0);

    release();
    const created = await create;
    expect(created.status).toBe(202);
    await alice.waitForState(created.body.id, 'online');
    expect(vmsOf('held-3')).toBe(1);
  });

  it('shows no change of a write transaction still open, nor of one rolled back', async () => {
    const created = await alice.create({ name: 'steady' });
    await alice.waitForState(created.id, 'online');
    const tx = t.app.get(TransactionRunner);
    let changed!: () => void;
    const changedNow = new Promise<void>((resolve) => (changed = resolve));
    let refuse!: () => void;
    const held = new Promise<void>((_, reject) => (refuse = () => reject(new Error('refused'))));
    // A transaction that renames the instance, then fails a check and is rolled back.
    const write = tx.run(async (em) => {
      await em.update(Instance, { id: created.id }, { name: 'phantom' });
      changed();
      await held;
    });
    await changedNow;
    const answered: string[] = [];
    const track = (name: string, req: PromiseLike<Response>) =>
      Promise.resolve(req).then((res) => (answered.push(name), res));
    const reads = [
      track('get', alice.get(`/api/instances/${created.id}`)),
      track('list', alice.get('/api/instances?name=phantom')),
    ];
    await settle();
    expect(answered).toEqual([]);

    refuse();
    await expect(write).rejects.toThrow('refused');
    const [got, listed] = await Promise.all(reads);
    expect(got.body.name).toBe('steady');
    expect(listed.body).toMatchObject({ items: [], total: 0 });
  });
});

onSqlite('when the fsync of the log fails (SQLite)', () => {
  const METRICS_TOKEN = 'metrics-token-0123456789';
  let t: TestApp;
  let alice: ApiClient;
  let failing = false;
  const failingSync: SyncFile = (fd, done) =>
    failing
      ? done(Object.assign(new Error('EIO: i/o error, fdatasync'), { code: 'EIO' }))
      : fdatasync(fd, done);

  beforeAll(async () => {
    t = await startApp({ METRICS_TOKEN }, (builder) =>
      builder.overrideProvider(SYNC_FILE).useValue(failingSync),
    );
    alice = await new ApiClient(t.http, t.adminToken).createUser('alice');
  });
  afterAll(() => t.close());

  it('answers no write as done, refuses later ones and reports the database down', async () => {
    await t.http.get('/api/health').expect(200);
    failing = true;
    const res = await alice.post('/api/instances', { name: 'unsure', flavor: 'small' });
    expect(res.status).toBe(500);
    expect(JSON.stringify(res.body)).not.toMatch(/EIO|fdatasync|at .*\.ts/);
    // No later write is applied only to be reported as failed.
    failing = false;
    expect((await alice.post('/api/instances', { name: 'later', flavor: 'small' })).status).toBe(
      500,
    );
    const health = await t.http.get('/api/health').expect(503);
    expect(health.body.error.database).toMatchObject({
      status: 'down',
      message: expect.stringMatching(/could not be made durable.*Restart the service/),
    });
    // Operators still read the gauges, which do not wait for the disk.
    const metrics = await t.http.get('/metrics').set('Authorization', `Bearer ${METRICS_TOKEN}`);
    expect(metrics.status).toBe(200);
    expect(metrics.text).toMatch(/^provisor_outbox_pending \d+$/m);
  });
});
