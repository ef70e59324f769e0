import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import createClient, { type Client } from 'openapi-fetch';
import type { components, paths } from './generated/openapi';
import { startApp, TestApp } from './support/test-app';

/**
 * API.md section 9: "A client generated from [GET /api/docs-json] (openapi-typescript +
 * openapi-fetch) must compile and drive the lifecycle."
 *
 * The client types are committed in test/generated/openapi.ts. The first test regenerates them
 * from the running app's document and fails when they differ, so every change to the document
 * shows up as a reviewed diff of that file; `npm run openapi:generate` (UPDATE_OPENAPI=1) writes
 * the file instead of comparing. The other tests drive the lifecycle with typed calls only, so
 * `npm run typecheck` proves that a client can be written against the document as it is.
 */

const GENERATED = join(__dirname, 'generated', 'openapi.ts');
const HEADER = `/**
 * GENERATED FILE: do not edit by hand.
 *
 * The types of Provisor's OpenAPI document (GET /api/docs-json), as openapi-typescript generates
 * them with its default options, for the openapi-fetch client in
 * test/openapi-client.e2e-spec.ts, which fails when this file is out of date.
 * Regenerate with \`npm run openapi:generate\` (it boots the app: Redis at 127.0.0.1:6379).
 */

`;

/**
 * openapi-typescript's programmatic API (`openapiTS` + `astToString`) applied to `document`.
 * It runs in a plain Node process: the package's CommonJS build requires the ESM-only
 * `parse-json` (openapi-ts/openapi-typescript#2342), which Jest's module registry cannot load
 * (before Node 24.9), so the child imports the package's ESM build instead.
 */
function generateTypes(document: unknown): string {
  const script = `
    import openapiTS, { astToString } from 'openapi-typescript';
    let input = '';
    for await (const chunk of process.stdin) input += chunk;
    const ast = await openapiTS(JSON.parse(input), { silent: true });
    process.stdout.write(astToString(ast));
  `;
  return execFileSync(process.execPath, ['--input-type=module', '--eval', script], {
    cwd: join(__dirname, '..'),
    input: JSON.stringify(document),
    encoding: 'utf8',
    maxBuffer: 64 * 1024 * 1024,
  });
}

type Api = Client<paths>;
type Instance = components['schemas']['InstanceDto'];
type InstanceState = components['schemas']['InstanceState'];

/** API.md section 6's error shape, written by hand: the generated error type must fit it. */
interface ErrorShape {
  statusCode: number;
  error: string;
  message: string | string[];
}

