import { getQueueToken } from '@nestjs/bull';
import type { Queue } from 'bull';
import { Client } from 'pg';
import { OutboxRelay } from '../src/jobs/outbox-relay.service';
import { InstanceJobData, QueueName } from '../src/queues/queues';
import { ApiClient } from './support/api';
import { startApp, TestApp } from './support/test-app';

const onPostgres = process.env.TEST_DATABASE_URL?.startsWith('postgres') ? describe : describe.skip;

/**
 * Relays in several processes share one outbox: each claims rows FOR UPDATE SKIP LOCKED, so a
 * row another relay holds is neither sent twice nor waited for.
 */
onPostgres('outbox relays on PostgreSQL', () => {
  let t: TestApp;
  let db: Client;

  beforeAll(async () => {
    // No consumer and no timer: the test drives the relay by hand.
    t = await startApp({ APP_ROLE: 'api', RELAY_INTERVAL_MS: '3600000' });
    db = new Client({ connectionString: t.env.DATABASE_URL });
    await db.connect();
  });
  afterAll(async () => {
    await db?.end();
    await t?.close();
  });

  it('skips the rows another relay has locked, and sends each row once', async () => {
    const admin = new ApiClient(t.http, t.adminToken);
    for (let i = 0; i < 12; i++) await admin.create({ name: `claim-${i}` });
    // Every row due now, as after a lost hand-over.
    await db.query(`UPDATE operations SET dispatch_after = now() - interval '1 minute'`);
    const ids = (
      await db.query<{ id: string; instance_id: string; action: string; request_id: string }>(
        'SELECT id, instance_id, action, request_id FROM operations ORDER BY id',
      )
    ).rows;
    // The request path's hand-overs are gone, as after a Redis that restarted empty.
    const queue = t.app.get<Queue<InstanceJobData>>(getQueueToken(QueueName.InstanceOperations));
    await queue.empty();

    // Another relay, mid-pass, holds four of them.
    const other = new Client({ connectionString: t.env.DATABASE_URL });
    await other.connect();
    await other.query('BEGIN');
    await other.query('SELECT id FROM operations WHERE id = ANY($1) FOR UPDATE', [
      ids.slice(0, 4).map((r) => r.id),
    ]);

    const relay = t.app.get(OutboxRelay);
    const sent = await Promise.race([
      relay.tick(),
      new Promise<string>((r) => setTimeout(() => r('blocked on the locked rows'), 5_000)),
    ]);
    expect(sent).toBe(8);
    // Each claimed row went to Bull whole: its job is the row's action on the row's instance.
    for (const row of ids.slice(4)) {
      const job = await queue.getJob(row.id);
      expect({ name: job?.name, data: job?.data }).toMatchObject({
        name: row.action,
        data: { operationId: row.id, instanceId: row.instance_id, requestId: row.request_id },
      });
    }
    expect(await queue.getJob(ids[0].id)).toBeNull();
    // Claimed rows are not due again for a while: a second pass sends nothing.
    expect(await relay.tick()).toBe(0);

    await other.query('ROLLBACK');
    await other.end();
    expect(await relay.tick()).toBe(4);
    expect(await relay.tick()).toBe(0);
  });
});
