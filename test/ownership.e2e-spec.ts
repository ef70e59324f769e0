import { randomUUID } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import { ApiClient, InstanceBody } from './support/api';
import { RawResponse, sendRaw } from './support/raw-http';
import { startApp, TestApp } from './support/test-app';

/**
 * API.md section 2 as a matrix: every route, sent by the owner of the instance, by another
 * non-staff user, by a staff user and with no token, answers exactly the status the contract
 * gives. Someone else's instance is a 404 indistinguishable from one that does not exist;
 * staff-only routes are 403 to everyone else; a refused request changes nothing.
 */

type Who = 'owner' | 'other' | 'staff' | 'none';
const CALLERS: Who[] = ['owner', 'other', 'staff', 'none'];
/* eslint-disable @typescript-eslint/no-explicit-any */
type Json = any;
/** An answer whose JSON body the rows read field by field. */
type Answer = RawResponse & { json: Json };

interface Sent {
  /** The instance the request was about, if any. */
  instance?: string;
  /** The fault it was about, if any. */
  fault?: string;
  /** The body sent, if any. */
  body?: Json;
}

interface Row {
  expected: Record<Who, number>;
  /** The instance is made for each caller anew, in a state the route is allowed from. */
  instance?: 'online' | 'offline';
  /** `{id}` names a fault, armed anew for each caller. */
  fault?: boolean;
  query?: (instance: string) => string;
  body?: (who: Who, instance: string) => Json;
  /** What a success did: checked on the answer and on what staff see afterwards. */
  success: (res: Answer, sent: Sent, who: Who) => Promise<void> | void;
  /** Not in the OpenAPI document (Swagger UI, the document itself, metrics, the dashboard). */
  undocumented?: boolean;
}

const OPEN = { owner: 200, other: 200, staff: 200, none: 200 };
const ANY_USER = { owner: 200, other: 200, staff: 200, none: 401 };
const OWNED = { owner: 200, other: 404, staff: 200, none: 401 };
const ACTION = { owner: 202, other: 404, staff: 202, none: 401 };
const STAFF = (status: number) => ({ owner: 403, other: 403, staff: status, none: 401 });

