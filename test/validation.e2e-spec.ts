import { randomUUID } from 'node:crypto';
import type { Response } from 'supertest';
import { ApiClient, bearer, InstanceBody } from './support/api';
import { startApp, TestApp } from './support/test-app';

/** API.md sections 5 and 6: bad input is a 4xx in the one error shape, and changes nothing. */

/** What a stack trace or a SQL error looks like when it leaks into a body. */
const LEAKS: RegExp[] = [
  /\bat [\w$.<>]+ \(/, // "at Foo.bar (" stack frames
  /\n\s+at /,
  /\.ts:\d+/,
  /\.js:\d+:\d+/,
  /QueryFailedError/,
  /SqliteError/,
  /\bSELECT\b/,
  /\bINSERT\b/,
  /\bUPDATE\s+"?\w+"?\s+SET\b/,
  /constraint/i,
];

function messageText(res: Response): string {
  const m = res.body?.message;
  return Array.isArray(m) ? m.join(' | ') : String(m);
}

/**
 * The status, the `{statusCode, error, message}` shape, a message that names `mentions`, and no
 * stack trace or SQL anywhere in the body.
 */
function expectError(res: Response, status: number, ...mentions: string[]): void {
  const seen = { status: res.status, body: res.body };
  expect(seen).toMatchObject({ status, body: { statusCode: status } });
  expect(res.headers['content-type']).toMatch(/^application\/json/);
  expect(Object.keys(res.body).sort()).toEqual(['error', 'message', 'statusCode']);
  expect(typeof res.body.error).toBe('string');
  expect(res.body.error.length).toBeGreaterThan(0);
  const { message } = res.body;
  if (Array.isArray(message)) {
    expect(message.length).toBeGreaterThan(0);
    for (const m of message) expect(typeof m).toBe('string');
  } else {
    expect(typeof message).toBe('string');
    expect(message.length).toBeGreaterThan(0);
  }
  for (const mention of mentions)
    expect(messageText(res).toLowerCase()).toContain(mention.toLowerCase());
  for (const leak of LEAKS) expect(res.text).not.toMatch(leak);
}

/** A JSON body of exactly `bytes` bytes (ASCII), padded in `description`. */
function bodyOfBytes(bytes: number, fields: object = { name: 'big', flavor: 'small' }): string {
  const empty = JSON.stringify({ ...fields, description: '' });
  const body = JSON.stringify({ ...fields, description: 'a'.repeat(bytes - empty.length) });
  expect(Buffer.byteLength(body)).toBe(bytes);
  return body;
}

describe('input validation and errors', () => {
  let t: TestApp;
  let admin: ApiClient;
  let alice: ApiClient;
  /** alice's online instance that rejected requests must leave alone. */
  let vm: InstanceBody;

  /** What a user can see of an instance: its body and how many events it has. */
  async function snapshot(id: string, client: ApiClient = alice) {
    const instance = (await client.get(`/api/instances/${id}`).expect(200)).body as InstanceBody;
    return { instance, events: (await client.events(id)).length };
  }

  /** What a user can see of their account: how many instances and events they have. */
  async function accountSnapshot(client: ApiClient) {
    const list = await client.get('/api/instances?limit=500').expect(200);
    const events = await client.get('/api/events?limit=500').expect(200);
    return {
      total: list.body.total,
      ids: list.body.items.map((i: InstanceBody) => i.id),
      events: events.body.items.length,
    };
  }

  beforeAll(async () => {
    // A hung backend call holds an instance in a transitional state this long.
    t = await startApp({ JOB_TIMEOUT_MS: '3000' });
    admin = new ApiClient(t.http, t.adminToken);
    alice = await admin.createUser('alice');
    vm = await alice.online({ name: 'target', description: 'keep me' });
  });
  afterAll(() => t.close());

  describe('the error shape', () => {
    it('answers an unknown route 404 in the error shape', async () => {
      for (const res of [
        await alice.get('/api/nope'),
        await alice.post(`/api/instances/${vm.id}/explode`),
        await alice.delete('/api/flavors'),
        await alice.get('/nope'),
      ]) {
        expectError(res, 404);
      }
      expectError(await alice.get('/api/nope'), 404, '/api/nope');
      expect((await snapshot(vm.id)).instance.state).toBe('online');
    });

    it('answers malformed JSON 400, naming JSON, and changes nothing', async () => {
      const account = await accountSnapshot(alice);
      const before = await snapshot(vm.id);
      const bad = ['{"name": "a",', "{'name': 'a'}", '{"name": "a" "flavor": "small"}', '{'];
      for (const body of bad) {
        expectError(await alice.post('/api/instances').type('json').send(body), 400, 'JSON');
        expectError(
          await alice.http
            .patch(`/api/instances/${vm.id}`)
            .set('Authorization', `Bearer ${alice.token}`)
            .type('json')
            .send(body),
          400,
          'JSON',
        );
        expectError(
          await alice.post(`/api/instances/${vm.id}/stop`).type('json').send(body),
          400,
          'JSON',
        );
      }
      expect(await snapshot(vm.id)).toEqual(before);
      expect(await accountSnapshot(alice)).toEqual(account);
    });

    it('answers a body over 65,536 bytes 413, and one at or under the limit is validated (400)', async () => {
      const account = await accountSnapshot(alice);
      const before = await snapshot(vm.id);

      const over = await alice.post('/api/instances').type('json').send(bodyOfBytes(65_537));
      expectError(over, 413);
      expect(messageText(over)).toMatch(/65536|65,536|64 ?KiB|too large/i);
      expectError(await alice.post('/api/instances').type('json').send(bodyOfBytes(200_000)), 413);
      const patch = await alice.http
        .patch(`/api/instances/${vm.id}`)
        .set('Authorization', `Bearer ${alice.token}`)
        .type('json')
        .send(bodyOfBytes(70_000, { name: 'renamed' }));
      expectError(patch, 413);

      // At and just under the limit the body is read, and the too-long description is a 400.
      expectError(
        await alice.post('/api/instances').type('json').send(bodyOfBytes(65_536)),
        400,
        'description',
      );
      expectError(
        await alice.post('/api/instances').type('json').send(bodyOfBytes(65_000)),
        400,
        'description',
      );

      expect(await snapshot(vm.id)).toEqual(before);
      expect(await accountSnapshot(alice)).toEqual(account);
    });
  });

  describe('unknown body fields', () => {
    it('refuses them on POST /api/instances, naming the field, and creates nothing', async () => {
      const account = await accountSnapshot(alice);
      const extras: Record<string, unknown> = {
        state: 'online',
        owner_id: randomUUID(),
        error_message: 'x',
        error_traceback: 'x',
        backend_id: 'sim-123',
        id: randomUUID(),
        created_at: new Date().toISOString(),
      };
      for (const [field, value] of Object.entries(extras)) {
        const res = await alice.post('/api/instances', {
          name: `extra-${field}`.replace(/_/g, '-'),
          flavor: 'small',
          [field]: value,
        });
        expectError(res, 400, field);
      }
      expect(await accountSnapshot(alice)).toEqual(account);
    });

    it('refuses them on PATCH and on action bodies, and the instance is unchanged', async () => {
      const before = await snapshot(vm.id);
      const otherUser = randomUUID();
      for (const [field, value] of Object.entries({
        state: 'offline',
        owner_id: otherUser,
        error_message: 'hacked',
        flavor: 'large',
        backend_id: 'sim-evil',
      })) {
        expectError(await alice.patch(`/api/instances/${vm.id}`, { [field]: value }), 400, field);
        // Mixed with a valid field: the valid one is not applied either.
        expectError(
          await alice.patch(`/api/instances/${vm.id}`, { name: 'renamed', [field]: value }),
          400,
          field,
        );
      }
      expectError(
        await alice.post(`/api/instances/${vm.id}/resize`, { flavor: 'medium', state: 'online' }),
        400,
        'state',
      );
      expect(await snapshot(vm.id)).toEqual(before);
    });

    it('refuses prototype names as fields (__proto__, valueOf, …), which validation would pass', async () => {
      const before = await snapshot(vm.id);
      for (const field of ['__proto__', 'constructor', 'valueOf', 'hasOwnProperty']) {
        const body = JSON.parse(`{"name": "renamed", "${field}": {"is_staff": true}}`) as object;
        expectError(await alice.patch(`/api/instances/${vm.id}`, body), 400, field);
        const create = JSON.parse(`{"name": "proto", "flavor": "small", "${field}": {}}`) as object;
        expectError(await alice.post('/api/instances', create), 400, field);
      }
      expect(await snapshot(vm.id)).toEqual(before);
      expect((await alice.get('/api/instances?name=proto').expect(200)).body.total).toBe(0);
    });
  });

  describe('bodies no route can use', () => {
    it('answers a body sent without Content-Type: application/json with 415, changing nothing', async () => {
      const before = await snapshot(vm.id);
      const account = await accountSnapshot(alice);
      const create = await t.http
        .post('/api/instances')
        .set(bearer(alice.token))
        .set('Content-Type', 'text/plain')
        .send('{"name":"plain","flavor":"small"}');
      expectError(create, 415, 'application/json');
      const patch = await t.http
        .patch(`/api/instances/${vm.id}`)
        .set(bearer(alice.token))
        .set('Content-Type', 'application/x-www-form-urlencoded')
        .send('description=changed');
      expectError(patch, 415, 'application/json');
      expect(await snapshot(vm.id)).toEqual(before);
      expect(await accountSnapshot(alice)).toEqual(account);
    });

    it('answers a body under a malformed Content-Type with 415, naming the type to send', async () => {
      const before = await snapshot(vm.id);
      const res = await t.http
        .patch(`/api/instances/${vm.id}`)
        .set(bearer(alice.token))
        .set('Content-Type', 'json')
        .send('{"description":"changed"}');
      expectError(res, 415, 'application/json');
      expect(await snapshot(vm.id)).toEqual(before);
    });

    it('takes an empty body as no body, whatever its Content-Type says', async () => {
      const own = await alice.online({ name: 'empty-bodies' });
      const stop = await t.http
        .post(`/api/instances/${own.id}/stop`)
        .set(bearer(alice.token))
        .set('Content-Type', 'text/plain')
        .send('');
      expect({ status: stop.status, state: stop.body.state }).toEqual({
        status: 202,
        state: 'stopping_scheduled',
      });
      await alice.waitForState(own.id, 'offline');
      const start = await t.http
        .post(`/api/instances/${own.id}/start`)
        .set(bearer(alice.token))
        .set('Content-Type', 'application/x-www-form-urlencoded')
        .send('');
      expect(start.status).toBe(202);
      await alice.waitForState(own.id, 'online');
    });

    it('answers a body nested thousands of levels deep with 400, not a crash', async () => {
      const deep = `{"name":"deep","flavor":"small","x":${'['.repeat(3000)}${']'.repeat(3000)}}`;
      const res = await t.http
        .post('/api/instances')
        .set(bearer(alice.token))
        .set('Content-Type', 'application/json')
        .send(deep);
      expectError(res, 400, 'nested');
    });

    it('answers 400 to fields sent to an action that takes no body', async () => {
      const before = await snapshot(vm.id);
      expectError(await alice.post(`/api/instances/${vm.id}/stop`, { force: true }), 400, 'force');
      expectError(await alice.post(`/api/instances/${vm.id}/restart`, { delay: 5 }), 400, 'delay');
      expect(await snapshot(vm.id)).toEqual(before);
    });

    it('answers 400 to set_erred without a message', async () => {
      expectError(
        await admin.post(`/api/instances/${vm.id}/set_erred`, { error_message: '' }),
        400,
        'error_message',
      );
    });
  });

  describe('characters and encodings no database takes', () => {
    it('refuses a NUL character in a body or a query with 400, changing nothing', async () => {
      const before = await snapshot(vm.id);
      const account = await accountSnapshot(alice);
      expectError(
        await alice.post('/api/instances', {
          name: 'nul',
          flavor: 'small',
          description: 'a\u0000b',
        }),
        400,
        'NUL',
      );
      expectError(
        await alice.patch(`/api/instances/${vm.id}`, { description: 'a\u0000b' }),
        400,
        'NUL',
      );
      expectError(await alice.get('/api/instances?name=a%00b'), 400, 'NUL');
      expectError(
        await admin.post(`/api/instances/${vm.id}/set_erred`, { error_message: '\u0000' }),
        400,
        'NUL',
      );
      expect(await snapshot(vm.id)).toEqual(before);
      expect(await accountSnapshot(alice)).toEqual(account);
    });

    it('answers a body that claims gzip but is not with 400', async () => {
      const res = await t.http
        .post('/api/instances')
        .set(bearer(alice.token))
        .set('Content-Type', 'application/json')
        .set('Content-Encoding', 'gzip')
        .send(Buffer.from('{"name":"zip","flavor":"small"}'));
      expectError(res, 400);
    });
  });

  describe('paths', () => {
    it('matches paths in any case and with a trailing slash, as routes always have', async () => {
      for (const path of ['/API/Instances', '/api/instances/', `/api/INSTANCES/${vm.id}`]) {
        const res = await alice.get(path);
        expect({ path, status: res.status }).toEqual({ path, status: 200 });
      }
    });

    it('answers a path that cannot be decoded with 400 in the error shape, with the base headers', async () => {
      const res = await alice.get('/api/instances/%zz').set('X-Request-Id', 'bad-path-1');
      expectError(res, 400);
      expect(res.headers['x-request-id']).toBe('bad-path-1');
      expect(res.headers['x-content-type-options']).toBe('nosniff');
    });
  });

  describe('ids', () => {
    it('answers 400 to a non-UUID id on every instance route, and never 404 or 500', async () => {
      // The last is longer than a router may take for a path parameter by default (100).
      const ids = ['not-a-uuid', '12345', `${vm.id}0`, "1'%20OR%20'1'='1", 'x'.repeat(2_000)];
      for (const id of ids) {
        const requests: [string, Promise<Response>][] = [
          ['GET', alice.get(`/api/instances/${id}`)],
          ['PATCH', alice.patch(`/api/instances/${id}`, { name: 'x' })],
          ['DELETE', alice.delete(`/api/instances/${id}`)],
          ['transitions', alice.get(`/api/instances/${id}/transitions`)],
          ...['start', 'stop', 'restart', 'pull'].map(
            (a) => [a, alice.post(`/api/instances/${id}/${a}`)] as [string, Promise<Response>],
          ),
          ['resize', alice.post(`/api/instances/${id}/resize`, { flavor: 'medium' })],
        ];
        for (const [route, pending] of requests) {
          const res = await pending;
          expect({ id, route, status: res.status }).toEqual({ id, route, status: 400 });
          expectError(res, 400, 'id', 'UUID');
        }
      }
      expect((await snapshot(vm.id)).instance.state).toBe('online');
    });

    it('takes a UUID in upper case as the same id, on either database', async () => {
      const upper = vm.id.toUpperCase();
      const byLower = await alice.get(`/api/instances/${vm.id}`).expect(200);
      const byUpper = await alice.get(`/api/instances/${upper}`);
      expect(byUpper.status).toBe(200);
      expect(byUpper.body).toEqual(byLower.body);
      const history = await alice.get(`/api/instances/${upper}/transitions`);
      expect(history.status).toBe(200);
      expect(history.body).toEqual(
        (await alice.get(`/api/instances/${vm.id}/transitions`).expect(200)).body,
      );
      const events = await alice.get(`/api/events?instance_id=${upper}&limit=500`).expect(200);
      expect(events.body.items).toEqual(await alice.events(vm.id));
    });
  });

  describe('instance fields', () => {
    it('enforces the name rules on create', async () => {
      const account = await accountSnapshot(alice);
      const bad = ['', 'a'.repeat(64), '-web', '.web', '_web', 'web 1', 'web/1', 'web\n'];
      for (const name of bad) {
        const res = await alice.post('/api/instances', { name, flavor: 'small' });
        expect({ name, status: res.status }).toEqual({ name, status: 400 });
        expectError(res, 400, 'name');
      }
      expectError(await alice.post('/api/instances', { flavor: 'small' }), 400, 'name');
      expect(await accountSnapshot(alice)).toEqual(account);

      for (const name of ['a'.repeat(63), 'a.b_c-1', '9lives']) {
        const res = await alice.post('/api/instances', { name, flavor: 'small' });
        expect({ name, status: res.status }).toEqual({ name, status: 202 });
        expect(res.body.name).toBe(name);
        await alice.waitForState(res.body.id, 'online');
      }
    });

    it('enforces the name and description rules on PATCH, and the instance is unchanged', async () => {
      const before = await snapshot(vm.id);
      for (const name of ['', 'a'.repeat(64), '-web', 'web 1', 'web/1']) {
        const res = await alice.patch(`/api/instances/${vm.id}`, { name });
        expect({ name, status: res.status }).toEqual({ name, status: 400 });
        expectError(res, 400, 'name');
      }
      expectError(
        await alice.patch(`/api/instances/${vm.id}`, { description: 'd'.repeat(501) }),
        400,
        'description',
      );
      expect(await snapshot(vm.id)).toEqual(before);
    });

    it('limits description to 500 characters', async () => {
      const account = await accountSnapshot(alice);
      expectError(
        await alice.post('/api/instances', {
          name: 'long-desc',
          flavor: 'small',
          description: 'd'.repeat(501),
        }),
        400,
        'description',
      );
      expect(await accountSnapshot(alice)).toEqual(account);
      const ok = await alice.post('/api/instances', {
        name: 'max-desc',
        flavor: 'small',
        description: 'd'.repeat(500),
      });
      expect(ok.status).toBe(202);
      expect(ok.body.description).toHaveLength(500);
      await alice.waitForState(ok.body.id, 'online');
    });

    it('refuses an unknown or missing flavor and an unknown image, naming the field', async () => {
      const account = await accountSnapshot(alice);
      expectError(
        await alice.post('/api/instances', { name: 'f1', flavor: 'huge' }),
        400,
        'flavor',
      );
      expectError(await alice.post('/api/instances', { name: 'f1' }), 400, 'flavor');
      expectError(await alice.post('/api/instances', { name: 'f1', flavor: '' }), 400, 'flavor');
      expectError(
        await alice.post('/api/instances', { name: 'f1', flavor: 'small', image: 'windows-95' }),
        400,
        'image',
      );
      expect(await accountSnapshot(alice)).toEqual(account);
    });

    it('answers wrong JSON types 400 on create, never 500', async () => {
      const account = await accountSnapshot(alice);
      const bodies: [string, unknown][] = [
        ['name', { name: 5, flavor: 'small' }],
        ['name', { name: ['web'], flavor: 'small' }],
        ['name', { name: { first: 'web' }, flavor: 'small' }],
        ['name', { name: true, flavor: 'small' }],
        ['flavor', { name: 'web', flavor: null }],
        ['flavor', { name: 'web', flavor: 1 }],
        ['flavor', { name: 'web', flavor: ['small'] }],
        ['description', { name: 'web', flavor: 'small', description: 5 }],
        ['image', { name: 'web', flavor: 'small', image: 7 }],
      ];
      for (const [field, body] of bodies) {
        const res = await alice.post('/api/instances', body as object);
        expect({ body, status: res.status }).toEqual({ body, status: 400 });
        expectError(res, 400, field);
      }
      for (const raw of ['[]', '[{"name":"web","flavor":"small"}]', '"web"', '5', 'true', 'null']) {
        const res = await alice.post('/api/instances').type('json').send(raw);
        expect({ raw, status: res.status }).toEqual({ raw, status: 400 });
        expectError(res, 400);
      }
      expect(await accountSnapshot(alice)).toEqual(account);
    });

    it('answers wrong JSON types 400 on PATCH, never 500, and the instance is unchanged', async () => {
      const before = await snapshot(vm.id);
      const bodies: [string, object][] = [
        ['name', { name: 5 }],
        ['name', { name: ['web'] }],
        ['name', { name: null }],
        ['description', { description: 7 }],
        ['description', { description: null }],
      ];
      for (const [field, body] of bodies) {
        const res = await alice.patch(`/api/instances/${vm.id}`, body);
        expect({ body, status: res.status }).toEqual({ body, status: 400 });
        expectError(res, 400, field);
      }
      for (const raw of ['[]', '[{"name":"web"}]', '"web"', '5']) {
        const res = await alice.http
          .patch(`/api/instances/${vm.id}`)
          .set('Authorization', `Bearer ${alice.token}`)
          .type('json')
          .send(raw);
        expect({ raw, status: res.status }).toEqual({ raw, status: 400 });
        expectError(res, 400);
      }
      expect(await snapshot(vm.id)).toEqual(before);
    });
  });

  describe('the list query', () => {
    it('answers a bad limit, offset or state 400, naming the parameter', async () => {
      for (const limit of ['0', '501', 'abc', '1.5', '-1', '']) {
        const res = await alice.get(`/api/instances?limit=${limit}`);
        expect({ limit, status: res.status }).toEqual({ limit, status: 400 });
        expectError(res, 400, 'limit');
      }
      for (const offset of ['-1', 'abc', '0.5']) {
        const res = await alice.get(`/api/instances?offset=${offset}`);
        expect({ offset, status: res.status }).toEqual({ offset, status: 400 });
        expectError(res, 400, 'offset');
      }
      for (const query of ['state=bogus', 'state=ONLINE', 'state=online&state=bogus']) {
        const res = await alice.get(`/api/instances?${query}`);
        expect({ query, status: res.status }).toEqual({ query, status: 400 });
        expectError(res, 400, 'state');
      }
      // The edges are accepted.
      await alice.get('/api/instances?limit=1&offset=0').expect(200);
      await alice.get('/api/instances?limit=500').expect(200);
    });

    it('answers an offset past any integer column without a 500: an empty page or a 400', async () => {
      for (const offset of ['99999999999999999999', '9223372036854775808']) {
        const res = await alice.get(`/api/instances?offset=${offset}`);
        expect({
          offset,
          status: res.status,
          allowed: [200, 400].includes(res.status),
        }).toMatchObject({ offset, allowed: true });
        if (res.status === 200) expect(res.body.items).toEqual([]);
        else expectError(res, 400, 'offset');
      }
    });

    it('validates the events query too: instance_id, limit and after', async () => {
      expectError(await alice.get('/api/events?instance_id=not-a-uuid'), 400, 'instance_id');
      for (const limit of ['0', '501', 'abc'])
        expectError(await alice.get(`/api/events?limit=${limit}`), 400, 'limit');
      for (const after of ['-1', 'abc', '1.5'])
        expectError(await alice.get(`/api/events?after=${after}`), 400, 'after');
      for (const after of ['99999999999999999999', '9223372036854775808']) {
        const res = await alice.get(`/api/events?after=${after}`);
        expect({
          after,
          status: res.status,
          allowed: [200, 400].includes(res.status),
        }).toMatchObject({ after, allowed: true });
        if (res.status === 200) expect(res.body.items).toEqual([]);
        else expectError(res, 400, 'after');
      }
    });

    it('pages newest first in the envelope {items, total, limit, offset}, 50 and 0 by default', async () => {
      const pager = await admin.createUser('pager');
      const a = await pager.online({ name: 'page-a' });
      const b = await pager.online({ name: 'page-b' });
      const c = await pager.online({ name: 'page-c' });

      const all = await pager.get('/api/instances').expect(200);
      expect(Object.keys(all.body).sort()).toEqual(['items', 'limit', 'offset', 'total']);
      expect(all.body).toMatchObject({ total: 3, limit: 50, offset: 0 });
      expect(all.body.items.map((i: InstanceBody) => i.id)).toEqual([c.id, b.id, a.id]);
      const times = all.body.items.map((i: InstanceBody) => Date.parse(i.created_at as string));
      expect([...times].sort((x, y) => y - x)).toEqual(times);

      const first = await pager.get('/api/instances?limit=2').expect(200);
      expect(first.body).toMatchObject({ total: 3, limit: 2, offset: 0 });
      expect(first.body.items.map((i: InstanceBody) => i.id)).toEqual([c.id, b.id]);
      const second = await pager.get('/api/instances?limit=2&offset=2').expect(200);
      expect(second.body).toMatchObject({ total: 3, limit: 2, offset: 2 });
      expect(second.body.items.map((i: InstanceBody) => i.id)).toEqual([a.id]);
      const middle = await pager.get('/api/instances?limit=1&offset=1').expect(200);
      expect(middle.body.items.map((i: InstanceBody) => i.id)).toEqual([b.id]);
      const past = await pager.get('/api/instances?offset=3').expect(200);
      expect(past.body).toMatchObject({ items: [], total: 3, offset: 3 });
    });

    it('filters by several states when state is repeated', async () => {
      const lister = await admin.createUser('state-lister');
      const up = await lister.online({ name: 'stays-up' });
      const down = await lister.online({ name: 'goes-down' });
      const forced = await admin
        .post(`/api/instances/${down.id}/set_ok`, { state: 'offline' })
        .expect(200);
      expect(forced.body.state).toBe('offline');

      const ids = async (query: string) => {
        const res = await lister.get(`/api/instances?${query}`).expect(200);
        expect(res.body.total).toBe(res.body.items.length);
        return res.body.items.map((i: InstanceBody) => i.id).sort();
      };
      expect(await ids('state=online&state=offline')).toEqual([up.id, down.id].sort());
      expect(await ids('state=online')).toEqual([up.id]);
      expect(await ids('state=offline')).toEqual([down.id]);
      expect(await ids('state=offline&state=erred')).toEqual([down.id]);
      expect(await ids('state=erred')).toEqual([]);
    });

    it('filters by name case-insensitively anywhere in it, taking % and _ literally', async () => {
      const lister = await admin.createUser('name-lister');
      const alpha = await lister.online({ name: 'Alpha-Web' });
      const under = await lister.online({ name: 'beta_db' });
      const plain = await lister.online({ name: 'betaXdb' });

      const names = async (name: string) => {
        const res = await lister.get(`/api/instances?name=${encodeURIComponent(name)}`).expect(200);
        expect(res.body.total).toBe(res.body.items.length);
        return res.body.items.map((i: InstanceBody) => i.name).sort();
      };
      expect(await names('alpha')).toEqual([alpha.name]);
      expect(await names('ALPHA-WEB')).toEqual([alpha.name]);
      expect(await names('ha-w')).toEqual([alpha.name]);
      expect(await names('DB')).toEqual([plain.name, under.name].sort());
      expect(await names('a_d')).toEqual([under.name]);
      expect(await names('_')).toEqual([under.name]);
      expect(await names('%')).toEqual([]);
      expect(await names('beta%db')).toEqual([]);
      expect(await names('\\')).toEqual([]);
      expect(await names('nothing-like-it')).toEqual([]);
    });
  });

  describe('actions with bodies', () => {
    it('answers resize with a missing or unknown flavor 400, and the instance is unchanged', async () => {
      const box = await alice.online({ name: 'resize-me' });
      await alice.action(box.id, 'stop');
      await alice.waitForState(box.id, 'offline');
      const before = await snapshot(box.id);

      expectError(await alice.post(`/api/instances/${box.id}/resize`), 400, 'flavor');
      expectError(await alice.post(`/api/instances/${box.id}/resize`, {}), 400, 'flavor');
      expectError(
        await alice.post(`/api/instances/${box.id}/resize`, { flavor: 'huge' }),
        400,
        'flavor',
      );
      expectError(
        await alice.post(`/api/instances/${box.id}/resize`, { flavor: null }),
        400,
        'flavor',
      );
      expectError(
        await alice.post(`/api/instances/${box.id}/resize`, { flavor: 2 }),
        400,
        'flavor',
      );
      expect(await snapshot(box.id)).toEqual(before);

      // The state allowed a resize all along: a valid one is accepted.
      const ok = await alice
        .post(`/api/instances/${box.id}/resize`, { flavor: 'medium' })
        .expect(202);
      expect(ok.body.state).toBe('resizing_scheduled');
      expect((await alice.waitForState(box.id, 'offline')).flavor).toBe('medium');
    });

    it('answers set_ok with a state other than online/offline 400, and the instance is unchanged', async () => {
      const box = await alice.online({ name: 'set-ok-me' });
      await admin.post(`/api/instances/${box.id}/set_erred`, { error_message: 'lost' }).expect(200);
      const before = await snapshot(box.id);
      for (const body of [
        { state: 'erred' },
        { state: 'provisioning' },
        { state: 'ONLINE' },
        {},
        { state: null },
      ]) {
        const res = await admin.post(`/api/instances/${box.id}/set_ok`, body);
        expect({ body, status: res.status }).toEqual({ body, status: 400 });
        expectError(res, 400, 'state');
      }
      expectError(
        await admin.post(`/api/instances/${box.id}/set_ok`, { state: 'online', error_message: '' }),
        400,
        'error_message',
      );
      expect(await snapshot(box.id)).toEqual(before);
      expect(before.instance).toMatchObject({ state: 'erred', error_message: 'lost' });
    });
  });

  describe('PATCH', () => {
    it('changes name and description: 200 with the instance, one instance.updated event', async () => {
      const box = await alice.online({ name: 'old-name', description: 'old' });
      const before = await snapshot(box.id);

      const res = await alice
        .patch(`/api/instances/${box.id}`, { name: 'new-name', description: 'new words' })
        .expect(200);
      expect(res.body).toMatchObject({
        id: box.id,
        name: 'new-name',
        description: 'new words',
        state: 'online',
        flavor: 'small',
      });
      expect(res.body).not.toHaveProperty('error_traceback');
      expect(Date.parse(res.body.updated_at)).toBeGreaterThanOrEqual(
        Date.parse(before.instance.updated_at as string),
      );
      expect((await alice.get(`/api/instances/${box.id}`).expect(200)).body).toMatchObject({
        name: 'new-name',
        description: 'new words',
        state: 'online',
      });
      const events = await alice.events(box.id);
      expect(events.length).toBe(before.events + 1);
      expect(events[events.length - 1]).toMatchObject({
        type: 'instance.updated',
        state: 'online',
      });
      const history = await alice.get(`/api/instances/${box.id}/transitions`).expect(200);
      expect(history.body.items[history.body.items.length - 1]).toMatchObject({
        from: 'online',
        to: 'online',
        action: 'update',
      });
    });

    it('changes only the fields sent, and answers the whole instance', async () => {
      const box = await alice.online({ name: 'partial', description: 'kept' });

      const descOnly = await alice
        .patch(`/api/instances/${box.id}`, { description: 'changed' })
        .expect(200);
      const afterDesc = (await alice.get(`/api/instances/${box.id}`).expect(200)).body;
      expect(afterDesc).toMatchObject({ name: 'partial', description: 'changed' });
      expect(descOnly.body).toEqual(afterDesc);

      const nameOnly = await alice
        .patch(`/api/instances/${box.id}`, { name: 'partial-2' })
        .expect(200);
      const afterName = (await alice.get(`/api/instances/${box.id}`).expect(200)).body;
      expect(afterName).toMatchObject({ name: 'partial-2', description: 'changed' });
      expect(nameOnly.body).toEqual(afterName);
    });

    it('answers 409 from erred, naming the state, and the instance is unchanged', async () => {
      const box = await alice.online({ name: 'patch-erred' });
      await admin
        .post(`/api/instances/${box.id}/set_erred`, { error_message: 'broken' })
        .expect(200);
      const before = await snapshot(box.id);
      const res = await alice.patch(`/api/instances/${box.id}`, { name: 'renamed' });
      expectError(res, 409, "'erred'");
      expect(await snapshot(box.id)).toEqual(before);
    });

    it('answers 409 from a transitional state, naming the state, and the instance is unchanged', async () => {
      const box = await alice.online({ name: 'patch-busy' });
      // The stop hangs at the backend, so the instance stays 'stopping' until JOB_TIMEOUT_MS.
      await admin
        .post('/api/simulator/faults', { operation: 'stop', instance_id: box.id, mode: 'hang' })
        .expect(201);
      const scheduled = await alice.action(box.id, 'stop');
      expect(scheduled.state).toBe('stopping_scheduled');
      await alice.waitForState(box.id, 'stopping');
      const before = await snapshot(box.id);

      const res = await alice.patch(`/api/instances/${box.id}`, {
        name: 'renamed',
        description: 'nope',
      });
      expectError(res, 409, "'stopping'");
      const after = await snapshot(box.id);
      expect(after).toEqual(before);
      expect(after.instance).toMatchObject({ name: 'patch-busy', state: 'stopping' });

      // Free the record; the hung job finds it no longer owns the instance.
      await admin.post(`/api/instances/${box.id}/set_ok`, { state: 'online' }).expect(200);
    });
  });
});
