import { DataSource } from 'typeorm';
import { ApiClient } from './support/api';
import { startApp, TestApp } from './support/test-app';

/**
 * What people exploring the service meet (API.md section 9): Swagger UI and the OpenAPI document
 * a client is generated from, and the queue dashboard behind staff HTTP Basic auth.
 */

type Method = 'get' | 'post' | 'patch' | 'delete';

/** Every route of API.md sections 2, 3, 4, 5, 7, 8 and the health check of section 9, as written there. */
const ROUTES: [Method, string][] = [
  ['post', '/api/users'],
  ['get', '/api/users/me'],
  ['get', '/api/flavors'],
  ['get', '/api/images'],
  ['post', '/api/instances'],
  ['get', '/api/instances'],
  ['get', '/api/instances/{id}'],
  ['patch', '/api/instances/{id}'],
  ['delete', '/api/instances/{id}'],
  ['post', '/api/instances/{id}/start'],
  ['post', '/api/instances/{id}/stop'],
  ['post', '/api/instances/{id}/restart'],
  ['post', '/api/instances/{id}/resize'],
  ['post', '/api/instances/{id}/pull'],
  ['post', '/api/instances/{id}/set_erred'],
  ['post', '/api/instances/{id}/set_ok'],
  ['post', '/api/instances/{id}/unlink'],
  ['get', '/api/instances/{id}/transitions'],
  ['get', '/api/events'],
  ['get', '/api/events/stream'],
  ['post', '/api/simulator/faults'],
  ['get', '/api/simulator/faults'],
  ['delete', '/api/simulator/faults/{id}'],
  ['get', '/api/health'],
];

/** The action routes of section 4: `202`, and `409` from a state the table does not allow. */
const ACTION_ROUTES: [Method, string][] = [
  ['delete', '/api/instances/{id}'],
  ['post', '/api/instances/{id}/start'],
  ['post', '/api/instances/{id}/stop'],
  ['post', '/api/instances/{id}/restart'],
  ['post', '/api/instances/{id}/resize'],
  ['post', '/api/instances/{id}/pull'],
];

/** Section 4's table, plus `erred`. */
const STATES = [
  'provisioning_scheduled',
  'provisioning',
  'online',
  'offline',
  'starting_scheduled',
  'starting',
  'stopping_scheduled',
  'stopping',
  'restarting_scheduled',
  'restarting',
  'resizing_scheduled',
  'resizing',
  'deletion_scheduled',
  'deleting',
  'pulling_scheduled',
  'pulling',
  'erred',
];

/** Section 3. */
const INSTANCE_FIELDS = [
  'id',
  'name',
  'description',
  'flavor',
  'image',
  'state',
  'error_message',
  'error_traceback',
  'backend_id',
  'owner_id',
  'created_at',
  'updated_at',
];

/* eslint-disable @typescript-eslint/no-explicit-any */
type Json = any;