describe('who may call what: the ownership matrix', () => {
  let t: TestApp;
  let port: number;
  let admin: ApiClient;
  const clients = {} as Record<Exclude<Who, 'none'>, ApiClient>;
  const ids = {} as Record<Exclude<Who, 'none'>, string>;
  const names: Record<Exclude<Who, 'none'>, string> = {
    owner: 'olive',
    other: 'oscar',
    staff: 'stella',
  };
  let doc: Json;
  let usernames = 0;

  /** What staff see of an instance: the instance, its history and its events. */
  async function seen(id: string) {
    const res = await admin.get(`/api/instances/${id}`);
    if (res.status === 404) return { gone: true };
    expect(res.status).toBe(200);
    const history = await admin.get(`/api/instances/${id}/transitions`);
    // A deletion's job may finish between the two reads.
    if (history.status === 404) return { gone: true };
    expect(history.status).toBe(200);
    return { instance: res.body, transitions: history.body.items, events: await admin.events(id) };
  }

  const faultIds = async (): Promise<string[]> =>
    (await admin.get('/api/simulator/faults').expect(200)).body.items.map(
      (f: { id: string }) => f.id,
    );

  function scheduledBy(state: string) {
    return async (res: Answer, sent: Sent) => {
      expect(res.json).toMatchObject({ id: sent.instance, state });
      const now = await seen(sent.instance!);
      // The simulated cloud takes 10 ms here: a deletion may be over, its record gone.
      if (state === 'deletion_scheduled' && now.gone) return;
      expect(now.instance).toMatchObject({ owner_id: ids.owner });
    };
  }

  /** Every route of the OpenAPI document, and the pages beside it, with the status per caller. */
  const MATRIX: Record<string, Row> = {
    'POST /api/users': {
      expected: STAFF(201),
      body: () => ({ username: `made-${(usernames += 1)}` }),
      success: async (res, sent) => {
        expect(res.json).toMatchObject({ username: sent.body.username, is_staff: false });
        const made = new ApiClient(t.http, res.json.token);
        expect((await made.get('/api/users/me').expect(200)).body.username).toBe(
          sent.body.username,
        );
      },
    },
    'GET /api/users/me': {
      expected: ANY_USER,
      success: (res, _sent, who) => {
        expect(res.json).toEqual({
          id: ids[who as Exclude<Who, 'none'>],
          username: names[who as Exclude<Who, 'none'>],
          is_staff: who === 'staff',
        });
      },
    },
    'POST /api/instances': {
      expected: { owner: 202, other: 202, staff: 202, none: 401 },
      body: (who) => ({ name: `by-${who}`, flavor: 'small' }),
      success: (res, _sent, who) => {
        expect(res.json).toMatchObject({
          name: `by-${who}`,
          state: 'provisioning_scheduled',
          owner_id: ids[who as Exclude<Who, 'none'>],
        });
        expect(res.headers.location).toBe(`/api/instances/${res.json.id}`);
      },
    },
    'GET /api/instances': {
      expected: ANY_USER,
      instance: 'online',
      success: (res, sent, who) => {
        const listed = res.json.items.map((i: InstanceBody) => i.id);
        if (who === 'other') expect(listed).not.toContain(sent.instance);
        else expect(listed).toContain(sent.instance);
      },
    },
    'GET /api/instances/{id}': {
      expected: OWNED,
      instance: 'online',
      success: (res, sent) => {
        expect(res.json).toMatchObject({ id: sent.instance, owner_id: ids.owner, state: 'online' });
      },
    },
    'PATCH /api/instances/{id}': {
      expected: OWNED,
      instance: 'online',
      body: (who) => ({ description: `set by ${who}` }),
      success: async (res, sent, who) => {
        expect(res.json).toMatchObject({ id: sent.instance, description: `set by ${who}` });
        expect((await seen(sent.instance!)).instance).toMatchObject({
          description: `set by ${who}`,
          owner_id: ids.owner,
        });
      },
    },
    'DELETE /api/instances/{id}': {
      expected: ACTION,
      instance: 'offline',
      success: scheduledBy('deletion_scheduled'),
    },
    'POST /api/instances/{id}/start': {
      expected: ACTION,
      instance: 'offline',
      success: scheduledBy('starting_scheduled'),
    },
    'POST /api/instances/{id}/stop': {
      expected: ACTION,
      instance: 'online',
      success: scheduledBy('stopping_scheduled'),
    },
    'POST /api/instances/{id}/restart': {
      expected: ACTION,
      instance: 'online',
      success: scheduledBy('restarting_scheduled'),
    },
    'POST /api/instances/{id}/resize': {
      expected: ACTION,
      instance: 'offline',
      body: () => ({ flavor: 'large' }),
      success: scheduledBy('resizing_scheduled'),
    },
    'POST /api/instances/{id}/pull': {
      expected: ACTION,
      instance: 'online',
      success: scheduledBy('pulling_scheduled'),
    },
    'GET /api/instances/{id}/transitions': {
      expected: OWNED,
      instance: 'online',
      success: (res) => {
        expect(res.json.items.map((h: { to: string }) => h.to)).toEqual([
          'provisioning_scheduled',
          'provisioning',
          'online',
        ]);
      },
    },
    'POST /api/instances/{id}/set_erred': {
      expected: STAFF(200),
      instance: 'online',
      body: (who) => ({ error_message: `forced by ${who}` }),
      success: async (res, sent, who) => {
        expect(res.json).toMatchObject({ state: 'erred', error_message: `forced by ${who}` });
        expect((await seen(sent.instance!)).instance).toMatchObject({ state: 'erred' });
      },
    },
    'POST /api/instances/{id}/set_ok': {
      expected: STAFF(200),
      instance: 'online',
      body: () => ({ state: 'offline' }),
      success: async (res, sent) => {
        expect(res.json).toMatchObject({ id: sent.instance, state: 'offline' });
        expect((await seen(sent.instance!)).instance).toMatchObject({ state: 'offline' });
      },
    },
    'POST /api/instances/{id}/unlink': {
      expected: STAFF(204),
      instance: 'online',
      success: async (res, sent) => {
        expect(res.text).toBe('');
        expect(await seen(sent.instance!)).toEqual({ gone: true });
      },
    },
    'GET /api/flavors': {
      expected: ANY_USER,
      success: (res) =>
        expect(res.json.items.map((f: { name: string }) => f.name)).toContain('small'),
    },
    'GET /api/images': {
      expected: ANY_USER,
      success: (res) =>
        expect(res.json.items.map((i: { name: string }) => i.name)).toContain('debian-12'),
    },
    'GET /api/events': {
      expected: ANY_USER,
      instance: 'online',
      query: (id) => `instance_id=${id}`,
      success: (res, sent, who) => {
        const of = res.json.items.map((e: { instance_id: string }) => e.instance_id);
        // Another user's instance has no events, as if it did not exist.
        if (who === 'other') expect(of).toEqual([]);
        else expect(of.length).toBeGreaterThanOrEqual(3);
        for (const id of of) expect(id).toBe(sent.instance);
      },
    },
    'GET /api/events/stream': {
      expected: ANY_USER,
      success: (res) => {
        expect(res.streamed).toBe(true);
        expect(res.headers['content-type']).toMatch(/^text\/event-stream/);
      },
    },
    'POST /api/simulator/faults': {
      expected: STAFF(201),
      instance: 'online',
      body: (_who, instance) => ({ operation: 'resize', instance_id: instance, mode: 'error' }),
      success: async (res, sent) => {
        expect(res.json).toMatchObject({ instance_id: sent.instance, operation: 'resize' });
        expect(await faultIds()).toContain(res.json.id);
      },
    },
    'GET /api/simulator/faults': {
      expected: STAFF(200),
      success: (res) => expect(Array.isArray(res.json.items)).toBe(true),
    },
    'DELETE /api/simulator/faults/{id}': {
      expected: STAFF(204),
      fault: true,
      success: async (_res, sent) => expect(await faultIds()).not.toContain(sent.fault),
    },
    'GET /api/simulator/vms': {
      expected: STAFF(200),
      instance: 'online',
      query: (id) => `instance_id=${id}`,
      success: (res, sent) =>
        expect(res.json.items.map((v: { instance_id: string }) => v.instance_id)).toEqual([
          sent.instance,
        ]),
    },
    'GET /api/health': {
      expected: OPEN,
      success: (res) => expect(res.json.status).toBe('ok'),
    },
    'GET /api/docs': {
      expected: OPEN,
      undocumented: true,
      success: (res) => expect(res.text).toContain('swagger-ui'),
    },
    'GET /api/docs-json': {
      expected: OPEN,
      undocumented: true,
      success: (res) => expect(res.json.paths['/api/instances']).toBeDefined(),
    },
    'GET /metrics': {
      expected: OPEN,
      undocumented: true,
      success: (res) => expect(res.text).toContain('# HELP'),
    },
    // HTTP Basic with each caller's own username and token; staff only, and no 403 here.
    'GET /admin/queues': {
      expected: { owner: 401, other: 401, staff: 200, none: 401 },
      undocumented: true,
      success: (res) => expect(res.headers['content-type']).toMatch(/^text\/html/),
    },
  };

  beforeAll(async () => {
    t = await startApp({ RATE_LIMIT_PER_MINUTE: '0' });
    await t.app.listen(0, '127.0.0.1');
    port = (t.app.getHttpServer().address() as AddressInfo).port;
    admin = new ApiClient(t.http, t.adminToken);
    clients.owner = await admin.createUser(names.owner);
    clients.other = await admin.createUser(names.other);
    clients.staff = await admin.createUser(names.staff, true);
    for (const who of ['owner', 'other', 'staff'] as const)
      ids[who] = (await clients[who].get('/api/users/me').expect(200)).body.id;
    doc = (await t.http.get('/api/docs-json').expect(200)).body;
  });
  afterAll(() => t?.close());

  it('has a row for every route of the OpenAPI document, and none the document lacks', () => {
    const documented = Object.entries(doc.paths as Record<string, Record<string, Json>>)
      .flatMap(([path, ops]) => Object.keys(ops).map((m) => `${m.toUpperCase()} ${path}`))
      .sort();
    expect(documented.length).toBeGreaterThan(20);
    const rows = Object.entries(MATRIX)
      .filter(([, row]) => !row.undocumented)
      .map(([route]) => route)
      .sort();
    expect(rows).toEqual(documented);
  });

  /** An instance of the owner's in `state`, with nothing left running. */
  async function ownersInstance(state: 'online' | 'offline'): Promise<string> {
    const vm = await clients.owner.online({ name: `owned-${state}` });
    if (state === 'offline') {
      await clients.owner.action(vm.id, 'stop');
      await clients.owner.waitForState(vm.id, 'offline');
    }
    return vm.id;
  }

  function headersOf(who: Who, route: string): [string, string][] {
    if (who === 'none') return [];
    const token = clients[who].token;
    if (route === 'GET /admin/queues')
      return [
        ['Authorization', `Basic ${Buffer.from(`${names[who]}:${token}`).toString('base64')}`],
      ];
    return [['Authorization', `Bearer ${token}`]];
  }

  async function send(route: string, who: Who, path: string, body?: Json): Promise<Answer> {
    const headers = headersOf(who, route);
    if (body !== undefined) headers.push(['Content-Type', 'application/json']);
    return await sendRaw(port, {
      method: route.split(' ')[0],
      path,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  }

  function expectErrorShape(res: Answer, status: number): void {
    expect(res.headers['content-type']).toMatch(/^application\/json/);
    expect(res.json).toEqual({
      statusCode: status,
      error: expect.any(String),
      message: expect.anything(),
    });
    expect(String(res.json.message).length).toBeGreaterThan(0);
  }

  describe.each(Object.entries(MATRIX))('%s', (route, row) => {
    it.each(CALLERS)('as %s', async (who) => {
      const expected = row.expected[who];
      const sent: Sent = {};
      if (row.instance) sent.instance = await ownersInstance(row.instance);
      if (row.fault)
        sent.fault = (
          await admin
            .post('/api/simulator/faults', { operation: 'restart', mode: 'error' })
            .expect(201)
        ).body.id;
      sent.body = row.body?.(who, sent.instance!);
      const id = sent.instance ?? sent.fault;
      const path = (target?: string) =>
        route.split(' ')[1].replace('{id}', target ?? '') +
        (row.query && sent.instance ? `?${row.query(sent.instance)}` : '');

      const before = sent.instance ? await seen(sent.instance) : undefined;
      const faultsBefore = await faultIds();
      const instancesBefore = (await admin.get('/api/instances?limit=500').expect(200)).body.total;
      const res = await send(route, who, path(id), sent.body);

      expect({ route, who, status: res.status }).toEqual({ route, who, status: expected });
      if (expected < 300) {
        await row.success(res, sent, who);
        return;
      }
      if (route === 'GET /admin/queues') {
        expect(res.headers['www-authenticate']).toMatch(/^Basic /);
      } else {
        expectErrorShape(res, expected);
      }
      // A refusal changes nothing: the instance, its history, its events, the armed faults.
      if (sent.instance) expect(await seen(sent.instance)).toEqual(before);
      expect(await faultIds()).toEqual(faultsBefore);
      expect((await admin.get('/api/instances?limit=500').expect(200)).body.total).toBe(
        instancesBefore,
      );
      if (route === 'POST /api/users') {
        // The name was not taken by the refused request.
        await admin.post('/api/users', sent.body).expect(201);
      }
      if (expected === 404 && id) {
        // Exactly the answer for an id that does not exist.
        const missing = await send(route, who, path(randomUUID()), sent.body);
        expect(missing.status).toBe(404);
        expect(res.json).toEqual(missing.json);
      }
    });
  });
});
