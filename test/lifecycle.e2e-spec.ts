import { ApiClient } from './support/api';
import { startApp, TestApp } from './support/test-app';

describe('instance lifecycle', () => {
  let t: TestApp;
  let admin: ApiClient;
  let alice: ApiClient;

  beforeAll(async () => {
    t = await startApp();
    admin = new ApiClient(t.http, t.adminToken);
    alice = await admin.createUser('alice');
  });
  afterAll(() => t.close());

  it('creates an instance: 202 in provisioning_scheduled with Location, then online with a backend_id', async () => {
    const res = await alice.post('/api/instances', { name: 'web-1', flavor: 'small' }).expect(202);
    expect(res.headers.location).toBe(`/api/instances/${res.body.id}`);
    expect(res.body).toMatchObject({
      name: 'web-1',
      flavor: 'small',
      image: 'debian-12',
      description: '',
      state: 'provisioning_scheduled',
      error_message: '',
      backend_id: '',
    });
    expect(res.body).not.toHaveProperty('error_traceback');
    const online = await alice.waitForState(res.body.id, 'online');
    expect(online.backend_id).toMatch(/^sim-/);
  });

  it('gives instances time-ordered UUIDs (version 7): later instances have larger ids', async () => {
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) {
      ids.push(
        (await alice.post('/api/instances', { name: `ordered-${i}`, flavor: 'small' }).expect(202))
          .body.id,
      );
    }
    for (const id of ids)
      expect(id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    // Version 7 orders by the millisecond and, within one, by a counter: in order either way.
    expect([...ids].sort()).toEqual(ids);
    await Promise.all(ids.map((id) => alice.waitForState(id, 'online')));
  });

  it('walks stop, start, restart, resize, pull and delete to their targets', async () => {
    const vm = await alice.online();
    expect((await alice.action(vm.id, 'stop')).state).toBe('stopping_scheduled');
    await alice.waitForState(vm.id, 'offline');
    expect((await alice.action(vm.id, 'resize', { flavor: 'large' })).state).toBe(
      'resizing_scheduled',
    );
    expect((await alice.waitForState(vm.id, 'offline')).flavor).toBe('large');
    expect((await alice.action(vm.id, 'start')).state).toBe('starting_scheduled');
    await alice.waitForState(vm.id, 'online');
    expect((await alice.action(vm.id, 'restart')).state).toBe('restarting_scheduled');
    await alice.waitForState(vm.id, 'online');
    expect((await alice.action(vm.id, 'pull')).state).toBe('pulling_scheduled');
    await alice.waitForState(vm.id, 'online');
    await alice.action(vm.id, 'stop');
    await alice.waitForState(vm.id, 'offline');
    expect((await alice.action(vm.id, 'delete')).state).toBe('deletion_scheduled');
    await alice.waitForState(vm.id, 'gone');

    const types = (await alice.events(vm.id)).map((e) => e.type);
    expect(types.slice(0, 3)).toEqual([
      'instance.provision.scheduled',
      'instance.provision.started',
      'instance.provision.succeeded',
    ]);
    expect(types.slice(-4)).toEqual([
      'instance.delete.scheduled',
      'instance.delete.started',
      'instance.delete.succeeded',
      'instance.deleted',
    ]);
  });
});
