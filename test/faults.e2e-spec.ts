import { ApiClient, InstanceBody } from './support/api';
import { startApp, TestApp } from './support/test-app';

/**
 * Failures, as a user meets them: the simulated cloud's fault injection (API.md section 8) drives
 * the failure paths of the state machine (section 4), and the staff tools that fix records.
 *
 * One app for the file, so one configuration: JOB_TIMEOUT_MS is short for the `hang` cases, and
 * each simulated operation takes SIM_LATENCY_MS, long enough that an operation in progress can be
 * caught in the act (a staff override during a delete) yet short enough to keep the file quick.
 */
const JOB_TIMEOUT_MS = 1500;
const SIM_LATENCY_MS = 200;

/** API.md section 4: the states each action is allowed from, in the table's order. */
const ALLOWED_FROM: Record<string, string[]> = {
  start: ['offline'],
  stop: ['online'],
  restart: ['online'],
  resize: ['offline'],
  delete: ['offline', 'erred'],
  pull: ['online', 'offline', 'erred'],
};
const SCHEDULED: Record<string, string> = {
  start: 'starting_scheduled',
  stop: 'stopping_scheduled',
  restart: 'restarting_scheduled',
  resize: 'resizing_scheduled',
  delete: 'deletion_scheduled',
  pull: 'pulling_scheduled',
};
const ACTIONS = Object.keys(ALLOWED_FROM);
const STABLE = ['online', 'offline', 'erred'];
const BODY: Record<string, object | undefined> = { resize: { flavor: 'medium' } };

interface Fault {
  id: string;
  operation: string;
  instance_id: string | null;
  mode: string;
  message: string;
  times: number;
}

interface SimVm {
  backend_id: string;
  instance_id: string;
  state: string;
  flavor: string;
  op_counts: Record<string, number>;
}

interface EventItem {
  id: number;
  type: string;
  instance_id: string;
  state: string;
  error_message: string;
  at: string;
}

interface TransitionItem {
  from: string | null;
  to: string;
  action: string;
  at: string;
  error_message: string;
}

