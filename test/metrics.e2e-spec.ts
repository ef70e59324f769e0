import type { AddressInfo } from 'node:net';
import { ApiClient } from './support/api';
import { until } from './support/load';
import { sendRaw } from './support/raw-http';
import { startApp, TestApp } from './support/test-app';

const METRICS_TOKEN = 'metrics-token-0123456789';

/** Reads one sample of a Prometheus text exposition (0 when absent). */
function sample(text: string, name: string, labels: Record<string, string> = {}): number {
  const wanted = Object.entries(labels).map(([k, v]) => `${k}="${v}"`);
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
    const labelPart = line.slice(name.length).split(' ')[0];
    if (wanted.every((w) => labelPart.includes(w))) return Number(line.split(' ').at(-1));
  }
  return 0;
}

describe('GET /metrics', () => {
  let t: TestApp;
  let admin: ApiClient;

  beforeAll(async () => {
    t = await startApp({ METRICS_TOKEN });
    admin = new ApiClient(t.http, t.adminToken);
  });
  afterAll(() => t.close());

  const scrape = async () =>
    (await t.http.get('/metrics').set('Authorization', `Bearer ${METRICS_TOKEN}`).expect(200)).text;

  it('needs METRICS_TOKEN when it is set, and no API token', async () => {
    expect((await t.http.get('/metrics')).status).toBe(401);
    expect(
      (await t.http.get('/metrics').set('Authorization', `Bearer ${t.adminToken}`)).status,
    ).toBe(401);
    const res = await t.http
      .get('/metrics')
      .set('Authorization', `Bearer ${METRICS_TOKEN}`)
      .expect(200);
    expect(res.headers['content-type']).toMatch(/^text\/plain/);
    expect(res.text).toContain('# TYPE provisor_transitions_total counter');
  });

  it('moves with the instances: transitions, job durations, instances by state, requests by route', async () => {
    const before = await scrape();
    const vm = await admin.online();
    await admin.action(vm.id, 'stop');
    await admin.waitForState(vm.id, 'offline');
    await admin.post(`/api/instances/${vm.id}/stop`).expect(409);
    const after = await scrape();

    const delta = (name: string, labels: Record<string, string>) =>
      sample(after, name, labels) - sample(before, name, labels);
    expect(delta('provisor_transitions_total', { action: 'provision', outcome: 'succeeded' })).toBe(
      1,
    );
    expect(delta('provisor_transitions_total', { action: 'stop', outcome: 'scheduled' })).toBe(1);
    expect(delta('provisor_transitions_total', { action: 'stop', outcome: 'succeeded' })).toBe(1);
    expect(
      delta('provisor_job_duration_seconds_count', { action: 'stop', outcome: 'succeeded' }),
    ).toBe(1);
    expect(delta('provisor_instances', { state: 'offline' })).toBe(1);
    expect(
      delta('provisor_http_requests_total', {
        method: 'POST',
        route: '/api/instances/:id/stop',
        status: '409',
      }),
    ).toBe(1);
    expect(sample(after, 'provisor_queue_jobs', { state: 'completed' })).toBeGreaterThanOrEqual(2);
    expect(sample(after, 'provisor_outbox_pending')).toBe(0);
  });

  it('counts an event stream by its route once it closes', async () => {
    await t.app.listen(0, '127.0.0.1');
    const { port } = t.app.getHttpServer().address() as AddressInfo;
    const streams = async () =>
      sample(await scrape(), 'provisor_http_requests_total', {
        route: '/api/events/stream',
        status: '200',
      });
    const before = await streams();
    // sendRaw reads a stream's head, then cuts the connection.
    const res = await sendRaw(port, {
      method: 'GET',
      path: '/api/events/stream',
      headers: [['Authorization', `Bearer ${t.adminToken}`]],
    });
    expect(res).toMatchObject({ status: 200, streamed: true });
    await until('the closed stream counted', async () => (await streams()) === before + 1);
  });

  it('counts a failed job as failed', async () => {
    const vm = await admin.online();
    await admin
      .post('/api/simulator/faults', { operation: 'restart', instance_id: vm.id, mode: 'error' })
      .expect(201);
    const before = await scrape();
    await admin.action(vm.id, 'restart');
    await admin.waitForState(vm.id, 'erred');
    const after = await scrape();
    const labels = { action: 'restart', outcome: 'failed' };
    expect(
      sample(after, 'provisor_job_duration_seconds_count', labels) -
        sample(before, 'provisor_job_duration_seconds_count', labels),
    ).toBe(1);
    expect(
      sample(after, 'provisor_transitions_total', labels) -
        sample(before, 'provisor_transitions_total', labels),
    ).toBe(1);
  });
});
