import { DataSource } from 'typeorm';
import { ApiClient, InstanceBody } from './support/api';
import { tallyAndRows } from './support/tally';
import { startApp, TestApp } from './support/test-app';

const STABLE = ['online', 'offline', 'erred'];

/**
 * Requests, workers and staff changing the same instances at once. Whatever order the database
 * lets them in, no change may land on a state it did not read: each instance's history stays one
 * unbroken chain (every transition starts from the state the one before it left, and the last
 * ends in the state shown), and the list totals still match the rows.
 */
describe('changes racing on the same instances', () => {
  let t: TestApp;
  let admin: ApiClient;
  let alice: ApiClient;

  beforeAll(async () => {
    t = await startApp({ SIM_LATENCY_MS: '0' });
    admin = new ApiClient(t.http, t.adminToken);
    alice = await admin.createUser('alice');
  });
  afterAll(() => t?.close());

  async function settled(id: string): Promise<InstanceBody> {
    const deadline = Date.now() + 15_000;
    for (;;) {
      const res = await alice.get(`/api/instances/${id}`).expect(200);
      if (STABLE.includes(res.body.state)) return res.body;
      if (Date.now() > deadline) throw new Error(`${id} still ${res.body.state}`);
      await new Promise((resolve) => setTimeout(resolve, 25));
    }
  }

  it('keeps every history an unbroken chain and the totals equal to the rows', async () => {
    const vms = await Promise.all([1, 2, 3].map((i) => alice.online({ name: `race-${i}` })));
    const statuses: number[] = [];
    for (let round = 0; round < 6; round++) {
      const requests = vms.flatMap(({ id }) => [
        ...['stop', 'stop', 'start', 'start', 'restart'].map((action) =>
          alice.post(`/api/instances/${id}/${action}`),
        ),
        alice.patch(`/api/instances/${id}`, { description: `round ${round}` }),
        round % 3 === 1
          ? admin.post(`/api/instances/${id}/set_erred`, { error_message: 'forced' })
          : admin.post(`/api/instances/${id}/set_ok`, { state: 'offline' }),
      ]);
      statuses.push(...(await Promise.all(requests)).map((res) => res.status));
      await Promise.all(vms.map(({ id }) => settled(id)));
    }
    // Real contention: some actions won, and some lost to a change that got in first.
    expect(statuses.filter((s) => s === 202).length).toBeGreaterThan(0);
    expect(statuses.filter((s) => s === 409).length).toBeGreaterThan(0);
    expect(statuses.every((s) => [200, 202, 409].includes(s))).toBe(true);

    for (const { id } of vms) {
      const shown = await settled(id);
      const { items } = (await alice.get(`/api/instances/${id}/transitions`).expect(200)).body as {
        items: { from: string | null; to: string }[];
      };
      expect(items[0].from).toBeNull();
      for (let i = 1; i < items.length; i++) {
        expect(`${i}: from ${items[i].from}`).toBe(`${i}: from ${items[i - 1].to}`);
      }
      expect(items[items.length - 1].to).toBe(shown.state);
    }

    const { tally, rows } = await tallyAndRows(t.app.get(DataSource));
    expect(tally).toEqual(rows);
  });
});