describe('Swagger UI, the OpenAPI document and the queue dashboard', () => {
  let t: TestApp;
  let admin: ApiClient;
  let doc: Json;

  beforeAll(async () => {
    t = await startApp();
    admin = new ApiClient(t.http, t.adminToken);
    doc = (await t.http.get('/api/docs-json').expect(200)).body;
  });
  afterAll(() => t.close());

  /** Follows `$ref`s (and the `allOf: [$ref]` wrapper Nest emits) to the schema itself. */
  function resolve(schema: Json): Json {
    let s = schema;
    for (let i = 0; i < 10 && s; i++) {
      if (s.$ref)
        s = s.$ref
          .replace('#/', '')
          .split('/')
          .reduce((node: Json, key: string) => node?.[key], doc);
      else if (Array.isArray(s.allOf) && s.allOf.length === 1) s = s.allOf[0];
      else return s;
    }
    return s;
  }

  function operation(method: Method, path: string): Json {
    return doc.paths?.[path]?.[method];
  }

  function allOperations(): [string, string, Json][] {
    return Object.entries(doc.paths ?? {}).flatMap(([path, item]: [string, Json]) =>
      Object.entries(item)
        .filter(([method]) =>
          ['get', 'put', 'post', 'delete', 'options', 'head', 'patch', 'trace'].includes(method),
        )
        .map(([method, op]) => [method, path, op] as [string, string, Json]),
    );
  }

  function responseSchema(method: Method, path: string, status: number): Json {
    return resolve(
      operation(method, path)?.responses?.[status]?.content?.['application/json']?.schema,
    );
  }

  function requestSchema(method: Method, path: string): Json {
    return resolve(operation(method, path)?.requestBody?.content?.['application/json']?.schema);
  }

  // ---- Swagger UI -----------------------------------------------------------------------------

  it('GET /api/docs is Swagger UI, and the scripts and styles it loads are served', async () => {
    const res = await t.http.get('/api/docs').expect(200);
    expect(res.headers['content-type']).toMatch(/^text\/html/);
    expect(res.text).toMatch(/swagger-ui/i);

    const assets = [...res.text.matchAll(/(?:src|href)="([^"]+\.(?:js|css))"/g)].map((m) => m[1]);
    expect(assets.length).toBeGreaterThan(0);
    for (const asset of assets) {
      const url = new URL(asset, 'http://provisor.test/api/docs');
      const got = await t.http.get(url.pathname);
      expect({ asset: url.pathname, status: got.status }).toEqual({
        asset: url.pathname,
        status: 200,
      });
    }
    // The page shows this service's API, not an empty or default one.
    const scripts = await Promise.all(
      assets
        .filter((a) => a.endsWith('.js'))
        .map((a) => t.http.get(new URL(a, 'http://provisor.test/api/docs').pathname)),
    );
    expect(
      scripts.some(
        (s) => s.text.includes('/api/instances/{id}/start') || s.text.includes('/api/docs-json'),
      ),
    ).toBe(true);
  });

  it('needs no token for the docs', async () => {
    await t.http.get('/api/docs').expect(200);
    await t.http.get('/api/docs-json').expect(200);
  });

  // ---- the OpenAPI document -------------------------------------------------------------------

  it('refuses a body it cannot take on its pages at once, though no guard of the API runs there', async () => {
    for (const path of ['/api/docs', '/api/docs-json', '/API/Docs-JSON']) {
      const res = await t.http.get(path).set('content-type', 'application/json').send('{bad');
      expect({ path, status: res.status, message: res.body.message }).toEqual({
        path,
        status: 400,
        message: 'Malformed JSON in request body',
      });
    }
  });

  it('GET /api/docs-json is an OpenAPI 3 document', async () => {
    const res = await t.http.get('/api/docs-json').expect(200);
    expect(res.headers['content-type']).toMatch(/application\/json/);
    expect(res.body.openapi).toMatch(/^3\.\d+\.\d+$/);
    expect(res.body.info).toMatchObject({ title: expect.any(String), version: expect.any(String) });
  });

  it('has every route of API.md, with its method, at the path as API.md writes it', () => {
    const missing = ROUTES.filter(([method, path]) => !operation(method, path)).map(
      ([method, path]) => `${method.toUpperCase()} ${path}`,
    );
    expect(missing).toEqual([]);
    // Nest's own spelling must not leak through.
    expect(Object.keys(doc.paths).filter((p) => p.includes(':'))).toEqual([]);
  });

  it('names the path parameter `id` on every route with {id}', () => {
    const wrong = allOperations()
      .filter(([, path]) => path.includes('{id}'))
      .filter(
        ([, , op]) =>
          !(op.parameters ?? []).some(
            (p: Json) => p.name === 'id' && p.in === 'path' && p.required,
          ),
      )
      .map(([method, path]) => `${method.toUpperCase()} ${path}`);
    expect(wrong).toEqual([]);
    expect(
      allOperations().filter(([, path]) => path.includes('{id}')).length,
    ).toBeGreaterThanOrEqual(13);
  });

  it('documents the query parameters of the list routes', () => {
    const names = (method: Method, path: string) =>
      (operation(method, path)?.parameters ?? [])
        .filter((p: Json) => p.in === 'query')
        .map((p: Json) => p.name);
    expect(names('get', '/api/instances')).toEqual(
      expect.arrayContaining(['state', 'name', 'limit', 'offset']),
    );
    expect(names('get', '/api/events')).toEqual(
      expect.arrayContaining(['instance_id', 'after', 'limit']),
    );
  });

  it('gives every operation a unique operationId', () => {
    const ops = allOperations();
    const withoutId = ops.filter(
      ([, , op]) => typeof op.operationId !== 'string' || op.operationId === '',
    );
    expect(withoutId.map(([m, p]) => `${m} ${p}`)).toEqual([]);
    const ids = ops.map(([, , op]) => op.operationId);
    expect(new Set(ids).size).toBe(ids.length);
  });

  it('declares a bearer security scheme, required by every /api route but health and the docs', () => {
    const schemes: Record<string, Json> = doc.components?.securitySchemes ?? {};
    const bearer = Object.entries(schemes).find(
      ([, s]) => s.type === 'http' && /^bearer$/i.test(s.scheme),
    );
    expect(bearer).toBeDefined();
    const name = bearer![0];

    const uses = (op: Json) => (op.security ?? doc.security ?? []).some((req: Json) => name in req);
    const unprotected = ROUTES.filter(([, path]) => path !== '/api/health')
      .filter(([method, path]) => operation(method, path) && !uses(operation(method, path)))
      .map(([method, path]) => `${method.toUpperCase()} ${path}`);
    expect(unprotected).toEqual([]);
  });

  it('describes the instance with every field of section 3, and state as an enum of every state', () => {
    const instance = responseSchema('get', '/api/instances/{id}', 200);
    expect(instance?.type).toBe('object');
    expect(Object.keys(instance.properties).sort()).toEqual([...INSTANCE_FIELDS].sort());

    const state = resolve(instance.properties.state);
    expect(state.enum).toEqual(expect.arrayContaining(STATES));
    expect([...state.enum].sort()).toEqual([...STATES].sort());

    // The same schema where instances are answered: actions, the list, PATCH and the staff routes.
    for (const [method, path, status] of [
      ['post', '/api/instances', 202],
      ['post', '/api/instances/{id}/start', 202],
      ['delete', '/api/instances/{id}', 202],
      ['patch', '/api/instances/{id}', 200],
      ['post', '/api/instances/{id}/set_ok', 200],
    ] as [Method, string, number][]) {
      expect({
        route: `${method} ${path}`,
        fields: Object.keys(responseSchema(method, path, status)?.properties ?? {}).sort(),
      }).toEqual({
        route: `${method} ${path}`,
        fields: [...INSTANCE_FIELDS].sort(),
      });
    }
    const page = responseSchema('get', '/api/instances', 200);
    expect(Object.keys(page.properties).sort()).toEqual(['items', 'limit', 'offset', 'total']);
    expect(Object.keys(resolve(page.properties.items.items).properties).sort()).toEqual(
      [...INSTANCE_FIELDS].sort(),
    );
  });

  it('describes request bodies with their fields', () => {
    const fields = (method: Method, path: string) =>
      Object.keys(requestSchema(method, path)?.properties ?? {}).sort();
    expect(fields('post', '/api/instances')).toEqual(['description', 'flavor', 'image', 'name']);
    expect(fields('patch', '/api/instances/{id}')).toEqual(['description', 'name']);
    expect(fields('post', '/api/instances/{id}/resize')).toEqual(['flavor']);
    expect(fields('post', '/api/instances/{id}/set_erred')).toEqual(['error_message']);
    expect(fields('post', '/api/instances/{id}/set_ok')).toEqual(['state']);
    expect(fields('post', '/api/users')).toEqual(['is_staff', 'username']);
    expect(fields('post', '/api/simulator/faults')).toEqual([
      'instance_id',
      'message',
      'mode',
      'operation',
      'times',
    ]);
    expect(
      resolve(requestSchema('post', '/api/simulator/faults').properties.operation).enum.sort(),
    ).toEqual(['delete', 'provision', 'pull', 'resize', 'restart', 'start', 'stop']);
    expect(
      resolve(requestSchema('post', '/api/simulator/faults').properties.mode).enum.sort(),
    ).toEqual(['error', 'hang', 'transient']);
  });

  it('describes the transitions and events answers with their fields', () => {
    const transitions = responseSchema('get', '/api/instances/{id}/transitions', 200);
    expect(Object.keys(resolve(transitions.properties.items.items).properties).sort()).toEqual([
      'action',
      'at',
      'error_message',
      'from',
      'to',
    ]);
    const events = responseSchema('get', '/api/events', 200);
    expect(Object.keys(resolve(events.properties.items.items).properties).sort()).toEqual([
      'at',
      'error_message',
      'id',
      'instance_id',
      'state',
      'type',
    ]);
  });

  it('documents 409 on every action route, and 400, 401 and 404 where API.md lists them', () => {
    const lacking: string[] = [];
    const expectStatuses = (method: Method, path: string, statuses: number[]) => {
      const responses = operation(method, path)?.responses ?? {};
      for (const status of statuses)
        if (!responses[status]) lacking.push(`${method.toUpperCase()} ${path} ${status}`);
    };
    for (const [method, path] of ACTION_ROUTES)
      expectStatuses(method, path, [202, 400, 401, 404, 409]);
    expectStatuses('post', '/api/instances', [202, 400, 401]);
    expectStatuses('get', '/api/instances', [200, 400, 401]);
    expectStatuses('get', '/api/instances/{id}', [200, 400, 401, 404]);
    expectStatuses('patch', '/api/instances/{id}', [200, 400, 401, 404, 409]);
    expectStatuses('get', '/api/instances/{id}/transitions', [200, 401, 404]);
    for (const route of ['set_erred', 'set_ok', 'unlink']) {
      expectStatuses('post', `/api/instances/{id}/${route}`, [401, 403, 404]);
    }
    expectStatuses('post', '/api/users', [201, 401, 403, 409]);
    expectStatuses('get', '/api/users/me', [200, 401]);
    expectStatuses('get', '/api/events', [200, 400, 401]);
    expectStatuses('post', '/api/simulator/faults', [201, 400, 401, 403]);
    expectStatuses('delete', '/api/simulator/faults/{id}', [204, 401, 403]);
    expect(lacking).toEqual([]);
  });

  it('gives the error responses the error body {statusCode, error, message}', () => {
    const error = resolve(
      operation('post', '/api/instances/{id}/start').responses[409].content['application/json']
        .schema,
    );
    expect(Object.keys(error.properties).sort()).toEqual(['error', 'message', 'statusCode']);
    for (const status of [400, 401, 404]) {
      const schema = resolve(
        operation('get', '/api/instances/{id}').responses[status].content['application/json']
          .schema,
      );
      expect(schema).toEqual(error);
    }
  });

  // ---- the queue dashboard --------------------------------------------------------------------

  describe('GET /admin/queues', () => {
    const basic = (username: string, password: string) => ({
      Authorization: `Basic ${Buffer.from(`${username}:${password}`).toString('base64')}`,
    });

    it('without credentials is 401 with a Basic challenge', async () => {
      const res = await t.http.get('/admin/queues');
      expect(res.status).toBe(401);
      expect(res.headers['www-authenticate']).toMatch(/^Basic realm="[^"]+"/);
    });

    it("with a non-staff user's username and token is 401", async () => {
      const userRes = await admin
        .post('/api/users', { username: 'carol', is_staff: false })
        .expect(201);
      const res = await t.http.get('/admin/queues').set(basic('carol', userRes.body.token));
      expect(res.status).toBe(401);
      expect(res.headers['www-authenticate']).toMatch(/^Basic /);
    });

    it('with a staff token under another username, a wrong token, or a bearer token is 401', async () => {
      await t.http.get('/admin/queues').set(basic('root', t.adminToken)).expect(401);
      await t.http
        .get('/admin/queues')
        .set(basic('admin', `${t.adminToken}x`))
        .expect(401);
      await t.http.get('/admin/queues').set(basic('admin', '')).expect(401);
      await t.http
        .get('/admin/queues')
        .set({ Authorization: `Bearer ${t.adminToken}` })
        .expect(401);
      const ops = await admin.post('/api/users', { username: 'ops', is_staff: true }).expect(201);
      await t.http.get('/admin/queues').set(basic('admin', ops.body.token)).expect(401);
    });

    it('with a staff username and token is 200 HTML, for admin and for any staff user', async () => {
      const res = await t.http.get('/admin/queues').set(basic('admin', t.adminToken));
      expect(res.status).toBe(200);
      expect(res.headers['content-type']).toMatch(/^text\/html/);
      expect(res.text).toMatch(/<html/i);

      const dana = await admin.post('/api/users', { username: 'dana', is_staff: true }).expect(201);
      await t.http.get('/admin/queues').set(basic('dana', dana.body.token)).expect(200);
    });

    it("keeps the dashboard's JSON API behind the same auth", async () => {
      const res = await t.http.get('/admin/queues/api/queues');
      expect(res.status).toBe(401);
      expect(res.text).not.toContain('instance-operations');
    });

    it('refuses a body it cannot take at once, however the path is spelled, and acts on nothing', async () => {
      const auth = basic('admin', t.adminToken);
      // No guard of the API's runs for the dashboard's routes: the body's refusal is answered
      // before them, in bull-board's error shape.
      // However the path is spelled: the router matches in any case, and decodes it.
      for (const path of [
        '/admin/queues/api/queues/instance-operations/pause',
        '/ADMIN/Queues/api/queues/instance-operations/pause',
        '/%61dmin/queues/api/queues/instance-operations/pause',
      ]) {
        for (const [type, text, status, message] of [
          ['application/json', '{bad', 400, 'Malformed JSON in request body'],
          ['text/plain', 'pause it', 415, 'Send the request body as JSON'],
          ['application/json', '{"__proto__": {}}', 400, 'property __proto__ should not exist'],
        ] as const) {
          const res = await t.http.put(path).set(auth).set('content-type', type).send(text);
          expect({ path, text, status: res.status, message: res.body.message }).toEqual({
            path,
            text,
            status,
            message: expect.stringContaining(message),
          });
        }
      }
      const queues = await t.http.get('/admin/queues/api/queues').set(auth).expect(200);
      const queue = queues.body.queues.find((q: Json) => q.name === 'instance-operations');
      expect(queue.isPaused).toBe(false);
    });

    it("lists the queue 'instance-operations' and shows the finished job of a created instance", async () => {
      const vm = await admin.online({ name: 'dash-1' });
      const auth = basic('admin', t.adminToken);

      const deadline = Date.now() + 10_000;
      let job: Json;
      let queue: Json;
      while (!job && Date.now() < deadline) {
        const res = await t.http
          .get('/admin/queues/api/queues?activeQueue=instance-operations&status=completed&page=1')
          .set(auth)
          .expect(200);
        queue = res.body.queues.find((q: Json) => q.name === 'instance-operations');
        job = queue?.jobs.find((j: Json) => j.data?.instanceId === vm.id);
        if (!job) await new Promise((r) => setTimeout(r, 50));
      }
      expect(queue).toBeDefined();
      expect(queue.counts.completed).toBeGreaterThanOrEqual(1);
      expect(job).toMatchObject({
        name: 'provision',
        finishedOn: expect.any(Number),
        isFailed: false,
      });
    });
  });
});

describe('the queue dashboard when the database fails', () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await startApp();
  });
  afterAll(() => t?.close());

  it("answers the sign-in 500 in the API's error shape, at once", async () => {
    await t.app.get(DataSource).destroy();
    const credentials = Buffer.from('admin:pvs_never-seen-before').toString('base64');
    const res = await t.http
      .get('/admin/queues')
      .set('Authorization', `Basic ${credentials}`)
      .timeout(5_000);
    expect({ status: res.status, body: res.body }).toEqual({
      status: 500,
      body: { statusCode: 500, error: 'Internal Server Error', message: 'Internal server error' },
    });
    expect(res.headers['content-type']).toMatch(/^application\/json/);
  });
});
