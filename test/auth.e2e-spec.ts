import { randomUUID } from 'node:crypto';
import { connect, type AddressInfo } from 'node:net';
import { gzipSync } from 'node:zlib';
import type { Response } from 'supertest';
import { ApiClient, bearer, InstanceBody } from './support/api';
import { sendRaw } from './support/raw-http';
import { startApp, TestApp } from './support/test-app';

/** API.md section 2: tokens, staff-only routes and instance ownership. */

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

function expectError(res: Response, status: number): void {
  expect({ status: res.status, body: res.body }).toMatchObject({
    status,
    body: { statusCode: status },
  });
  expect(Object.keys(res.body).sort()).toEqual(['error', 'message', 'statusCode']);
  expect(typeof res.body.error).toBe('string');
  expect(res.body.message).toBeTruthy();
}

describe('authentication and ownership', () => {
  let t: TestApp;
  let admin: ApiClient;
  let alice: ApiClient;
  let bob: ApiClient;
  let aliceVm: InstanceBody;

  beforeAll(async () => {
    t = await startApp();
    admin = new ApiClient(t.http, t.adminToken);
    alice = await admin.createUser('alice');
    bob = await admin.createUser('bob');
    aliceVm = await alice.online({ name: 'alice-vm' });
  });
  afterAll(() => t.close());

  describe('tokens', () => {
    it('answers 401 without an Authorization header', async () => {
      for (const path of [
        '/api/users/me',
        '/api/instances',
        `/api/instances/${aliceVm.id}`,
        '/api/events',
      ]) {
        const res = await t.http.get(path);
        expectError(res, 401);
      }
      expectError(await t.http.post('/api/instances').send({ name: 'anon', flavor: 'small' }), 401);
    });

    it('answers 401 to an unknown token', async () => {
      const res = await t.http.get('/api/users/me').set(bearer('pvs_not-a-real-token'));
      expectError(res, 401);
      const list = await t.http.get('/api/instances').set(bearer(`${t.adminToken}x`));
      expectError(list, 401);
    });

    it('answers 401 to a malformed Authorization header, even one that carries a valid token', async () => {
      const token = t.adminToken;
      const malformed = [
        `Basic ${token}`,
        `Token ${token}`,
        token,
        'Bearer',
        'Bearer ',
        `Bearer ${token} extra`,
      ];
      for (const header of malformed) {
        const res = await t.http.get('/api/users/me').set('Authorization', header);
        expect({ header, status: res.status }).toEqual({ header, status: 401 });
        expectError(res, 401);
      }
      // The same token, well formed, works: the 401s above are about the header's form.
      await t.http.get('/api/users/me').set(bearer(token)).expect(200);
    });

    it('needs no token for GET /api/health', async () => {
      const res = await t.http.get('/api/health').expect(200);
      expect(res.body.status).toBe('ok');
    });

    it('serves flavors and images to token holders only', async () => {
      expectError(await t.http.get('/api/flavors'), 401);
      expectError(await t.http.get('/api/images'), 401);

      const flavors = await alice.get('/api/flavors').expect(200);
      expect(Object.keys(flavors.body)).toEqual(['items']);
      expect(flavors.body.items.map((f: { name: string }) => f.name).sort()).toEqual([
        'large',
        'medium',
        'small',
      ]);
      for (const f of flavors.body.items) {
        expect(Object.keys(f).sort()).toEqual(['cores', 'disk_gb', 'name', 'ram_mb']);
        expect(f.cores).toBeGreaterThan(0);
        expect(f.ram_mb).toBeGreaterThan(0);
        expect(f.disk_gb).toBeGreaterThan(0);
      }

      const images = await alice.get('/api/images').expect(200);
      expect(Object.keys(images.body)).toEqual(['items']);
      expect(images.body.items.length).toBeGreaterThan(0);
      for (const image of images.body.items) expect(Object.keys(image)).toEqual(['name']);
      expect(images.body.items.map((i: { name: string }) => i.name)).toContain('debian-12');
    });
  });

  describe('users', () => {
    it('lets staff create a user: 201 with exactly id, username, is_staff, token, created_at', async () => {
      const before = Date.now();
      const res = await admin.post('/api/users', { username: 'carol' }).expect(201);
      expect(Object.keys(res.body).sort()).toEqual([
        'created_at',
        'id',
        'is_staff',
        'token',
        'username',
      ]);
      expect(res.body).toMatchObject({ username: 'carol', is_staff: false });
      expect(res.body.id).toMatch(UUID);
      expect(typeof res.body.token).toBe('string');
      expect(res.body.token.length).toBeGreaterThanOrEqual(20);
      expect(res.body.created_at).toMatch(/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$/);
      expect(Date.parse(res.body.created_at)).toBeGreaterThanOrEqual(before - 1000);

      const me = await t.http.get('/api/users/me').set(bearer(res.body.token)).expect(200);
      expect(me.body).toEqual({ id: res.body.id, username: 'carol', is_staff: false });
    });

    it('creates staff users when asked, and their token is a staff token', async () => {
      const res = await admin.post('/api/users', { username: 'ops-1', is_staff: true }).expect(201);
      expect(res.body.is_staff).toBe(true);
      const ops = new ApiClient(t.http, res.body.token);
      expect((await ops.get('/api/users/me').expect(200)).body).toEqual({
        id: res.body.id,
        username: 'ops-1',
        is_staff: true,
      });
      await ops.post('/api/users', { username: 'made-by-ops' }).expect(201);
    });

    it('answers GET /api/users/me with the caller', async () => {
      const me = await alice.get('/api/users/me').expect(200);
      expect(Object.keys(me.body).sort()).toEqual(['id', 'is_staff', 'username']);
      expect(me.body).toMatchObject({ username: 'alice', is_staff: false });
      expect(me.body.id).toBe(aliceVm.owner_id);
      expect((await admin.get('/api/users/me').expect(200)).body).toMatchObject({
        username: 'admin',
        is_staff: true,
      });
    });

    it('answers 403 to a non-staff user, before validating the body', async () => {
      expectError(await alice.post('/api/users', { username: 'dave' }), 403);
      expectError(await alice.post('/api/users', { username: 'eve', is_staff: true }), 403);
      // Invalid bodies: still 403, not 400.
      expectError(await alice.post('/api/users', { username: '', bogus: 1 }), 403);
      expectError(await alice.post('/api/users', {}), 403);
      expectError(await alice.post('/api/users', { username: 'alice' }), 403);
      // Nobody was created: staff can still take the names.
      await admin.post('/api/users', { username: 'dave' }).expect(201);
      await admin.post('/api/users', { username: 'eve' }).expect(201);
    });

    it('answers 401 to POST /api/users without a token', async () => {
      expectError(await t.http.post('/api/users').send({ username: 'frank' }), 401);
    });

    it('answers 409 to a taken username', async () => {
      for (const username of ['alice', 'admin']) {
        const res = await admin.post('/api/users', { username });
        expectError(res, 409);
        expect(String(res.body.message)).toContain(username);
      }
    });

    it('answers 400 to an invalid username, naming the field', async () => {
      const bad: unknown[] = ['', '-alice', 'al ice', 'al/ice', 'a'.repeat(64), 5, null];
      for (const username of bad) {
        const res = await admin.post('/api/users', { username });
        expect({ username, status: res.status }).toEqual({ username, status: 400 });
        expectError(res, 400);
        expect(JSON.stringify(res.body.message)).toContain('username');
      }
      expectError(await admin.post('/api/users', {}), 400);
      const badFlag = await admin.post('/api/users', { username: 'gina', is_staff: 'yes' });
      expectError(badFlag, 400);
      expect(JSON.stringify(badFlag.body.message)).toContain('is_staff');
    });
  });

  describe('ownership', () => {
    let bobVm: InstanceBody;

    beforeAll(async () => {
      bobVm = await bob.online({ name: 'bob-vm' });
    });

    /** Every per-instance request a user can make, with a body that would be valid. */
    const requests = (id: string) =>
      [
        ['GET', `/api/instances/${id}`],
        ['PATCH', `/api/instances/${id}`, { name: 'stolen' }],
        ['GET', `/api/instances/${id}/transitions`],
        ['POST', `/api/instances/${id}/start`],
        ['POST', `/api/instances/${id}/stop`],
        ['POST', `/api/instances/${id}/restart`],
        ['POST', `/api/instances/${id}/resize`, { flavor: 'large' }],
        ['POST', `/api/instances/${id}/pull`],
        ['DELETE', `/api/instances/${id}`],
      ] as const;

    function send(client: ApiClient, [method, path, body]: readonly [string, string, object?]) {
      switch (method) {
        case 'GET':
          return client.get(path);
        case 'PATCH':
          return client.patch(path, body!);
        case 'DELETE':
          return client.delete(path);
        default:
          return client.post(path, body);
      }
    }

    it("answers 404 to another user's instance on every route, exactly as for an id that does not exist", async () => {
      const eventsBefore = await alice.events(aliceVm.id);
      const missing = randomUUID();
      const mine = requests(aliceVm.id);
      const nobodys = requests(missing);
      for (let i = 0; i < mine.length; i++) {
        const [method, path] = mine[i];
        const theirs = await send(bob, mine[i]);
        const absent = await send(bob, nobodys[i]);
        expect({ route: `${method} ${path}`, status: theirs.status }).toEqual({
          route: `${method} ${path}`,
          status: 404,
        });
        expectError(theirs, 404);
        expect(theirs.body).toEqual(absent.body);
      }
      // Nothing bob did reached alice's instance.
      const after = await alice.get(`/api/instances/${aliceVm.id}`).expect(200);
      expect(after.body).toMatchObject({ state: 'online', name: 'alice-vm', flavor: 'small' });
      expect(await alice.events(aliceVm.id)).toEqual(eventsBefore);
    });

    it("keeps other users' instances out of the list and its total", async () => {
      const bobList = await bob.get('/api/instances').expect(200);
      expect(bobList.body.total).toBe(1);
      expect(bobList.body.items.map((i: InstanceBody) => i.id)).toEqual([bobVm.id]);

      const byName = await bob.get('/api/instances?name=alice-vm').expect(200);
      expect(byName.body).toMatchObject({ items: [], total: 0 });

      const aliceList = await alice.get('/api/instances').expect(200);
      const aliceIds = aliceList.body.items.map((i: InstanceBody) => i.id);
      expect(aliceIds).toContain(aliceVm.id);
      expect(aliceIds).not.toContain(bobVm.id);
      expect(aliceList.body.total).toBe(aliceList.body.items.length);
      for (const item of aliceList.body.items) expect(item.owner_id).toBe(aliceVm.owner_id);

      const staffList = await admin.get('/api/instances?limit=500').expect(200);
      const staffIds = staffList.body.items.map((i: InstanceBody) => i.id);
      expect(staffIds).toEqual(expect.arrayContaining([aliceVm.id, bobVm.id]));
      expect(staffList.body.total).toBeGreaterThanOrEqual(aliceList.body.total + 1);
    });

    it("lets staff see and act on anyone's instance", async () => {
      const vm = await alice.online({ name: 'staff-acts' });
      const seen = await admin.get(`/api/instances/${vm.id}`).expect(200);
      expect(seen.body).toMatchObject({ id: vm.id, owner_id: vm.owner_id });

      const stopped = await admin.post(`/api/instances/${vm.id}/stop`).expect(202);
      expect(stopped.body.state).toBe('stopping_scheduled');
      await alice.waitForState(vm.id, 'offline');
      await admin.patch(`/api/instances/${vm.id}`, { description: 'by staff' }).expect(200);
      await admin.post(`/api/instances/${vm.id}/start`).expect(202);
      const online = await alice.waitForState(vm.id, 'online');
      expect(online).toMatchObject({ owner_id: vm.owner_id, description: 'by staff' });

      const history = await admin.get(`/api/instances/${vm.id}/transitions`).expect(200);
      expect(history.body.items.map((h: { action: string }) => h.action)).toEqual(
        expect.arrayContaining(['provision', 'stop', 'update', 'start']),
      );
      const staffEvents = await admin.get(`/api/events?instance_id=${vm.id}&limit=500`).expect(200);
      expect(staffEvents.body.items.map((e: { type: string }) => e.type)).toContain(
        'instance.stop.succeeded',
      );
    });

    it("does not show another user's events, not even when asked by instance_id", async () => {
      const aliceEvents = await alice.events(aliceVm.id);
      expect(aliceEvents.length).toBeGreaterThan(0);

      const filtered = await bob.get(`/api/events?instance_id=${aliceVm.id}`).expect(200);
      expect(filtered.body).toEqual({ items: [] });

      const all = await bob.get('/api/events?limit=500').expect(200);
      expect(all.body.items.length).toBeGreaterThan(0);
      for (const event of all.body.items) expect(event.instance_id).toBe(bobVm.id);
      expect(all.body.items.map((e: { instance_id: string }) => e.instance_id)).not.toContain(
        aliceVm.id,
      );

      const staff = await admin.get(`/api/events?instance_id=${aliceVm.id}&limit=500`).expect(200);
      expect(staff.body.items.length).toBe(aliceEvents.length);
    });

    it('shows error_traceback to staff only', async () => {
      const vm = await alice.online({ name: 'traced' });
      const erred = await admin
        .post(`/api/instances/${vm.id}/set_erred`, { error_message: 'host lost' })
        .expect(200);
      expect(erred.body).toMatchObject({ state: 'erred', error_message: 'host lost' });
      expect(erred.body).toHaveProperty('error_traceback');

      const staffView = await admin.get(`/api/instances/${vm.id}`).expect(200);
      expect(staffView.body).toMatchObject({ state: 'erred', error_message: 'host lost' });
      expect(staffView.body).toHaveProperty('error_traceback');
      expect(typeof staffView.body.error_traceback).toBe('string');

      const ownerView = await alice.get(`/api/instances/${vm.id}`).expect(200);
      expect(ownerView.body).toMatchObject({ state: 'erred', error_message: 'host lost' });
      expect(ownerView.body).not.toHaveProperty('error_traceback');

      const ownerList = await alice.get('/api/instances').expect(200);
      expect(ownerList.body.items.length).toBeGreaterThan(0);
      for (const item of ownerList.body.items) expect(item).not.toHaveProperty('error_traceback');
      const staffList = await admin.get('/api/instances').expect(200);
      for (const item of staffList.body.items) expect(item).toHaveProperty('error_traceback');

      // The owner's own action answers leave it out too.
      const pulled = await alice.post(`/api/instances/${vm.id}/pull`).expect(202);
      expect(pulled.body).not.toHaveProperty('error_traceback');
      await alice.waitForState(vm.id, 'online');
    });
  });

  describe('staff-only routes', () => {
    let vm: InstanceBody;
    let faultId: string;

    beforeAll(async () => {
      vm = await alice.online({ name: 'guarded' });
      const fault = await admin
        .post('/api/simulator/faults', {
          operation: 'restart',
          instance_id: vm.id,
          mode: 'error',
          times: 1,
        })
        .expect(201);
      faultId = fault.body.id;
    });

    const routes = () =>
      [
        ['POST', `/api/instances/${vm.id}/set_erred`, { error_message: 'by alice' }],
        ['POST', `/api/instances/${vm.id}/set_ok`, { state: 'offline' }],
        ['POST', `/api/instances/${vm.id}/unlink`],
        ['GET', '/api/simulator/faults'],
        ['POST', '/api/simulator/faults', { operation: 'start', mode: 'error' }],
        ['DELETE', `/api/simulator/faults/${faultId}`],
        ['GET', '/api/simulator/vms'],
      ] as const;

    /** The app's port, for requests supertest would tidy up: listening from the first call. */
    async function listening(): Promise<number> {
      const server = t.app.getHttpServer();
      if (!server.address()) await t.app.listen(0, '127.0.0.1');
      return (server.address() as AddressInfo).port;
    }

    function call(method: string, path: string, token?: string) {
      const req =
        method === 'GET'
          ? t.http.get(path)
          : method === 'DELETE'
            ? t.http.delete(path)
            : t.http.post(path);
      return token ? req.set(bearer(token)) : req;
    }

    it('answers 403 to a non-staff user, even on their own instance, and changes nothing', async () => {
      const eventsBefore = await alice.events(vm.id);
      for (const [method, path, body] of routes()) {
        const res = await call(method, path, alice.token).send(body);
        expect({ route: `${method} ${path}`, status: res.status }).toEqual({
          route: `${method} ${path}`,
          status: 403,
        });
        expectError(res, 403);
      }
      // Invalid bodies are still 403 first.
      expectError(
        await alice.post(`/api/instances/${vm.id}/set_ok`, { state: 'erred', junk: true }),
        403,
      );
      expectError(await alice.post(`/api/instances/not-a-uuid/set_erred`, {}), 403);

      const after = await alice.get(`/api/instances/${vm.id}`).expect(200);
      expect(after.body).toMatchObject({ state: 'online', error_message: '' });
      expect(await alice.events(vm.id)).toEqual(eventsBefore);
      const faults = await admin.get('/api/simulator/faults').expect(200);
      expect(faults.body.items.map((f: { id: string }) => f.id)).toEqual([faultId]);
    });

    it('answers 403 before refusing a body: not JSON, malformed, or unusable', async () => {
      const bodies: [string, string][] = [
        ['application/json', '{bad'],
        ['text/plain', 'set it ok'],
        ['application/json', '{"__proto__": {}}'],
        ['application/json', '{"error_message": "a\\u0000b"}'],
      ];
      for (const [type, text] of bodies) {
        for (const action of ['set_ok', 'set_erred', 'unlink']) {
          const res = await t.http
            .post(`/api/instances/${vm.id}/${action}`)
            .set(bearer(alice.token))
            .set('content-type', type)
            .send(text);
          expect({ action, text, status: res.status }).toEqual({ action, text, status: 403 });
          expectError(res, 403);
        }
        // Without a token, 401 comes first too; staff hear what is wrong with the body.
        const anonymous = await t.http
          .post(`/api/instances/${vm.id}/set_erred`)
          .set('content-type', type)
          .send(text);
        expectError(anonymous, 401);
        const staff = await t.http
          .post(`/api/instances/${vm.id}/set_erred`)
          .set(bearer(t.adminToken))
          .set('content-type', type)
          .send(text);
        expectError(staff, type === 'text/plain' ? 415 : 400);
      }
      // A body within the limit on the wire that inflates past it: read, then refused, so late.
      const inflated = gzipSync(JSON.stringify({ message: 'x'.repeat(70_000) }));
      for (const [token, status] of [
        [alice.token, 403],
        [t.adminToken, 413],
      ] as const) {
        // supertest would serialise the Buffer as JSON: the bytes go as they are.
        const res = await sendRaw(await listening(), {
          method: 'POST',
          path: `/api/instances/${vm.id}/set_erred`,
          headers: [
            ['Authorization', `Bearer ${token}`],
            ['Content-Type', 'application/json'],
            ['Content-Encoding', 'gzip'],
          ],
          body: inflated,
        });
        expect({ status: res.status, body: res.json }).toMatchObject({
          status,
          body: { statusCode: status },
        });
      }
      const after = await alice.get(`/api/instances/${vm.id}`).expect(200);
      expect(after.body).toMatchObject({ state: 'online', error_message: '' });
    });

    it('ends the connection after refusing a body it left unread, rather than read it all', async () => {
      const socket = connect(await listening(), '127.0.0.1');
      socket.on('error', () => undefined);
      socket.setEncoding('utf8');
      let answer = '';
      socket.on('data', (chunk: string) => (answer += chunk));
      const closed = new Promise<boolean>((resolve) => {
        socket.on('close', () => resolve(true));
        setTimeout(() => resolve(false), 5_000);
      });
      // Says 100 MB follow, sends 64 KiB of them, and would keep the connection.
      socket.write(
        `POST /api/instances/${vm.id}/set_erred HTTP/1.1\r\nHost: provisor\r\n` +
          `Authorization: Bearer ${alice.token}\r\nContent-Type: text/plain\r\n` +
          'Content-Length: 100000000\r\nConnection: keep-alive\r\n\r\n',
      );
      socket.write('x'.repeat(65_536));
      const ended = await closed;
      socket.destroy();
      expect(answer).toMatch(/^HTTP\/1\.1 403 /);
      expect(answer).toMatch(/\r\nconnection: close\r\n/i);
      expect(ended).toBe(true);
    });

    it('answers 401 without a token', async () => {
      for (const [method, path, body] of routes()) {
        const res = await call(method, path).send(body);
        expect({ route: `${method} ${path}`, status: res.status }).toEqual({
          route: `${method} ${path}`,
          status: 401,
        });
        expectError(res, 401);
      }
      await alice.get(`/api/instances/${vm.id}`).expect(200);
    });

    it('serves staff on the same routes', async () => {
      await admin.get('/api/simulator/faults').expect(200);
      const vms = await admin.get(`/api/simulator/vms?instance_id=${vm.id}`).expect(200);
      expect(vms.body.items.map((v: { instance_id: string }) => v.instance_id)).toEqual([vm.id]);
      await admin.delete(`/api/simulator/faults/${faultId}`).expect(204);
      expect((await admin.get('/api/simulator/faults').expect(200)).body.items).toEqual([]);

      await admin
        .post(`/api/instances/${vm.id}/set_erred`, { error_message: 'manual' })
        .expect(200);
      const ok = await admin
        .post(`/api/instances/${vm.id}/set_ok`, { state: 'offline' })
        .expect(200);
      expect(ok.body).toMatchObject({ state: 'offline', error_message: '' });
      await admin.post(`/api/instances/${vm.id}/unlink`).expect(204);
      await alice.get(`/api/instances/${vm.id}`).expect(404);
    });
  });
});