/** The `data` of a successful openapi-fetch call; anything else throws with what came back. */
function ok<T>(result: { data?: T; error?: unknown; response: Response }): T {
  if (result.data === undefined) {
    const { url, status } = result.response;
    throw new Error(`${url} answered ${status}: ${JSON.stringify(result.error)}`);
  }
  return result.data;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const POLL_TIMEOUT_MS = 15_000;

/** Polls `GET /api/instances/{id}` until the instance is in `state`. */
async function waitForState(api: Api, id: string, state: InstanceState): Promise<Instance> {
  const deadline = Date.now() + POLL_TIMEOUT_MS;
  let last = '';
  while (Date.now() < deadline) {
    const { data, response } = await api.GET('/api/instances/{id}', { params: { path: { id } } });
    if (data?.state === state) return data;
    last = data?.state ?? `HTTP ${response.status}`;
    await sleep(25);
  }
  throw new Error(`instance ${id} did not reach '${state}' in time; last seen: ${last}`);
}

/** Polls `GET /api/instances/{id}` until it is `404`, and answers that response's error body. */
async function waitForGone(api: Api, id: string): Promise<ErrorShape> {
  const deadline = Date.now() + POLL_TIMEOUT_MS;
  let last = '';
  while (Date.now() < deadline) {
    const { data, error, response } = await api.GET('/api/instances/{id}', {
      params: { path: { id } },
    });
    if (response.status === 404 && error) return error;
    last = data?.state ?? `HTTP ${response.status}`;
    await sleep(25);
  }
  throw new Error(`instance ${id} was not gone in time; last seen: ${last}`);
}

describe('a client generated from the OpenAPI document (API.md section 9)', () => {
  let t: TestApp;
  let baseUrl: string;
  let alice: Api;
  let admin: Api;

  beforeAll(async () => {
    t = await startApp();
    // openapi-fetch speaks real HTTP through fetch, so the app listens on a free port.
    await t.app.listen(0, '127.0.0.1');
    baseUrl = await t.app.getUrl();
    admin = createClient<paths>({
      baseUrl,
      headers: { Authorization: `Bearer ${t.adminToken}` },
    });
    const user = ok(await admin.POST('/api/users', { body: { username: 'alice' } }));
    expect(user).toMatchObject({ username: 'alice', is_staff: false });
    alice = createClient<paths>({ baseUrl, headers: { Authorization: `Bearer ${user.token}` } });
  });
  afterAll(() => t.close());

  it('test/generated/openapi.ts is what openapi-typescript generates from GET /api/docs-json', async () => {
    const res = await fetch(`${baseUrl}/api/docs-json`);
    expect(res.status).toBe(200);
    const generated = HEADER + generateTypes(await res.json());

    if (process.env.UPDATE_OPENAPI) {
      mkdirSync(dirname(GENERATED), { recursive: true });
      writeFileSync(GENERATED, generated);
      return;
    }
    const committed = existsSync(GENERATED)
      ? readFileSync(GENERATED, 'utf8').replace(/\r\n/g, '\n')
      : '';
    if (committed !== generated) {
      const was = committed.split('\n');
      const is = generated.split('\n');
      let line = 0;
      while (line < was.length && was[line] === is[line]) line++;
      throw new Error(
        'test/generated/openapi.ts is out of date with the OpenAPI document: run ' +
          '`npm run openapi:generate`, review the diff and commit it.\n' +
          `First difference, line ${line + 1}:\n` +
          `  committed: ${was[line] ?? '(end of file)'}\n` +
          `  generated: ${is[line] ?? '(end of file)'}`,
      );
    }
  });

  it('drives the lifecycle: create, stop, start, resize, list, history, events, rename, delete', async () => {
    const created = ok(
      await alice.POST('/api/instances', { body: { name: 'typed-1', flavor: 'small' } }),
    );
    expect(created).toMatchObject({
      name: 'typed-1',
      flavor: 'small',
      image: 'debian-12',
      state: 'provisioning_scheduled',
    });
    const id = created.id;
    const params = { path: { id } };
    expect((await waitForState(alice, id, 'online')).backend_id).toMatch(/^sim-/);

    expect(ok(await alice.POST('/api/instances/{id}/stop', { params })).state).toBe(
      'stopping_scheduled',
    );
    await waitForState(alice, id, 'offline');
    expect(ok(await alice.POST('/api/instances/{id}/start', { params })).state).toBe(
      'starting_scheduled',
    );
    await waitForState(alice, id, 'online');

    // Resize needs an offline instance.
    ok(await alice.POST('/api/instances/{id}/stop', { params }));
    await waitForState(alice, id, 'offline');
    const resizing = ok(
      await alice.POST('/api/instances/{id}/resize', { params, body: { flavor: 'medium' } }),
    );
    expect(resizing.state).toBe('resizing_scheduled');
    expect((await waitForState(alice, id, 'offline')).flavor).toBe('medium');

    // `state` is an array in the query, sent as `?state=online&state=offline`.
    const listed = ok(
      await alice.GET('/api/instances', { params: { query: { state: ['online', 'offline'] } } }),
    );
    expect(listed).toMatchObject({ total: 1, limit: 50, offset: 0 });
    expect(listed.items.map((i) => [i.id, i.state])).toEqual([[id, 'offline']]);
    const onlineOnly = ok(
      await alice.GET('/api/instances', { params: { query: { state: ['online'], limit: 10 } } }),
    );
    expect(onlineOnly).toMatchObject({ items: [], total: 0, limit: 10 });

    const history = ok(await alice.GET('/api/instances/{id}/transitions', { params })).items;
    expect(history[0]).toMatchObject({
      from: null,
      to: 'provisioning_scheduled',
      action: 'provision',
    });
    expect(history.map((h) => h.action)).toEqual(
      expect.arrayContaining(['provision', 'stop', 'start', 'resize']),
    );
    expect(history.at(-1)).toMatchObject({ from: 'resizing', to: 'offline', action: 'resize' });

    const events = ok(
      await alice.GET('/api/events', { params: { query: { instance_id: id, limit: 500 } } }),
    ).items;
    expect(events.every((e) => e.instance_id === id)).toBe(true);
    expect(events[0]).toMatchObject({ type: 'instance.provision.scheduled' });
    expect(events.at(-1)).toMatchObject({ type: 'instance.resize.succeeded', state: 'offline' });
    const later = ok(
      await alice.GET('/api/events', {
        params: { query: { instance_id: id, after: events[0].id } },
      }),
    ).items;
    expect(later).toHaveLength(events.length - 1);

    const renamed = ok(
      await alice.PATCH('/api/instances/{id}', { params, body: { name: 'typed-renamed' } }),
    );
    expect(renamed).toMatchObject({
      id,
      name: 'typed-renamed',
      state: 'offline',
      flavor: 'medium',
    });

    expect(ok(await alice.DELETE('/api/instances/{id}', { params })).state).toBe(
      'deletion_scheduled',
    );
    const gone = await waitForGone(alice, id);
    expect(gone).toEqual({ statusCode: 404, error: 'Not Found', message: expect.any(String) });
  });

  it("takes every body with only its required fields, as API.md's examples send them", async () => {
    // openapi-typescript's default options type a field that has a `default` in the document as
    // always present: each call below is then a compile error, which `npm run lint` reports.
    const bob = ok(await admin.POST('/api/users', { body: { username: 'bob' } }));
    expect(bob.is_staff).toBe(false);
    const fault = ok(
      await admin.POST('/api/simulator/faults', { body: { operation: 'stop', mode: 'error' } }),
    );
    expect(fault).toMatchObject({ operation: 'stop', mode: 'error', times: 1 });
    const removed = await admin.DELETE('/api/simulator/faults/{id}', {
      params: { path: { id: fault.id } },
    });
    expect(removed.response.status).toBe(204);
  });

  it('answers a 409 in `error`, in the error shape, with the message', async () => {
    const created = ok(
      await alice.POST('/api/instances', { body: { name: 'typed-2', flavor: 'small' } }),
    );
    const params = { path: { id: created.id } };
    await waitForState(alice, created.id, 'online');

    const { data, error, response } = await alice.POST('/api/instances/{id}/start', { params });
    expect(response.status).toBe(409);
    expect(data).toBeUndefined();
    if (!error) throw new Error('a 409 must come back in `error`');
    const body: ErrorShape = error;
    expect(body).toEqual({
      statusCode: 409,
      error: 'Conflict',
      message: "Cannot start instance in state 'online'; allowed from: offline",
    });
    expect(typeof error.message).toBe('string');
  });
});
