import { randomUUID } from 'node:crypto';
import type { Response } from 'supertest';
import { ApiClient, InstanceBody } from './support/api';
import { startApp, TestApp } from './support/test-app';

/**
 * API.md section 5, Idempotency-Key: a repeat with the same key by the same user answers the first
 * response again, with the same status, and schedules nothing new.
 */

function expectError(res: Response, status: number, ...mentions: string[]): void {
  expect({ status: res.status, body: res.body }).toMatchObject({
    status,
    body: { statusCode: status },
  });
  expect(Object.keys(res.body).sort()).toEqual(['error', 'message', 'statusCode']);
  const text = Array.isArray(res.body.message)
    ? res.body.message.join(' ')
    : String(res.body.message);
  for (const mention of mentions) expect(text.toLowerCase()).toContain(mention.toLowerCase());
  expect(res.text).not.toMatch(/\bat [\w$.<>]+ \(|\.ts:\d+|QueryFailedError|SELECT|INSERT/);
}

const key = () => `key-${randomUUID()}`;

describe('Idempotency-Key', () => {
  let t: TestApp;
  let admin: ApiClient;
  let alice: ApiClient;
  let bob: ApiClient;

  const create = (client: ApiClient, body: object, k: string) =>
    client.post('/api/instances', body).set('Idempotency-Key', k);
  const act = (client: ApiClient, id: string, action: string, k: string, body?: object) =>
    (action === 'delete'
      ? client.delete(`/api/instances/${id}`)
      : client.post(`/api/instances/${id}/${action}`, body)
    ).set('Idempotency-Key', k);

  /** How many of alice's instances have this name (the name filter is a substring match). */
  async function named(client: ApiClient, name: string): Promise<InstanceBody[]> {
    const res = await client
      .get(`/api/instances?name=${encodeURIComponent(name)}&limit=500`)
      .expect(200);
    return res.body.items.filter((i: InstanceBody) => i.name === name);
  }

  async function opCounts(id: string): Promise<Record<string, number>> {
    const res = await admin.get(`/api/simulator/vms?instance_id=${id}`).expect(200);
    expect(res.body.items).toHaveLength(1);
    return res.body.items[0].op_counts;
  }

  beforeAll(async () => {
    t = await startApp();
    admin = new ApiClient(t.http, t.adminToken);
    alice = await admin.createUser('alice');
    bob = await admin.createUser('bob');
  });
  afterAll(() => t.close());

  it('answers a repeated create 202 with the same body and Location, and creates one instance', async () => {
    const k = key();
    const body = { name: 'idem-create', flavor: 'small' };
    const first = await create(alice, body, k).expect(202);
    const second = await create(alice, body, k);
    expect(second.status).toBe(202);
    expect(second.body).toEqual(first.body);
    expect(second.headers.location).toBe(first.headers.location);
    expect(first.headers.location).toBe(`/api/instances/${first.body.id}`);

    await alice.waitForState(first.body.id, 'online');
    // Still the first answer once the instance has moved on.
    const third = await create(alice, body, k).expect(202);
    expect(third.body).toEqual(first.body);
    expect(third.headers.location).toBe(first.headers.location);

    expect((await named(alice, 'idem-create')).map((i) => i.id)).toEqual([first.body.id]);
    const types = (await alice.events(first.body.id)).map((e) => e.type);
    expect(types.filter((type) => type === 'instance.provision.scheduled')).toHaveLength(1);
    expect(await opCounts(first.body.id)).toMatchObject({ provision: 1 });
  });

  it('answers a repeated stop 202 again, not 409, and schedules nothing new', async () => {
    const vm = await alice.online({ name: 'idem-stop' });
    const k = key();
    const first = await act(alice, vm.id, 'stop', k).expect(202);
    expect(first.body.state).toBe('stopping_scheduled');
    // A retry while the stop is still under way.
    const retry = await act(alice, vm.id, 'stop', k);
    expect(retry.status).toBe(202);
    expect(retry.body).toEqual(first.body);

    await alice.waitForState(vm.id, 'offline');
    const events = await alice.events(vm.id);
    expect(events.filter((e) => e.type === 'instance.stop.scheduled')).toHaveLength(1);

    const late = await act(alice, vm.id, 'stop', k);
    expect(late.status).toBe(202);
    expect(late.body).toEqual(first.body);
    expect(await alice.events(vm.id)).toEqual(events);
    expect((await alice.get(`/api/instances/${vm.id}`).expect(200)).body.state).toBe('offline');
    expect(await opCounts(vm.id)).toMatchObject({ stop: 1 });
  });

  it('does not run a repeated restart again, though the state would allow it', async () => {
    const vm = await alice.online({ name: 'idem-restart' });
    const k = key();
    const first = await act(alice, vm.id, 'restart', k).expect(202);
    await alice.waitForState(vm.id, 'online');
    const events = await alice.events(vm.id);

    const repeat = await act(alice, vm.id, 'restart', k);
    expect(repeat.status).toBe(202);
    expect(repeat.body).toEqual(first.body);
    const now = await alice.get(`/api/instances/${vm.id}`).expect(200);
    expect(now.body.state).toBe('online');
    expect(await alice.events(vm.id)).toEqual(events);
    expect(await opCounts(vm.id)).toMatchObject({ restart: 1 });

    // Without the key the same request is a new restart.
    await alice.post(`/api/instances/${vm.id}/restart`).expect(202);
    await alice.waitForState(vm.id, 'online');
    expect(await opCounts(vm.id)).toMatchObject({ restart: 2 });
  });

  it('replays a delete after the instance is gone', async () => {
    const vm = await alice.online({ name: 'idem-delete' });
    await alice.action(vm.id, 'stop');
    await alice.waitForState(vm.id, 'offline');
    const k = key();
    const first = await act(alice, vm.id, 'delete', k).expect(202);
    expect(first.body.state).toBe('deletion_scheduled');
    await alice.waitForState(vm.id, 'gone');
    const events = await alice.events(vm.id);

    const repeat = await act(alice, vm.id, 'delete', k);
    expect(repeat.status).toBe(202);
    expect(repeat.body).toEqual(first.body);
    expect(await alice.events(vm.id)).toEqual(events);
  });

  it("keeps one user's keys apart from another's", async () => {
    const k = key();
    const body = { name: 'idem-shared', flavor: 'small' };
    const mine = await create(alice, body, k).expect(202);
    const theirs = await create(bob, body, k);
    expect(theirs.status).toBe(202);
    expect(theirs.body.id).not.toBe(mine.body.id);
    expect(theirs.body.owner_id).not.toBe(mine.body.owner_id);

    // Another body under the same key is no conflict across users either.
    const other = await create(bob, { name: 'idem-shared-2', flavor: 'large' }, key());
    expect(other.status).toBe(202);
    const k2 = key();
    await create(alice, { name: 'idem-x', flavor: 'small' }, k2).expect(202);
    const bobsX = await create(bob, { name: 'idem-y', flavor: 'medium' }, k2);
    expect(bobsX.status).toBe(202);
    expect(bobsX.body).toMatchObject({ name: 'idem-y', flavor: 'medium' });

    // Each repeat answers its own user's first response.
    expect((await create(alice, body, k).expect(202)).body.id).toBe(mine.body.id);
    expect((await create(bob, body, k).expect(202)).body.id).toBe(theirs.body.id);
    expect((await named(alice, 'idem-shared')).map((i) => i.id)).toEqual([mine.body.id]);
    expect((await named(bob, 'idem-shared')).map((i) => i.id)).toEqual([theirs.body.id]);
  });

  it('answers 422 to the same key with a different body or route, and does nothing', async () => {
    const k = key();
    const first = await create(alice, { name: 'idem-body', flavor: 'small' }, k).expect(202);

    const otherBody = await create(alice, { name: 'idem-body', flavor: 'large' }, k);
    expectError(otherBody, 422, 'Idempotency-Key');
    const otherName = await create(alice, { name: 'idem-body-2', flavor: 'small' }, k);
    expectError(otherName, 422, 'Idempotency-Key');
    expect(await named(alice, 'idem-body-2')).toEqual([]);
    expect((await named(alice, 'idem-body')).map((i) => i.id)).toEqual([first.body.id]);

    // The key of a stop, sent with a restart.
    const vm = await alice.waitForState(first.body.id, 'online');
    const stopKey = key();
    await act(alice, vm.id, 'stop', stopKey).expect(202);
    await alice.waitForState(vm.id, 'offline');
    const events = await alice.events(vm.id);
    expectError(await act(alice, vm.id, 'start', stopKey), 422, 'Idempotency-Key');
    expect(await alice.events(vm.id)).toEqual(events);
    expect((await alice.get(`/api/instances/${vm.id}`).expect(200)).body.state).toBe('offline');
  });

  it('answers 400 to a key of 256 characters or an empty key, and does nothing', async () => {
    const long = await create(alice, { name: 'idem-long', flavor: 'small' }, 'k'.repeat(256));
    expectError(long, 400, 'Idempotency-Key');
    const empty = await create(alice, { name: 'idem-empty', flavor: 'small' }, '');
    expectError(empty, 400, 'Idempotency-Key');
    expect(await named(alice, 'idem-long')).toEqual([]);
    expect(await named(alice, 'idem-empty')).toEqual([]);

    const vm = await alice.online({ name: 'idem-key-action' });
    const events = await alice.events(vm.id);
    expectError(await act(alice, vm.id, 'stop', 'k'.repeat(256)), 400, 'Idempotency-Key');
    expectError(await act(alice, vm.id, 'stop', ''), 400, 'Idempotency-Key');
    expect(await alice.events(vm.id)).toEqual(events);
    expect((await alice.get(`/api/instances/${vm.id}`).expect(200)).body.state).toBe('online');

    // 255 characters is a key like any other.
    const k255 = 'k'.repeat(254) + randomUUID().slice(0, 1);
    const ok = await create(alice, { name: 'idem-255', flavor: 'small' }, k255).expect(202);
    expect(
      (await create(alice, { name: 'idem-255', flavor: 'small' }, k255).expect(202)).body.id,
    ).toBe(ok.body.id);
    await alice.waitForState(ok.body.id, 'online');
  });

  it('replays a 4xx answer with the same status, even once the request would succeed', async () => {
    const vm = await alice.online({ name: 'idem-409' });
    const k = key();
    const refused = await act(alice, vm.id, 'start', k);
    expectError(refused, 409, "'online'");

    const again = await act(alice, vm.id, 'start', k);
    expect(again.status).toBe(409);
    expect(again.body).toEqual(refused.body);

    await alice.action(vm.id, 'stop');
    await alice.waitForState(vm.id, 'offline');
    const events = await alice.events(vm.id);
    const replayed = await act(alice, vm.id, 'start', k);
    expect(replayed.status).toBe(409);
    expect(replayed.body).toEqual(refused.body);
    expect(await alice.events(vm.id)).toEqual(events);
    expect((await alice.get(`/api/instances/${vm.id}`).expect(200)).body.state).toBe('offline');

    // A new key is a new request.
    await act(alice, vm.id, 'start', key()).expect(202);
    await alice.waitForState(vm.id, 'online');
  });

  it('keeps no answer for an invalid body: the key then serves the corrected request', async () => {
    const k = key();
    const first = await create(alice, { name: '-bad-name', flavor: 'small' }, k);
    expectError(first, 400, 'name');
    const corrected = await create(alice, { name: 'good-name', flavor: 'small' }, k);
    expect(corrected.status).toBe(202);
    const again = await create(alice, { name: 'good-name', flavor: 'small' }, k);
    expect(again.status).toBe(202);
    expect(again.body.id).toBe(corrected.body.id);
  });

  it('checks the request before the key: an invalid repeat is a 400 and leaves the kept answer', async () => {
    const k = key();
    const first = await create(alice, { name: 'idem-order', flavor: 'small' }, k).expect(202);
    // The same key on a request that is itself invalid: its own 400, not the key's 422.
    expectError(await create(alice, { name: '-bad', flavor: 'small' }, k), 400, 'name');
    const vm = await alice.waitForState(first.body.id, 'online');
    expectError(await act(alice, 'not-a-uuid', 'stop', k), 400, 'uuid');
    // The kept answer still serves the first request's repeat.
    const again = await create(alice, { name: 'idem-order', flavor: 'small' }, k).expect(202);
    expect(again.body.id).toBe(vm.id);
    expect(again.headers.location).toBe(first.headers.location);
  });
});