describe('failures, fault injection and staff overrides', () => {
  let t: TestApp;
  let admin: ApiClient;
  let alice: ApiClient;

  beforeAll(async () => {
    t = await startApp({
      JOB_TIMEOUT_MS: String(JOB_TIMEOUT_MS),
      SIM_LATENCY_MS: String(SIM_LATENCY_MS),
    });
    admin = new ApiClient(t.http, t.adminToken);
    alice = await admin.createUser('alice');
  });
  afterAll(() => t.close());

  // A fault a test left armed must not hit the next test's instances.
  afterEach(async () => {
    for (const fault of await listFaults()) await admin.delete(`/api/simulator/faults/${fault.id}`);
  });

  // ---- helpers ------------------------------------------------------------------------------

  async function arm(body: Record<string, unknown>): Promise<Fault> {
    const res = await admin.post('/api/simulator/faults', body);
    expect(res.status).toBe(201);
    return res.body;
  }

  async function listFaults(): Promise<Fault[]> {
    const res = await admin.get('/api/simulator/faults').expect(200);
    return res.body.items;
  }

  async function simVm(instanceId: string): Promise<SimVm> {
    const res = await admin.get(`/api/simulator/vms?instance_id=${instanceId}`).expect(200);
    expect(res.body.items).toHaveLength(1);
    return res.body.items[0];
  }

  async function waitForVm(instanceId: string, state: string): Promise<SimVm> {
    const deadline = Date.now() + 10_000;
    let last = '';
    while (Date.now() < deadline) {
      const vm = await simVm(instanceId);
      if (vm.state === state) return vm;
      last = vm.state;
      await new Promise((r) => setTimeout(r, 25));
    }
    throw new Error(`simulated VM of ${instanceId} did not reach '${state}'; last seen: ${last}`);
  }

  async function get(client: ApiClient, id: string): Promise<InstanceBody> {
    const res = await client.get(`/api/instances/${id}`).expect(200);
    return res.body;
  }

  async function events(client: ApiClient, id: string): Promise<EventItem[]> {
    return (await client.events(id)) as EventItem[];
  }

  async function transitions(client: ApiClient, id: string): Promise<TransitionItem[]> {
    const res = await client.get(`/api/instances/${id}/transitions`).expect(200);
    return res.body.items;
  }

  async function offline(client: ApiClient, body: object = {}): Promise<InstanceBody> {
    const vm = await client.online(body);
    await client.action(vm.id, 'stop');
    return client.waitForState(vm.id, 'offline');
  }

  /** Polls until the instance is in a state no operation owns (or gone). */
  async function settle(client: ApiClient, id: string): Promise<string> {
    const deadline = Date.now() + 15_000;
    while (Date.now() < deadline) {
      const res = await client.get(`/api/instances/${id}`);
      if (res.status === 404) return 'gone';
      if (['online', 'offline', 'erred'].includes(res.body.state)) return res.body.state;
      await new Promise((r) => setTimeout(r, 25));
    }
    throw new Error(`instance ${id} did not settle`);
  }

  function conflictMessage(action: string, state: string): string {
    return `Cannot ${action} instance in state '${state}'; allowed from: ${ALLOWED_FROM[action].join(', ')}`;
  }

  function request(client: ApiClient, id: string, action: string) {
    return action === 'delete'
      ? client.delete(`/api/instances/${id}`)
      : client.post(`/api/instances/${id}/${action}`, BODY[action]);
  }

  // ---- the faults API -----------------------------------------------------------------------

  describe('the faults API', () => {
    it('arms a fault (201 with its fields, times 1 by default), lists it, disarms it (204), then 404', async () => {
      const fault = await arm({ operation: 'start', mode: 'error', message: 'host unreachable' });
      expect(fault).toMatchObject({
        id: expect.any(String),
        operation: 'start',
        instance_id: null,
        mode: 'error',
        message: 'host unreachable',
        times: 1,
      });
      expect((await listFaults()).map((f) => f.id)).toContain(fault.id);

      await admin.delete(`/api/simulator/faults/${fault.id}`).expect(204);
      expect((await listFaults()).map((f) => f.id)).not.toContain(fault.id);
      await admin.delete(`/api/simulator/faults/${fault.id}`).expect(404);
    });

    it('a disarmed fault hits nothing', async () => {
      const vm = await offline(alice);
      const fault = await arm({ operation: 'start', instance_id: vm.id, mode: 'error' });
      await admin.delete(`/api/simulator/faults/${fault.id}`).expect(204);
      await alice.action(vm.id, 'start');
      expect((await alice.waitForState(vm.id, 'online')).error_message).toBe('');
    });

    it.each([
      ['an unknown operation', { operation: 'reboot', mode: 'error' }],
      ['a missing operation', { mode: 'error' }],
      ['an unknown mode', { operation: 'start', mode: 'explode' }],
      ['a missing mode', { operation: 'start' }],
      ['times 0', { operation: 'start', mode: 'error', times: 0 }],
      ['negative times', { operation: 'start', mode: 'error', times: -1 }],
      ['fractional times', { operation: 'start', mode: 'error', times: 1.5 }],
      ['times as a string', { operation: 'start', mode: 'error', times: 'two' }],
      [
        'an instance_id that is not a UUID',
        { operation: 'start', mode: 'error', instance_id: 'web-1' },
      ],
      ['an unknown field', { operation: 'start', mode: 'error', severity: 'high' }],
    ])('answers 400 to %s, and arms nothing', async (_what, body) => {
      const before = await listFaults();
      const res = await admin.post('/api/simulator/faults', body);
      expect(res.status).toBe(400);
      expect(res.body).toMatchObject({ statusCode: 400, error: 'Bad Request' });
      expect(await listFaults()).toEqual(before);
    });

    it('is staff only: a non-staff user gets 403', async () => {
      await alice.post('/api/simulator/faults', { operation: 'start', mode: 'error' }).expect(403);
      await alice.get('/api/simulator/faults').expect(403);
    });
  });

  // ---- failure modes ------------------------------------------------------------------------

  it('error on start: starting_scheduled -> starting -> erred with the message; events; the fault is used up', async () => {
    const vm = await offline(alice);
    const fault = await arm({
      operation: 'start',
      instance_id: vm.id,
      mode: 'error',
      message: 'host unreachable',
    });

    expect((await alice.action(vm.id, 'start')).state).toBe('starting_scheduled');
    const erred = await alice.waitForState(vm.id, 'erred');
    expect(erred.error_message).toBe('start failed: simulated backend error: host unreachable');

    const history = await transitions(alice, vm.id);
    expect(history.slice(-3).map((h) => [h.from, h.to, h.action])).toEqual([
      ['offline', 'starting_scheduled', 'start'],
      ['starting_scheduled', 'starting', 'start'],
      ['starting', 'erred', 'start'],
    ]);

    const evs = await events(alice, vm.id);
    expect(evs.slice(-3).map((e) => e.type)).toEqual([
      'instance.start.scheduled',
      'instance.start.started',
      'instance.start.failed',
    ]);
    expect(evs[evs.length - 1]).toMatchObject({
      state: 'erred',
      error_message: 'start failed: simulated backend error: host unreachable',
    });

    expect((await listFaults()).map((f) => f.id)).not.toContain(fault.id);
    // The VM was never started.
    expect((await simVm(vm.id)).state).toBe('offline');
  });

  it('transient on stop, times 2: retried, the instance ends offline and the VM was stopped once', async () => {
    const vm = await alice.online();
    const fault = await arm({
      operation: 'stop',
      instance_id: vm.id,
      mode: 'transient',
      message: 'busy host',
      times: 2,
    });

    await alice.action(vm.id, 'stop');
    const done = await alice.waitForState(vm.id, 'offline');
    expect(done.error_message).toBe('');
    expect((await simVm(vm.id)).op_counts.stop).toBe(1);
    expect((await listFaults()).map((f) => f.id)).not.toContain(fault.id);

    // It stayed in progress through the retries: one start, no failure, one success.
    const types = (await events(alice, vm.id))
      .map((e) => e.type)
      .filter((type) => type.startsWith('instance.stop.'));
    expect(types).toEqual([
      'instance.stop.scheduled',
      'instance.stop.started',
      'instance.stop.succeeded',
    ]);
  });

  it('transient on stop, times 10: erred after at least 3 attempts, with the fault message', async () => {
    const vm = await alice.online();
    const fault = await arm({
      operation: 'stop',
      instance_id: vm.id,
      mode: 'transient',
      message: 'flaky network',
      times: 10,
    });

    await alice.action(vm.id, 'stop');
    const erred = await alice.waitForState(vm.id, 'erred');
    expect(erred.error_message).toContain('flaky network');
    expect(erred.error_message).toMatch(/^stop failed: /);

    const left = (await listFaults()).find((f) => f.id === fault.id);
    expect(left).toBeDefined();
    expect(left!.times).toBeLessThanOrEqual(7);
    const vmNow = await simVm(vm.id);
    expect(vmNow.state).toBe('online');
    expect(vmNow.op_counts.stop ?? 0).toBe(0);
    expect(
      (await events(alice, vm.id)).filter((e) => e.type === 'instance.stop.failed'),
    ).toHaveLength(1);
  });

  it(`hang on restart: after JOB_TIMEOUT_MS (${JOB_TIMEOUT_MS} ms) the instance is erred and the message says "timed out"`, async () => {
    const vm = await alice.online();
    await arm({ operation: 'restart', instance_id: vm.id, mode: 'hang' });

    const started = Date.now();
    await alice.action(vm.id, 'restart');
    const erred = await alice.waitForState(vm.id, 'erred');
    expect(Date.now() - started).toBeGreaterThanOrEqual(JOB_TIMEOUT_MS - 100);
    expect(erred.error_message).toContain('timed out');
    expect(erred.error_message).toMatch(/^restart failed: /);
    expect((await simVm(vm.id)).op_counts.restart ?? 0).toBe(0);
    expect(await listFaults()).toEqual([]);
  });

  it('a fault with instance_id hits only that instance; one without hits any instance', async () => {
    const [a, b] = await Promise.all([
      offline(alice, { name: 'target-a' }),
      offline(alice, { name: 'bystander-b' }),
    ]);

    const onlyA = await arm({
      operation: 'start',
      instance_id: a.id,
      mode: 'error',
      message: 'only a',
    });
    expect(onlyA.instance_id).toBe(a.id);
    await alice.action(b.id, 'start');
    expect((await alice.waitForState(b.id, 'online')).error_message).toBe('');
    expect((await listFaults()).find((f) => f.id === onlyA.id)?.times).toBe(1);

    await alice.action(a.id, 'start');
    expect((await alice.waitForState(a.id, 'erred')).error_message).toBe(
      'start failed: simulated backend error: only a',
    );

    const anyone = await arm({ operation: 'stop', mode: 'error', message: 'anyone' });
    expect(anyone.instance_id).toBeNull();
    await alice.action(b.id, 'stop');
    expect((await alice.waitForState(b.id, 'erred')).error_message).toBe(
      'stop failed: simulated backend error: anyone',
    );
    expect(await listFaults()).toEqual([]);
  });

  // ---- leaving erred: pull --------------------------------------------------------------------

  describe('pull', () => {
    it('cleans a failure: erred -> pull -> online (what the backend reports), error_message cleared', async () => {
      const vm = await alice.online();
      await arm({
        operation: 'restart',
        instance_id: vm.id,
        mode: 'error',
        message: 'kernel panic',
      });
      await alice.action(vm.id, 'restart');
      expect((await alice.waitForState(vm.id, 'erred')).error_message).toContain('kernel panic');

      const accepted = await alice.action(vm.id, 'pull');
      expect(accepted).toMatchObject({ state: 'pulling_scheduled', error_message: '' });
      const pulled = await alice.waitForState(vm.id, 'online');
      expect(pulled.error_message).toBe('');
      expect((await transitions(alice, vm.id)).at(-1)).toMatchObject({
        to: 'online',
        action: 'pull',
        error_message: '',
      });
    });

    it("reports the backend's real state: a stopped VM set erred by staff pulls to offline", async () => {
      const vm = await offline(alice);
      const erred = await admin
        .post(`/api/instances/${vm.id}/set_erred`, { error_message: 'operator unsure' })
        .expect(200);
      expect(erred.body).toMatchObject({ state: 'erred', error_message: 'operator unsure' });

      await alice.action(vm.id, 'pull');
      const pulled = await alice.waitForState(vm.id, 'offline');
      expect(pulled.error_message).toBe('');
    });

    it('of a VM the backend no longer knows: erred with "Does not exist at backend.", then it can be deleted', async () => {
      const vm = await offline(alice);
      // The backend deletes the VM while staff force the record back: the delete's result is
      // dropped (the operation no longer owns the instance) and the record outlives its VM.
      await alice.action(vm.id, 'delete');
      await alice.waitForState(vm.id, 'deleting');
      await admin.post(`/api/instances/${vm.id}/set_ok`, { state: 'offline' }).expect(200);
      await waitForVm(vm.id, 'deleted');
      expect((await get(alice, vm.id)).state).toBe('offline');

      await alice.action(vm.id, 'pull');
      const erred = await alice.waitForState(vm.id, 'erred');
      expect(erred.error_message).toBe('Does not exist at backend.');

      expect((await alice.action(vm.id, 'delete')).state).toBe('deletion_scheduled');
      await alice.waitForState(vm.id, 'gone');
      await alice.get(`/api/instances/${vm.id}`).expect(404);
    });

    it('of an instance that never got a backend_id is 400, and changes nothing', async () => {
      await arm({ operation: 'provision', mode: 'error', message: 'no capacity' });
      const created = await alice.create({ name: 'never-made' });
      const erred = await alice.waitForState(created.id, 'erred');
      expect(erred.backend_id).toBe('');
      expect(erred.error_message).toBe('provision failed: simulated backend error: no capacity');
      const eventsBefore = await events(alice, created.id);

      const res = await alice.post(`/api/instances/${created.id}/pull`);
      expect(res.status).toBe(400);
      expect(res.body).toMatchObject({
        statusCode: 400,
        error: 'Bad Request',
        message: expect.any(String),
      });
      expect(await get(alice, created.id)).toEqual(erred);
      expect(await events(alice, created.id)).toEqual(eventsBefore);
    });
  });

  // ---- delete failures ----------------------------------------------------------------------

  describe('delete', () => {
    it('from erred is forced: a failing backend delete still removes the record; events show failed then deleted', async () => {
      const vm = await alice.online();
      await arm({ operation: 'restart', instance_id: vm.id, mode: 'error' });
      await alice.action(vm.id, 'restart');
      await alice.waitForState(vm.id, 'erred');
      await arm({ operation: 'delete', instance_id: vm.id, mode: 'error', message: 'disk locked' });

      const accepted = await alice.action(vm.id, 'delete');
      expect(accepted).toMatchObject({ state: 'deletion_scheduled', error_message: '' });
      await alice.waitForState(vm.id, 'gone');
      await alice.get(`/api/instances/${vm.id}`).expect(404);

      // Still listable, by its owner, after the instance is gone.
      const evs = await events(alice, vm.id);
      expect(evs.slice(-4).map((e) => e.type)).toEqual([
        'instance.delete.scheduled',
        'instance.delete.started',
        'instance.delete.failed',
        'instance.deleted',
      ]);
      expect(evs.at(-2)!.error_message).toBe('delete failed: simulated backend error: disk locked');
      expect(evs.at(-1)!.instance_id).toBe(vm.id);
    });

    it('from erred removes an instance the backend never had', async () => {
      await arm({ operation: 'provision', mode: 'error' });
      const created = await alice.create({ name: 'ghost' });
      await alice.waitForState(created.id, 'erred');
      await alice.action(created.id, 'delete');
      await alice.waitForState(created.id, 'gone');
      // API.md section 4: the backend never had the VM, so the delete failed, and was forced.
      expect((await events(alice, created.id)).slice(-2)).toMatchObject([
        { type: 'instance.delete.failed', error_message: 'Does not exist at backend.' },
        { type: 'instance.deleted' },
      ]);
    });

    it('from offline is not forced: a failing backend delete leaves the instance erred, not removed', async () => {
      const vm = await offline(alice);
      await arm({ operation: 'delete', instance_id: vm.id, mode: 'error', message: 'disk locked' });

      await alice.action(vm.id, 'delete');
      const erred = await alice.waitForState(vm.id, 'erred');
      expect(erred.error_message).toBe('delete failed: simulated backend error: disk locked');
      await alice.get(`/api/instances/${vm.id}`).expect(200);
      expect((await simVm(vm.id)).state).toBe('offline');
      const evs = await events(alice, vm.id);
      expect(evs.at(-1)).toMatchObject({ type: 'instance.delete.failed', state: 'erred' });
      expect(evs.map((e) => e.type)).not.toContain('instance.deleted');
    });
  });

  // ---- staff overrides ----------------------------------------------------------------------

  describe('staff overrides', () => {
    it('set_erred forces erred with the message from online, offline and an in-progress state', async () => {
      const vm = await alice.online();
      const fromOnline = await admin
        .post(`/api/instances/${vm.id}/set_erred`, { error_message: 'host lost' })
        .expect(200);
      expect(fromOnline.body).toMatchObject({
        id: vm.id,
        state: 'erred',
        error_message: 'host lost',
      });
      expect(await get(alice, vm.id)).toMatchObject({ state: 'erred', error_message: 'host lost' });

      const fixed = await admin
        .post(`/api/instances/${vm.id}/set_ok`, { state: 'offline' })
        .expect(200);
      expect(fixed.body).toMatchObject({ state: 'offline', error_message: '' });
      expect(await get(alice, vm.id)).toMatchObject({ state: 'offline', error_message: '' });

      await admin.post(`/api/instances/${vm.id}/set_erred`, { error_message: 'again' }).expect(200);
      await admin.post(`/api/instances/${vm.id}/set_ok`, { state: 'online' }).expect(200);

      // Held in progress by a hanging backend.
      await arm({ operation: 'restart', instance_id: vm.id, mode: 'hang' });
      await alice.action(vm.id, 'restart');
      await alice.waitForState(vm.id, 'restarting');
      const fromBusy = await admin
        .post(`/api/instances/${vm.id}/set_erred`, { error_message: 'stuck' })
        .expect(200);
      expect(fromBusy.body).toMatchObject({ state: 'erred', error_message: 'stuck' });
      expect(await get(alice, vm.id)).toMatchObject({ state: 'erred', error_message: 'stuck' });

      const history = await transitions(alice, vm.id);
      expect(history.at(-1)).toMatchObject({
        from: 'restarting',
        to: 'erred',
        action: 'set_erred',
        error_message: 'stuck',
      });
    });

    it('set_ok answers 400 to a state other than online or offline', async () => {
      const vm = await alice.online();
      await admin.post(`/api/instances/${vm.id}/set_ok`, { state: 'erred' }).expect(400);
      await admin.post(`/api/instances/${vm.id}/set_ok`, {}).expect(400);
      expect((await get(alice, vm.id)).state).toBe('online');
    });

    it('unlink removes the record (204, then 404) and leaves the VM running at the backend', async () => {
      const vm = await alice.online();
      await admin.post(`/api/instances/${vm.id}/unlink`).expect(204);
      await alice.get(`/api/instances/${vm.id}`).expect(404);
      await admin.get(`/api/instances/${vm.id}`).expect(404);
      const backend = await simVm(vm.id);
      expect(backend).toMatchObject({ backend_id: vm.backend_id, state: 'online' });
      expect(backend.op_counts.delete ?? 0).toBe(0);
    });

    it('are staff only: 403 for the owner, before the body or the id is looked at', async () => {
      const vm = await alice.online();
      await alice.post(`/api/instances/${vm.id}/set_erred`, { error_message: 'mine' }).expect(403);
      await alice.post(`/api/instances/${vm.id}/set_ok`, { state: 'offline' }).expect(403);
      await alice.post(`/api/instances/${vm.id}/unlink`).expect(403);
      await alice.post(`/api/instances/${vm.id}/set_ok`, { state: 'bogus' }).expect(403);
      await alice.post('/api/instances/00000000-0000-4000-8000-000000000000/unlink').expect(403);
      await alice.post('/api/instances/not-a-uuid/set_erred', {}).expect(403);
      expect(await get(alice, vm.id)).toEqual(vm);
    });
  });

  // ---- history ------------------------------------------------------------------------------

  it('GET /transitions lists the history oldest first, from creation, with failures and their messages', async () => {
    const vm = await alice.online();
    await alice.action(vm.id, 'stop');
    await alice.waitForState(vm.id, 'offline');
    await arm({ operation: 'start', instance_id: vm.id, mode: 'error', message: 'no power' });
    await alice.action(vm.id, 'start');
    await alice.waitForState(vm.id, 'erred');

    const items = await transitions(alice, vm.id);
    for (const item of items) {
      expect(Object.keys(item).sort()).toEqual(['action', 'at', 'error_message', 'from', 'to']);
      expect(new Date(item.at).toISOString()).toBe(item.at);
    }
    expect(items.map((i) => [i.from, i.to, i.action])).toEqual([
      [null, 'provisioning_scheduled', 'provision'],
      ['provisioning_scheduled', 'provisioning', 'provision'],
      ['provisioning', 'online', 'provision'],
      ['online', 'stopping_scheduled', 'stop'],
      ['stopping_scheduled', 'stopping', 'stop'],
      ['stopping', 'offline', 'stop'],
      ['offline', 'starting_scheduled', 'start'],
      ['starting_scheduled', 'starting', 'start'],
      ['starting', 'erred', 'start'],
    ]);
    const times = items.map((i) => Date.parse(i.at));
    expect([...times].sort((x, y) => x - y)).toEqual(times);
    expect(items.slice(0, -1).every((i) => i.error_message === '')).toBe(true);
    expect(items.at(-1)!.error_message).toBe('start failed: simulated backend error: no power');

    await admin.get(`/api/instances/${vm.id}/transitions`).expect(200);
    const bob = await admin.createUser('bob-transitions');
    await bob.get(`/api/instances/${vm.id}/transitions`).expect(404);
  });

  // ---- concurrency --------------------------------------------------------------------------

  it('20 parallel starts of one offline instance: one 202, nineteen 409 naming the state; started once', async () => {
    const vm = await offline(alice);
    const answers = await Promise.all(
      Array.from({ length: 20 }, () => alice.post(`/api/instances/${vm.id}/start`)),
    );
    const statuses = answers.map((a) => a.status);
    expect(statuses.filter((s) => s === 202)).toHaveLength(1);
    expect(statuses.filter((s) => s === 409)).toHaveLength(19);
    for (const answer of answers.filter((a) => a.status === 409)) {
      expect(answer.body).toMatchObject({ statusCode: 409, error: 'Conflict' });
      const match = /^Cannot start instance in state '([a-z_]+)'; allowed from: offline$/.exec(
        answer.body.message,
      );
      expect(match).not.toBeNull();
      expect(['starting_scheduled', 'starting', 'online']).toContain(match![1]);
    }

    await alice.waitForState(vm.id, 'online');
    expect((await simVm(vm.id)).op_counts.start).toBe(1);
    expect(
      (await events(alice, vm.id)).filter((e) => e.type === 'instance.start.scheduled'),
    ).toHaveLength(1);
  });

  // ---- the 409 table ------------------------------------------------------------------------

  describe('every (state, action) pair of the table', () => {
    const subjects = new Map<string, string>();

    beforeAll(async () => {
      const pairs = STABLE.flatMap((state) => ACTIONS.map((action) => `${state}/${action}`));
      const made = await Promise.all(pairs.map((_, i) => alice.online({ name: `table-${i}` })));
      pairs.forEach((pair, i) => subjects.set(pair, made[i].id));
    });

    // Accepted actions run to some end; let them, so that nothing is in flight for the next test.
    afterAll(async () => {
      await Promise.all([...subjects.values()].map((id) => settle(alice, id)));
    });

    describe.each(STABLE)("from '%s'", (state) => {
      it.each(ACTIONS)('%s', async (action) => {
        const id = subjects.get(`${state}/${action}`)!;
        if (state === 'offline')
          await admin.post(`/api/instances/${id}/set_ok`, { state: 'offline' }).expect(200);
        if (state === 'erred')
          await admin
            .post(`/api/instances/${id}/set_erred`, { error_message: 'table' })
            .expect(200);
        const before = await get(alice, id);
        expect(before.state).toBe(state);
        const eventsBefore = await events(alice, id);

        const res = await request(alice, id, action);
        if (ALLOWED_FROM[action].includes(state)) {
          expect(res.status).toBe(202);
          expect(res.body).toMatchObject({ id, state: SCHEDULED[action], error_message: '' });
        } else {
          expect(res.status).toBe(409);
          expect(res.body).toEqual({
            statusCode: 409,
            error: 'Conflict',
            message: conflictMessage(action, state),
          });
          expect(await get(alice, id)).toEqual(before);
          expect(await events(alice, id)).toEqual(eventsBefore);
        }
      });
    });
  });

  it('an instance in progress rejects every action with 409 naming its state, and is left to finish', async () => {
    const vm = await alice.online();
    await arm({ operation: 'restart', instance_id: vm.id, mode: 'hang' });
    await alice.action(vm.id, 'restart');
    const busy = await alice.waitForState(vm.id, 'restarting');

    for (const action of ACTIONS) {
      const res = await request(alice, vm.id, action);
      expect({ action, status: res.status, message: res.body.message }).toEqual({
        action,
        status: 409,
        message: conflictMessage(action, 'restarting'),
      });
    }
    const patch = await alice.patch(`/api/instances/${vm.id}`, { description: 'busy' });
    expect(patch.status).toBe(409);
    expect(await get(alice, vm.id)).toEqual(busy);

    const erred = await alice.waitForState(vm.id, 'erred');
    expect(erred.error_message).toContain('timed out');
    expect(
      (await events(alice, vm.id)).filter((e) => e.type.endsWith('.scheduled')).map((e) => e.type),
    ).toEqual(['instance.provision.scheduled', 'instance.restart.scheduled']);
  });
});
