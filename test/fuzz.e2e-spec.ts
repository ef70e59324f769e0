import fc from 'fast-check';
import type { AddressInfo } from 'node:net';
import { isDeepStrictEqual } from 'node:util';
import { ApiClient, InstanceBody } from './support/api';
import { RawResponse, sendRaw } from './support/raw-http';
import { startApp, TestApp } from './support/test-app';

/**
 * Generated hostile input on every route of the OpenAPI document (API.md sections 2, 5 and 6):
 * malformed, oversized, wrongly typed and injection-shaped ids, queries, bodies and headers. A
 * request that must be refused is answered with a 4xx in the one error shape, with no stack trace
 * or SQL, and changes nothing a user or an operator can see; nothing is ever a 5xx.
 *
 * Reproduce a run with FUZZ_SEED=<seed> (the report of a failure names it); FUZZ_RUNS sets how
 * many requests each family of inputs makes per route.
 */

const SEED = Number(process.env.FUZZ_SEED ?? 20261124);
const RUNS = Number(process.env.FUZZ_RUNS ?? 8);

type Caller = 'alice' | 'admin';
type Header = [string, string];
/* eslint-disable @typescript-eslint/no-explicit-any */
type Json = any;

let usernames = 0;

/** What a route does with input, beyond what its OpenAPI operation says. */
interface RouteSpec {
  /** Accepted, it changes something: every request generated for it is one it must refuse. */
  mutates?: boolean;
  /** API.md section 2: non-staff users get 403. */
  staff?: boolean;
  /** What `{id}` names. */
  ids?: 'instance' | 'fault';
  /** API.md section 4: the states the action is allowed from (any state when absent). */
  allowedFrom?: readonly string[];
  /** Refused for an instance that never got a backend_id (pull). */
  needsBackend?: boolean;
  /** A body the route accepts: the base in which generated bodies spoil one thing. */
  body?: (f: Fixtures) => Record<string, unknown>;
  /** The route takes no body, so any field is an unknown one. */
  noBody?: boolean;
  /** Values that fit the schema but that the route refuses all the same. */
  conflicts?: Record<string, unknown[]>;
}

/** Every route of the OpenAPI document; the first test fails when one is missing here. */
const ROUTES: Record<string, RouteSpec> = {
  'POST /api/users': {
    mutates: true,
    staff: true,
    // A fresh name each time: one a bug let through must not turn later requests into 409s.
    body: () => ({ username: `fuzz-${(usernames += 1)}`, is_staff: false }),
    conflicts: { username: ['alice', 'admin'] },
  },
  'GET /api/users/me': {},
  'POST /api/instances': {
    mutates: true,
    body: () => ({ name: 'fuzz-vm', flavor: 'small', image: 'debian-12', description: 'x' }),
  },
  'GET /api/instances': {},
  'GET /api/instances/{id}': { ids: 'instance' },
  'PATCH /api/instances/{id}': {
    mutates: true,
    ids: 'instance',
    allowedFrom: ['online', 'offline'],
    body: () => ({ name: 'fuzz-renamed', description: 'renamed' }),
  },
  'DELETE /api/instances/{id}': {
    mutates: true,
    ids: 'instance',
    allowedFrom: ['offline', 'erred'],
    noBody: true,
  },
  'POST /api/instances/{id}/start': {
    mutates: true,
    ids: 'instance',
    allowedFrom: ['offline'],
    noBody: true,
  },
  'POST /api/instances/{id}/stop': {
    mutates: true,
    ids: 'instance',
    allowedFrom: ['online'],
    noBody: true,
  },
  'POST /api/instances/{id}/restart': {
    mutates: true,
    ids: 'instance',
    allowedFrom: ['online'],
    noBody: true,
  },
  'POST /api/instances/{id}/resize': {
    mutates: true,
    ids: 'instance',
    allowedFrom: ['offline'],
    body: () => ({ flavor: 'large' }),
  },
  'POST /api/instances/{id}/pull': {
    mutates: true,
    ids: 'instance',
    allowedFrom: ['online', 'offline', 'erred'],
    needsBackend: true,
    noBody: true,
  },
  'GET /api/instances/{id}/transitions': { ids: 'instance' },
  'POST /api/instances/{id}/set_erred': {
    mutates: true,
    staff: true,
    ids: 'instance',
    body: () => ({ error_message: 'forced by the fuzz test' }),
  },
  'POST /api/instances/{id}/set_ok': {
    mutates: true,
    staff: true,
    ids: 'instance',
    body: () => ({ state: 'offline' }),
  },
  'POST /api/instances/{id}/unlink': { mutates: true, staff: true, ids: 'instance', noBody: true },
  'GET /api/flavors': {},
  'GET /api/images': {},
  'GET /api/events': {},
  'GET /api/events/stream': {},
  'POST /api/simulator/faults': {
    mutates: true,
    staff: true,
    body: (f) => ({
      operation: 'stop',
      instance_id: f.targets.bob.id,
      mode: 'error',
      message: 'fuzzed',
      times: 2,
    }),
  },
  'GET /api/simulator/faults': { staff: true },
  'DELETE /api/simulator/faults/{id}': { mutates: true, staff: true, ids: 'fault' },
  'GET /api/simulator/vms': { staff: true },
  'GET /api/health': {},
};

/** Header parameters the OpenAPI document may declare, and values of them to send. */
const HEADER_VALUES: Record<
  string,
  { valid: fc.Arbitrary<string>; invalid: fc.Arbitrary<string> }
> = {
  'idempotency-key': {
    valid: fc.oneof(
      fc.uuid(),
      fc.stringMatching(/^[!-~]{1,64}$/),
      fc.constantFrom('k', 'x'.repeat(255), 'clé-ÿ'),
    ),
    // API.md section 5: 1 to 255 characters. Surrounding blanks do not survive HTTP parsing.
    invalid: fc.oneof(
      fc.constantFrom('', '   '),
      fc.integer({ min: 256, max: 4000 }).map((n) => 'k'.repeat(n)),
      fc.stringMatching(/^[!-~]{256,300}$/),
    ),
  },
  'last-event-id': {
    valid: fc.oneof(fc.integer({ min: 0, max: 2_147_483_647 }).map(String), fc.constant('')),
    // Event ids are whole numbers in the range `after` accepts on GET /api/events.
    invalid: fc.oneof(
      fc.constantFrom('abc', '-1', '1.5', '1e3', '0x10', 'NaN', '1 2', '+1', "' OR 1=1 --"),
      fc.integer({ min: 2_147_483_648, max: 9_999_999_999 }).map(String),
      fc.stringMatching(/^[ -~]{1,40}$/).filter((s) => !/^\s*\d*\s*$/.test(s)),
    ),
  },
};

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const ERROR_STATUSES = [400, 401, 403, 404, 409, 413, 415, 422];
const STABLE_STATES = ['online', 'offline', 'erred'];
/** Deeper than any body of the API needs; the service refuses such bodies. */
const DEEP = 64;

/** Inputs that have broken other services: SQL, paths, templates, odd Unicode. */
const HOSTILE = [
  "' OR 1=1 --",
  "'; DROP TABLE instances; --",
  '" OR ""="',
  '1; SELECT pg_sleep(5)',
  "admin'--",
  '../../etc/passwd',
  '..\\..\\windows\\win.ini',
  '<script>alert(1)</script>',
  '${7*7}',
  '{{7*7}}',
  '%s%s%n',
  '\u202eevil',
  '💥',
  'ｗｅｂ',
  'İstanbul',
  'a\u0301',
  '\ud800',
  '\n',
  '\t',
  ' ',
  '',
  'null',
  'undefined',
  'NaN',
  'true',
  '[]',
  '{}',
  '__proto__',
  'a'.repeat(300),
];

/** Path segments for `{id}` that are not an id of anything, as they go on the wire. */
const BAD_SEGMENTS = [
  '',
  'not-a-uuid',
  '12345',
  '0',
  '-1',
  'null',
  'undefined',
  'true',
  '.',
  '..',
  '%2e%2e',
  '..%2f..%2fetc%2fpasswd',
  '../instances',
  '%00',
  'a%00b',
  '%',
  '%zz',
  '%E0%A4%A',
  '%ED%A0%80',
  '%C0%AF',
  '*',
  '%2A',
  '00000000-0000-0000-0000-00000000000g',
  '00000000000000000000000000000000',
  '%7B00000000-0000-0000-0000-000000000000%7D',
  '00000000-0000-0000-0000-000000000000%20',
  '00000000-0000-0000-0000-000000000000;x=1',
  "'%20OR%201=1%20--",
  '1;DROP%20TABLE%20instances',
  '%24ne',
  '%5Bobject%20Object%5D',
  '%F0%9F%92%A5',
  'a'.repeat(5000),
];

const PROTO_KEYS = [
  ...new Set([
    '__proto__',
    'constructor',
    'prototype',
    ...Object.getOwnPropertyNames(Object.prototype),
  ]),
];

interface Target {
  id: string;
  /** Its state now, or 'gone'. */
  state: string;
  alices: boolean;
  backend: boolean;
}

/** The state each fixture is kept in, so that each route meets the same five instances. */
const INTENDED = {
  online: 'online',
  offline: 'offline',
  erred: 'erred',
  unbacked: 'erred',
  bob: 'online',
} as const;

interface Fixtures {
  targets: Record<keyof typeof INTENDED, Target>;
  fault: { id: string; alive: boolean };
}

interface Schema {
  type?: string;
  enum?: unknown[];
  pattern?: string;
  minLength?: number;
  maxLength?: number;
  minimum?: number;
  maximum?: number;
  format?: string;
  nullable?: boolean;
  items?: Schema;
  properties?: Record<string, Schema>;
  required?: string[];
}

interface Part {
  /** Why the request must be refused, when this part alone makes it so. */
  refusal?: string;
}
interface SegmentPart extends Part {
  segment: string;
}
interface QueryPart extends Part {
  query: string;
}
interface HeadersPart extends Part {
  headers: Header[];
  query?: string;
}
interface BodyPart extends Part {
  headers: Header[];
  body?: string;
}

interface Case {
  route: string;
  caller: Caller;
  method: string;
  path: string;
  headers: Header[];
  body?: string;
  refusals: string[];
}

/** Percent-encodes every byte but the unreserved ones (lone surrogates become U+FFFD). */
function encode(text: string): string {
  let out = '';
  for (const byte of Buffer.from(text, 'utf8')) {
    const ch = String.fromCharCode(byte);
    out += /^[A-Za-z0-9\-._~]$/.test(ch)
      ? ch
      : `%${byte.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  return out;
}

/** A JSON object written member by member, so that `__proto__` and repeated keys survive. */
function objectText(members: [string, string][]): string {
  return `{${members.map(([k, v]) => `${JSON.stringify(k)}:${v}`).join(',')}}`;
}

function membersOf(value: Record<string, unknown>): [string, string][] {
  return Object.entries(value).map(([k, v]) => [k, JSON.stringify(v)]);
}

function withMember(members: [string, string][], key: string, raw: string): [string, string][] {
  return members.some(([k]) => k === key)
    ? members.map(([k, v]) => [k, k === key ? raw : v])
    : [...members, [key, raw]];
}

function nested(depth: number, open: string, close: string): string {
  return open.repeat(depth) + close.repeat(depth);
}

/** How deeply containers nest in a JSON value (a top-level object is 1). */
function depthOf(value: unknown): number {
  let deepest = 0;
  const stack: [unknown, number][] = [[value, 1]];
  while (stack.length) {
    const [v, d] = stack.pop()!;
    if (v !== null && typeof v === 'object') {
      deepest = Math.max(deepest, d);
      for (const item of Object.values(v)) stack.push([item, d + 1]);
    }
  }
  return deepest;
}

function hasNul(value: unknown): boolean {
  if (typeof value === 'string') return value.includes('\u0000');
  if (value !== null && typeof value === 'object')
    return Object.entries(value).some(([k, v]) => k.includes('\u0000') || hasNul(v));
  return false;
}

/** What any route must refuse in a JSON body, whatever it does with one. */
function jsonRefusal(text: string): string | undefined {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    return 'malformed JSON';
  }
  if (parsed === null || typeof parsed !== 'object') return 'JSON body that is not an object';
  if (depthOf(parsed) >= DEEP) return 'body nested too deep';
  if (hasNul(parsed)) return 'NUL character in body';
  return undefined;
}

/** A route that takes no body refuses any field, and any array. */
function noBodyRefusal(text: string): string | undefined {
  const parsed: unknown = JSON.parse(text);
  if (Array.isArray(parsed)) return 'a body on a route that takes none';
  return Object.keys(parsed as object).length > 0
    ? 'a field on a route that takes none'
    : undefined;
}

const jsonValue = () => fc.jsonValue({ maxDepth: 2 });
const anyString = () =>
  fc.oneof(
    fc.string({ maxLength: 40 }),
    fc.string({ unit: 'binary', maxLength: 20 }),
    fc.constantFrom(...HOSTILE),
  );

/** JSON texts of values whose type the schema does not allow. */
function wrongTypes(s: Schema): fc.Arbitrary<string> {
  const options: fc.Arbitrary<unknown>[] = [
    fc.array(jsonValue(), { maxLength: 3 }),
    fc.dictionary(fc.string({ maxLength: 8 }), jsonValue(), { maxKeys: 3 }),
  ];
  if (!s.nullable) options.push(fc.constant(null));
  if (s.type !== 'boolean') options.push(fc.boolean());
  if (s.type !== 'integer' && s.type !== 'number')
    options.push(fc.integer(), fc.double({ noNaN: true, noDefaultInfinity: true }));
  if (s.type !== 'string') options.push(anyString(), fc.constantFrom('1', 'true', ''));
  if (s.enum) options.push(fc.constant(s.enum), fc.constant([s.enum[0]]));
  return fc.oneof(...options).map((v) => JSON.stringify(v));
}

/** JSON texts of values of the right type that break the schema's other rules. */
function wrongValues(s: Schema): fc.Arbitrary<string> | null {
  const options: fc.Arbitrary<string>[] = [];
  if (s.type === 'string') {
    const fits = (x: string) =>
      (!s.enum || s.enum.includes(x)) &&
      (!s.pattern || new RegExp(s.pattern).test(x)) &&
      (s.format !== 'uuid' || UUID.test(x)) &&
      (s.maxLength === undefined || x.length <= s.maxLength) &&
      (s.minLength === undefined || x.length >= s.minLength);
    if (s.enum || s.pattern || s.format === 'uuid') {
      const variants = (s.enum ?? []).flatMap((e) => {
        const v = String(e);
        return [v.toUpperCase(), ` ${v}`, `${v} `, `${v}\n`, `${v}s`, v.slice(0, -1)];
      });
      options.push(
        fc.constantFrom(...[...variants, ...HOSTILE, '00000000-0000-0000-0000-00000000000g']),
        anyString(),
      );
    }
    if (s.maxLength !== undefined)
      options.push(
        fc.integer({ min: s.maxLength + 1, max: s.maxLength + 3000 }).map((n) => 'x'.repeat(n)),
      );
    if (s.minLength) options.push(fc.constant(''));
    return options.length
      ? fc
          .oneof(...options)
          .filter((x) => !fits(x))
          .map((x) => JSON.stringify(x))
      : null;
  }
  if (s.type === 'integer') {
    const raw: fc.Arbitrary<string>[] = [
      fc
        .double({ min: -1e6, max: 1e6, noNaN: true })
        .filter((x) => !Number.isInteger(x))
        .map(String),
      fc.constantFrom('1e400', '-1e400'),
    ];
    if (s.minimum !== undefined)
      raw.push(fc.integer({ min: -(2 ** 31), max: s.minimum - 1 }).map(String));
    if (s.maximum !== undefined)
      raw.push(
        fc.integer({ min: s.maximum + 1, max: s.maximum + 1e6 }).map(String),
        fc.constantFrom('1e20', '9007199254740993'),
      );
    return fc.oneof(...raw);
  }
  return null;
}

/** Query values an integer parameter refuses: words, fractions, numbers out of range. */
function badIntegers(s: Schema): fc.Arbitrary<string> {
  const options: fc.Arbitrary<string>[] = [
    fc.constantFrom(
      'abc',
      'NaN',
      'Infinity',
      '-Infinity',
      'true',
      'null',
      '[]',
      '1,2',
      '1 2',
      '½',
      '٣',
      '0x',
      '--1',
      '1..2',
      "' OR 1=1 --",
      '1;DROP TABLE instances',
    ),
    fc.integer({ min: -1_000_000_000, max: (s.minimum ?? 0) - 1 }).map(String),
    fc
      .double({ min: -1e9, max: 1e9, noNaN: true })
      .filter((x) => !Number.isInteger(x))
      .map(String),
  ];
  if (s.maximum !== undefined)
    options.push(fc.integer({ min: 20, max: 400 }).map((n) => '9'.repeat(n)));
  if (s.maximum !== undefined && s.maximum < 2 ** 31 - 2)
    options.push(fc.integer({ min: s.maximum + 1, max: 2 ** 31 - 1 }).map(String));
  if ((s.minimum ?? 0) > 0) options.push(fc.constant(''));
  return fc.oneof(...options);
}

describe('generated hostile input on every route', () => {
  let t: TestApp;
  let port: number;
  let admin: ApiClient;
  let alice: ApiClient;
  let bob: ApiClient;
  let doc: Json;
  let fixtures: Fixtures;
  let tokens: Record<Caller, string>;
  /** The service as last seen, which every refused request must leave alone. */
  let baseline: Snapshot;
  let initial: Snapshot;
  const protoNames = Object.getOwnPropertyNames(Object.prototype).sort();
  const sent = new Map<string, number>();

  type Snapshot = Awaited<ReturnType<typeof snapshot>>;

  /** Everything a refused request could have changed that the API shows. */
  async function snapshot() {
    const [list, vms, faults, ...mes] = await Promise.all([
      admin.get('/api/instances?limit=500').expect(200),
      admin.get('/api/simulator/vms').expect(200),
      admin.get('/api/simulator/faults').expect(200),
      ...[admin, alice, bob].map((c) => c.get('/api/users/me').expect(200)),
    ]);
    expect(list.body.total).toBeLessThanOrEqual(500);
    const instances: InstanceBody[] = [...list.body.items].sort((a, b) => a.id.localeCompare(b.id));
    const histories = await Promise.all(
      instances.map((i) => admin.get(`/api/instances/${i.id}/transitions`).expect(200)),
    );
    let latestEvent = 0;
    let events = 0;
    for (;;) {
      const page = await admin.get(`/api/events?limit=500&after=${latestEvent}`).expect(200);
      events += page.body.items.length;
      if (page.body.items.length) latestEvent = page.body.items[page.body.items.length - 1].id;
      if (page.body.items.length < 500) break;
    }
    return {
      instances,
      transitions: Object.fromEntries(
        instances.map((i, n) => [i.id, histories[n].body.items.length]),
      ),
      latestEvent,
      events,
      vms: [...vms.body.items].sort((a: Json, b: Json) => a.backend_id.localeCompare(b.backend_id)),
      faults: [...faults.body.items].sort((a: Json, b: Json) => a.id.localeCompare(b.id)),
      users: mes.map((m) => m.body),
    };
  }

  /** What changed between two snapshots, instance by instance and field by field. */
  function differences(before: Snapshot, after: Snapshot): string[] {
    const out: string[] = [];
    const was = new Map(before.instances.map((i) => [i.id, i]));
    const is = new Map(after.instances.map((i) => [i.id, i]));
    for (const [id, now] of is) {
      const then = was.get(id);
      if (!then) {
        out.push(`instance ${now.name} (${id}) appeared, ${now.state}`);
        continue;
      }
      const fields = Object.keys({ ...then, ...now }).filter(
        (k) => !isDeepStrictEqual(then[k], now[k]),
      );
      if (fields.length)
        out.push(
          `instance ${now.name} (${id}): ` +
            fields
              .map((k) => `${k} ${JSON.stringify(then[k])} -> ${JSON.stringify(now[k])}`)
              .join(', '),
        );
      if (before.transitions[id] !== after.transitions[id])
        out.push(
          `instance ${now.name}: ${before.transitions[id]} -> ${after.transitions[id]} transitions`,
        );
    }
    for (const [id, then] of was)
      if (!is.has(id)) out.push(`instance ${then.name} (${id}) disappeared`);
    if (before.latestEvent !== after.latestEvent || before.events !== after.events)
      out.push(
        `events: ${before.events} -> ${after.events}, latest id ${before.latestEvent} -> ${after.latestEvent}`,
      );
    for (const key of ['vms', 'faults', 'users'] as const)
      if (!isDeepStrictEqual(before[key], after[key]))
        out.push(
          `${key}: ${JSON.stringify(before[key])} -> ${JSON.stringify(after[key])}`.slice(0, 1500),
        );
    return out;
  }

  /**
   * The cheap part of the snapshot, taken after every request to a mutating route: any change
   * of state is a transition, and every transition is an event (API.md section 7).
   */
  async function unchangedAtAGlance(): Promise<boolean> {
    const [list, events, vms, faults] = await Promise.all([
      admin.get('/api/instances?limit=500').expect(200),
      admin.get(`/api/events?limit=1&after=${baseline.latestEvent}`).expect(200),
      admin.get('/api/simulator/vms').expect(200),
      admin.get('/api/simulator/faults').expect(200),
    ]);
    const instances = [...list.body.items].sort((a, b) => a.id.localeCompare(b.id));
    return (
      events.body.items.length === 0 &&
      isDeepStrictEqual(instances, baseline.instances) &&
      isDeepStrictEqual(
        [...vms.body.items].sort((a: Json, b: Json) => a.backend_id.localeCompare(b.backend_id)),
        baseline.vms,
      ) &&
      isDeepStrictEqual(
        [...faults.body.items].sort((a: Json, b: Json) => a.id.localeCompare(b.id)),
        baseline.faults,
      )
    );
  }

  /** Waits until no job is running and two looks agree, then takes that as the baseline. */
  async function settle(): Promise<Snapshot> {
    const deadline = Date.now() + 20_000;
    let last = await snapshot();
    while (Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 30));
      const next = await snapshot();
      const busy = next.instances.some((i) => !STABLE_STATES.includes(i.state));
      if (!busy && isDeepStrictEqual(last, next)) return next;
      last = next;
    }
    throw new Error('the service did not settle within 20 s');
  }

  /** The fixtures as they are now: a request a bug let through may have moved one. */
  async function refreshFixtures(): Promise<void> {
    for (const target of Object.values(fixtures.targets)) {
      const res = await admin.get(`/api/instances/${target.id}`);
      target.state = res.status === 200 ? res.body.state : 'gone';
      target.backend = res.status === 200 && res.body.backend_id !== '';
    }
    const faults = await admin.get('/api/simulator/faults').expect(200);
    fixtures.fault.alive = faults.body.items.some(
      (f: { id: string }) => f.id === fixtures.fault.id,
    );
  }

  /**
   * Puts back a fixture that a request let through by a bug moved, so that the routes tested
   * after it are sent what they were meant to be sent: the bug is reported where it happened.
   */
  async function restoreFixtures(): Promise<void> {
    await settle();
    for (const [name, target] of Object.entries(fixtures.targets)) {
      const res = await admin.get(`/api/instances/${target.id}`);
      const wanted = INTENDED[name as keyof Fixtures['targets']];
      if (res.status !== 200 || res.body.state === wanted) continue;
      if (wanted === 'erred')
        await admin
          .post(`/api/instances/${target.id}/set_erred`, { error_message: 'restored' })
          .expect(200);
      else await admin.post(`/api/instances/${target.id}/set_ok`, { state: wanted }).expect(200);
    }
    await refreshFixtures();
    if (!fixtures.fault.alive) {
      const fault = await admin
        .post('/api/simulator/faults', {
          operation: 'resize',
          instance_id: fixtures.targets.bob.id,
          mode: 'error',
        })
        .expect(201);
      fixtures.fault = { id: fault.body.id, alive: true };
    }
  }

  beforeAll(async () => {
    // The rate limit counts per token; thousands of requests from two tokens are the point here.
    t = await startApp({ RATE_LIMIT_PER_MINUTE: '0' });
    await t.app.listen(0, '127.0.0.1');
    port = (t.app.getHttpServer().address() as AddressInfo).port;
    admin = new ApiClient(t.http, t.adminToken);
    alice = await admin.createUser('alice');
    bob = await admin.createUser('bob');
    tokens = { alice: alice.token, admin: t.adminToken };
    doc = (await t.http.get('/api/docs-json').expect(200)).body;

    const online = await alice.online({ name: 'fuzz-online' });
    const offline = await alice.online({ name: 'fuzz-offline' });
    await alice.action(offline.id, 'stop');
    await alice.waitForState(offline.id, 'offline');
    const erred = await alice.online({ name: 'fuzz-erred' });
    await admin
      .post(`/api/instances/${erred.id}/set_erred`, { error_message: 'host lost' })
      .expect(200);
    // The next provisioning fails for good, so this instance never gets a backend_id.
    await admin
      .post('/api/simulator/faults', { operation: 'provision', mode: 'error', message: 'full' })
      .expect(201);
    const unbacked = await alice.create({ name: 'fuzz-unbacked' });
    expect((await alice.waitForState(unbacked.id, 'erred')).backend_id).toBe('');
    const bobs = await bob.online({ name: 'fuzz-bob' });
    // A fault nothing will trigger: nobody resizes bob's instance.
    const fault = await admin
      .post('/api/simulator/faults', { operation: 'resize', instance_id: bobs.id, mode: 'error' })
      .expect(201);
    const target = (i: InstanceBody, alices: boolean): Target => ({
      id: i.id,
      state: '',
      alices,
      backend: false,
    });
    fixtures = {
      targets: {
        online: target(online, true),
        offline: target(offline, true),
        erred: target(erred, true),
        unbacked: target(unbacked, true),
        bob: target(bobs, false),
      },
      fault: { id: fault.body.id, alive: true },
    };
    await refreshFixtures();
    expect(Object.values(fixtures.targets).map((x) => [x.state, x.backend])).toEqual([
      ['online', true],
      ['offline', true],
      ['erred', true],
      ['erred', false],
      ['online', true],
    ]);
    initial = baseline = await settle();
  });

  afterAll(async () => {
    const total = [...sent.values()].reduce((a, b) => a + b, 0);
    console.log(
      `fuzz: seed ${SEED}, ${RUNS} runs per family, ${total} requests over ${sent.size} routes`,
    );
    await t?.close();
  });

  function operation(route: string): Json {
    const [method, path] = route.split(' ');
    return doc.paths?.[path]?.[method.toLowerCase()];
  }

  function resolve(schema: Json): Schema {
    let s = schema;
    for (let i = 0; i < 10 && s?.$ref; i++)
      s = s.$ref
        .replace('#/', '')
        .split('/')
        .reduce((node: Json, key: string) => node?.[key], doc);
    return s;
  }

  function bodySchema(route: string): Schema | undefined {
    const schema = operation(route)?.requestBody?.content?.['application/json']?.schema;
    return schema ? resolve(schema) : undefined;
  }

  function queryParams(route: string): { name: string; schema: Schema }[] {
    return (operation(route)?.parameters ?? [])
      .filter((p: Json) => p.in === 'query' && p.name !== 'access_token')
      .map((p: Json) => ({ name: p.name, schema: resolve(p.schema) }));
  }

  function headerParams(route: string): string[] {
    return (operation(route)?.parameters ?? [])
      .filter((p: Json) => p.in === 'header')
      .map((p: Json) => String(p.name).toLowerCase());
  }

  const isPublic = (route: string) => !(operation(route)?.security ?? []).length;

  it('has a generator for every route of the OpenAPI document, and for each of its inputs', () => {
    const documented = Object.entries(doc.paths as Record<string, Record<string, Json>>).flatMap(
      ([path, ops]) => Object.keys(ops).map((m) => `${m.toUpperCase()} ${path}`),
    );
    expect(documented.length).toBeGreaterThan(20);
    expect(documented.filter((r) => !ROUTES[r])).toEqual([]);
    expect(Object.keys(ROUTES).filter((r) => !documented.includes(r))).toEqual([]);
    for (const route of documented) {
      const spec = ROUTES[route];
      expect({ route, id: route.includes('{id}') }).toEqual({ route, id: spec.ids !== undefined });
      expect({ route, body: bodySchema(route) !== undefined }).toEqual({
        route,
        body: spec.body !== undefined,
      });
      for (const header of headerParams(route))
        expect({ route, header, generator: header in HEADER_VALUES }).toEqual({
          route,
          header,
          generator: true,
        });
      for (const { name, schema } of queryParams(route))
        expect({
          route,
          name,
          type: schema.type === 'array' ? schema.items?.type : schema.type,
        }).toEqual({
          route,
          name,
          type: expect.stringMatching(/^(string|integer)$/),
        });
    }
  });

  /** Why `caller` may not send `route` to the instance `target`, if it may not. */
  function targetRefusal(spec: RouteSpec, caller: Caller, target: Target): string | undefined {
    if (target.state === 'gone') return 'no such instance';
    if (caller === 'alice' && !target.alices) return "someone else's instance";
    if (spec.allowedFrom && !spec.allowedFrom.includes(target.state))
      return `not allowed from '${target.state}'`;
    if (spec.needsBackend && !target.backend) return 'never provisioned';
    return undefined;
  }

  /** The real ids a route may be sent to, each with why it must be refused, if it must. */
  function realSegments(route: string, spec: RouteSpec, caller: Caller): SegmentPart[] {
    if (spec.ids === 'fault')
      return [
        {
          segment: fixtures.fault.id,
          refusal: fixtures.fault.alive ? undefined : 'no such fault',
        },
      ];
    return Object.values(fixtures.targets).flatMap((target) => {
      const refusal = targetRefusal(spec, caller, target);
      return [
        { segment: target.id, refusal },
        { segment: target.id.toUpperCase(), refusal },
      ];
    });
  }

  function badSegments(route: string, spec: RouteSpec, caller: Caller): fc.Arbitrary<SegmentPart> {
    const [method, path] = route.split(' ');
    const documented = new Set(
      Object.entries(doc.paths as Record<string, Record<string, Json>>)
        .filter(([, ops]) => ops[method.toLowerCase()])
        .map(([p]) => p),
    );
    // An empty id can make the path another route's: GET /api/instances/ is the list.
    const part = (segment: string, refusal: string): SegmentPart => {
      const lands = path.replace('{id}', segment).replace(/\/$/, '');
      return { segment, refusal: documented.has(lands) ? undefined : refusal };
    };
    const refusedReal = realSegments(route, spec, caller).filter((s) => s.refusal);
    return fc.oneof(
      fc.constantFrom(...BAD_SEGMENTS).map((s) => part(s, 'id is not a UUID')),
      anyString()
        .filter((s) => !UUID.test(s))
        .map((s) => part(encode(s), 'id is not a UUID')),
      fc.uuid().map((id) => part(id, 'no such id')),
      ...(refusedReal.length ? [fc.constantFrom(...refusedReal)] : []),
    );
  }

  function anySegment(route: string, spec: RouteSpec, caller: Caller): fc.Arbitrary<SegmentPart> {
    const real = realSegments(route, spec, caller);
    const allowed = real.filter((s) => !s.refusal);
    return fc.oneof(
      { arbitrary: fc.constantFrom(...(allowed.length ? allowed : real)), weight: 8 },
      { arbitrary: fc.constantFrom(...real), weight: 1 },
      { arbitrary: badSegments(route, spec, caller), weight: 1 },
    );
  }

  function validParam(p: { name: string; schema: Schema }): fc.Arbitrary<string[]> {
    const s = p.schema;
    if (s.type === 'array' && s.items?.enum)
      return fc
        .subarray(s.items.enum as string[], { minLength: 1, maxLength: 3 })
        .map((vs) => vs.map((v) => `${p.name}=${encode(v)}`));
    if (s.type === 'integer')
      return fc
        .integer({ min: s.minimum ?? 0, max: Math.min(s.maximum ?? 2 ** 31 - 1, 2 ** 31 - 1) })
        .map((n) => [`${p.name}=${n}`]);
    if (s.format === 'uuid')
      return fc
        .oneof(fc.uuid(), fc.constantFrom(...Object.values(fixtures.targets).map((x) => x.id)))
        .map((v) => [`${p.name}=${v}`]);
    return fc.string({ maxLength: 20 }).map((v) => [`${p.name}=${encode(v)}`]);
  }

  function invalidParam(p: { name: string; schema: Schema }): fc.Arbitrary<QueryPart> {
    const s = p.schema;
    const one = (raw: fc.Arbitrary<string>, refusal: string) =>
      raw.map((v): QueryPart => ({ query: `${p.name}=${v}`, refusal: `${p.name}: ${refusal}` }));
    const options: fc.Arbitrary<QueryPart>[] = [
      one(fc.constantFrom('%00', 'a%00', '1%00'), 'NUL character'),
    ];
    if (s.type !== 'array')
      options.push(
        fc
          .tuple(validParam(p), validParam(p))
          .map(([a, b]) => ({ query: [...a, ...b].join('&'), refusal: `${p.name} given twice` })),
      );
    if (s.type === 'array' && s.items?.enum) {
      const states = s.items.enum as string[];
      options.push(
        fc
          .tuple(
            fc.subarray(states, { maxLength: 2 }),
            fc
              .oneof(
                anyString(),
                fc.constantFrom(...states.flatMap((v) => [v.toUpperCase(), `${v} `, `${v},${v}`])),
              )
              .filter((v) => !states.includes(v)),
          )
          .map(([ok, bad]) => ({
            query: [...ok, bad].map((v) => `${p.name}=${encode(v)}`).join('&'),
            refusal: `${p.name}: not one of the states`,
          })),
      );
    }
    if (s.type === 'integer')
      options.push(
        one(badIntegers(s).map(encode), 'not a whole number in range'),
        one(fc.constantFrom('%', '%zz', '%E0%A4%A'), 'not a number'),
      );
    if (s.format === 'uuid')
      options.push(
        one(
          anyString()
            .filter((v) => !UUID.test(v))
            .map(encode),
          'not a UUID',
        ),
      );
    return fc.oneof(...options);
  }

  /** Parameters no route documents, in the shapes query parsers disagree about. */
  function noiseQuery(route: string): fc.Arbitrary<QueryPart> {
    const known = queryParams(route).map((p) => p.name);
    const key = fc
      .oneof(
        fc.string({ minLength: 1, maxLength: 12 }).map(encode),
        fc.constantFrom(
          'x',
          'limit[a]',
          'limit[]',
          'state[0]',
          '__proto__[is_staff]',
          'constructor[prototype][x]',
          'a.b',
          '%zz',
          '',
          'utm_source',
          'limit',
          'offset',
          'after',
          'state',
        ),
      )
      .filter((k) => !known.includes(k));
    return fc
      .array(fc.tuple(key, fc.string({ maxLength: 20 }).map(encode)), {
        minLength: 1,
        maxLength: 3,
      })
      .map((pairs) => ({ query: pairs.map(([k, v]) => `${k}=${v}`).join('&') }));
  }

  function anyQuery(route: string, spec: RouteSpec): fc.Arbitrary<QueryPart> {
    const params = queryParams(route);
    const options: fc.WeightedArbitrary<QueryPart>[] = [
      { arbitrary: fc.constant({ query: '' }), weight: spec.mutates ? 12 : 6 },
      { arbitrary: noiseQuery(route), weight: 1 },
    ];
    if (params.length)
      options.push(
        {
          arbitrary: fc
            .tuple(...params.map((p) => fc.option(validParam(p), { nil: undefined })))
            .map((frags) => ({ query: frags.flatMap((f) => f ?? []).join('&') })),
          weight: 3,
        },
        { arbitrary: badQuery(route), weight: 1 },
      );
    return fc.oneof(...options);
  }

  /** At least one documented parameter the route must refuse, among others it takes. */
  function badQuery(route: string): fc.Arbitrary<QueryPart> {
    const params = queryParams(route);
    return fc
      .tuple(
        fc.constantFrom(...params).chain((p) => invalidParam(p)),
        fc.tuple(...params.map((p) => fc.option(validParam(p), { nil: undefined }))),
        fc.option(noiseQuery(route), { nil: undefined }),
      )
      .map(([bad, others, noise]) => ({
        query: [bad.query, ...others.flatMap((f) => f ?? []), ...(noise ? [noise.query] : [])]
          .filter((q) => q !== '')
          .join('&'),
        refusal: bad.refusal,
      }));
  }

  function authHeader(caller: Caller, route: string, refused: boolean): fc.Arbitrary<HeadersPart> {
    const token = tokens[caller];
    const basic = Buffer.from(`${caller}:${token}`).toString('base64');
    const stream = route === 'GET /api/events/stream';
    if (!refused) {
      const headers = [
        `Bearer ${token}`,
        `bearer ${token}`,
        `BEARER   ${token}`,
        `Bearer ${token}   `,
      ].map((h): HeadersPart => ({ headers: [['Authorization', h]] }));
      if (stream) headers.push({ headers: [], query: `access_token=${encode(token)}` });
      return fc.oneof(
        { arbitrary: fc.constant(headers[0]), weight: 8 },
        { arbitrary: fc.constantFrom(...headers), weight: 2 },
      );
    }
    const malformed = fc
      .oneof(
        fc.constantFrom(
          `Basic ${basic}`,
          `Token ${token}`,
          token,
          'Bearer',
          'Bearer ',
          `Bearer ${token} extra`,
          `Bearer ${token}x`,
          `Bearer ${token.slice(0, -1)}`,
          `Bearer ${token.toUpperCase()}`,
          `Bearer "${token}"`,
          `Bearer ${token};`,
          `Bearer ${token},Bearer ${token}`,
          "Bearer ' OR 1=1 --",
          "Bearer '||'1'='1",
          'Bearer null',
          'Bearer undefined',
          'Bearer pvs_',
          `Bearer ${'a'.repeat(5000)}`,
          'Bearer ÿÿÿÿ',
        ),
        fc.stringMatching(/^[!-~]{1,80}$/).map((s) => `Bearer ${s}`),
      )
      .map((h): HeadersPart => ({ headers: [['Authorization', h]], refusal: 'bad Authorization' }));
    const options: fc.Arbitrary<HeadersPart>[] = [
      malformed,
      fc.constant({ headers: [], refusal: 'no token' }),
    ];
    if (stream)
      options.push(
        fc
          .constantFrom('', 'nope', encode("' OR 1=1 --"), `${encode(token)}x`)
          .map((q) => ({ headers: [], query: `access_token=${q}`, refusal: 'bad access_token' })),
      );
    return fc.oneof(...options);
  }

  function anyAuth(caller: Caller, route: string): fc.Arbitrary<HeadersPart> {
    return fc.oneof(
      { arbitrary: authHeader(caller, route, false), weight: 10 },
      { arbitrary: authHeader(caller, route, true), weight: 1 },
    );
  }

  const ACCEPTS = ['text/html', 'application/xml', '*/*', 'text/event-stream', 'garbage/;;'];

  function anyHeaders(route: string): fc.Arbitrary<HeadersPart> {
    const declared = headerParams(route);
    return fc
      .tuple(
        fc.option(fc.constantFrom(...ACCEPTS), { nil: undefined, freq: 6 }),
        ...declared.map((name) =>
          fc.oneof(
            { arbitrary: fc.constant(undefined), weight: 6 },
            { arbitrary: HEADER_VALUES[name].valid.map((v) => ({ v })), weight: 1 },
            { arbitrary: HEADER_VALUES[name].invalid.map((v) => ({ v, bad: true })), weight: 1 },
          ),
        ),
      )
      .map(([accept, ...values]): HeadersPart => {
        const headers: Header[] = accept ? [['Accept', accept]] : [];
        let refusal: string | undefined;
        values.forEach((value, n) => {
          if (!value) return;
          headers.push([declared[n], value.v]);
          if ('bad' in value) refusal = `bad ${declared[n]} header`;
        });
        return { headers, refusal };
      });
  }

  function badHeaders(route: string): fc.Arbitrary<HeadersPart> {
    const declared = headerParams(route);
    return fc.tuple(fc.constantFrom(...declared), anyHeaders(route)).chain(([name, others]) =>
      HEADER_VALUES[name].invalid.map((v): HeadersPart => ({
        headers: [...others.headers.filter(([h]) => h !== name), [name, v]],
        refusal: `bad ${name} header`,
      })),
    );
  }

  const json = (body: string, refusal?: string): BodyPart => ({
    headers: [['Content-Type', 'application/json']],
    body,
    refusal,
  });

  /** A body part, with what every route refuses in a body added to why it is refused. */
  function judged(spec: RouteSpec, part: BodyPart): BodyPart {
    if (part.body === undefined || part.refusal) return part;
    const generic = jsonRefusal(part.body);
    if (generic) return { ...part, refusal: generic };
    if (spec.noBody) return { ...part, refusal: noBodyRefusal(part.body) };
    return part;
  }

  function baseMembers(spec: RouteSpec): [string, string][] {
    return spec.body ? membersOf(spec.body(fixtures)) : [];
  }

  function validBody(spec: RouteSpec): fc.Arbitrary<BodyPart> {
    if (spec.body) {
      const text = objectText(baseMembers(spec));
      return fc.constantFrom(json(text), {
        headers: [['Content-Type', 'application/json; charset=utf-8']] as Header[],
        body: text,
      });
    }
    if (spec.noBody) return fc.constantFrom<BodyPart>({ headers: [] }, json('{}'));
    return fc.constant<BodyPart>({ headers: [] });
  }

  function fieldTypes(route: string, spec: RouteSpec): fc.Arbitrary<BodyPart> {
    const props = bodySchema(route)!.properties ?? {};
    return fc
      .constantFrom(...Object.keys(props))
      .chain((field) =>
        wrongTypes(props[field]).map((raw) =>
          json(objectText(withMember(baseMembers(spec), field, raw)), `${field}: wrong type`),
        ),
      );
  }

  function fieldValues(route: string, spec: RouteSpec): fc.Arbitrary<BodyPart> | null {
    const props = bodySchema(route)!.properties ?? {};
    const options: fc.Arbitrary<BodyPart>[] = [];
    for (const [field, schema] of Object.entries(props)) {
      const values = wrongValues(schema);
      if (values)
        options.push(
          values.map((raw) =>
            json(objectText(withMember(baseMembers(spec), field, raw)), `${field}: bad value`),
          ),
        );
    }
    for (const [field, values] of Object.entries(spec.conflicts ?? {}))
      options.push(
        fc
          .constantFrom(...values)
          .map((v) =>
            json(
              objectText(withMember(baseMembers(spec), field, JSON.stringify(v))),
              `${field}: taken`,
            ),
          ),
      );
    return options.length ? fc.oneof(...options) : null;
  }

  function missingFields(route: string, spec: RouteSpec): fc.Arbitrary<BodyPart> | null {
    const required = bodySchema(route)!.required ?? [];
    if (!required.length) return null;
    return fc.oneof(
      fc
        .constantFrom(...required)
        .map((field) =>
          json(objectText(baseMembers(spec).filter(([k]) => k !== field)), `${field} missing`),
        ),
      fc.constantFrom<BodyPart>(
        { headers: [], refusal: 'no body' },
        { headers: [['Content-Type', 'application/json']], refusal: 'no body' },
        json('{}', 'empty object'),
      ),
    );
  }

  function unknownFields(route: string, spec: RouteSpec): fc.Arbitrary<BodyPart> {
    const known = Object.keys(bodySchema(route)?.properties ?? {});
    const key = fc
      .oneof(
        fc.string({ maxLength: 20 }),
        fc.constantFrom(
          'NAME',
          'Name',
          'name ',
          ' name',
          'id',
          'state',
          'owner_id',
          'error_message',
          'error_traceback',
          'backend_id',
          'is_staff',
          'token',
          'created_at',
          'flavor',
          'username',
          'operation',
          '$where',
          '$gt',
          'a.b',
          'a[b]',
          '',
          '💥',
          "' OR 1=1 --",
        ),
      )
      .filter((k) => !known.includes(k) && !PROTO_KEYS.includes(k));
    return fc
      .tuple(key, jsonValue())
      .map(([k, v]) =>
        judged(
          spec,
          json(
            objectText(withMember(baseMembers(spec), k, JSON.stringify(v))),
            spec.body ? `unknown field ${JSON.stringify(k)}` : undefined,
          ),
        ),
      );
  }

  /** Keys a JavaScript object already has: unknown fields like any other to the API. */
  function prototypeKeys(spec: RouteSpec): fc.Arbitrary<BodyPart> {
    const value = fc.oneof(
      jsonValue(),
      fc.constantFrom(
        { is_staff: true },
        { state: 'online' },
        { owner_id: '00000000-0000-0000-0000-000000000000' },
        { prototype: { is_staff: true } },
      ),
    );
    return fc
      .tuple(fc.constantFrom(...PROTO_KEYS), value)
      .map(([k, v]) =>
        judged(
          spec,
          json(
            objectText(withMember(baseMembers(spec), k, JSON.stringify(v))),
            spec.body ? `unknown field ${JSON.stringify(k)}` : undefined,
          ),
        ),
      );
  }

  function shapes(route: string, spec: RouteSpec): fc.Arbitrary<BodyPart> {
    const base = objectText(baseMembers(spec));
    const fields = Object.keys(bodySchema(route)?.properties ?? {});
    const options: fc.Arbitrary<BodyPart>[] = [
      fc
        .constantFrom('[]', '[{}]', `[${base}]`, '[1,2,3]', '"text"', '""', '42', 'true', 'null')
        .map((text) => judged(spec, json(text, spec.body ? 'body is not an object' : undefined))),
      fc
        .tuple(
          fc.integer({ min: DEEP, max: 5000 }),
          fc.constantFrom<[string, string]>(['[', ']'], ['{"a":', '}']),
        )
        .map(([d, [open, close]]) =>
          json(
            open === '[' ? nested(d, '[', ']') : `${open.repeat(d)}1${close.repeat(d)}`,
            'body nested too deep',
          ),
        ),
    ];
    if (fields.length)
      options.push(
        fc
          .tuple(fc.constantFrom(...fields), fc.integer({ min: DEEP, max: 3000 }))
          .map(([field, d]) =>
            json(
              objectText(withMember(baseMembers(spec), field, nested(d, '[', ']'))),
              'body nested too deep',
            ),
          ),
        // The last of two equal keys is the one JSON.parse keeps.
        fc
          .constantFrom(...fields)
          .chain((field) =>
            wrongTypes(bodySchema(route)!.properties![field]).map((raw) =>
              json(
                objectText([...baseMembers(spec), [field, raw]]),
                `${field} repeated, last with a wrong type`,
              ),
            ),
          ),
      );
    return fc.oneof(...options);
  }

  function oversized(spec: RouteSpec): fc.Arbitrary<BodyPart> {
    return fc
      .tuple(fc.integer({ min: 65_537, max: 300_000 }), fc.constantFrom('description', 'padding'))
      .map(([bytes, field]) => {
        const members = withMember(baseMembers(spec), field, '""');
        const room = bytes - objectText(members).length;
        return json(
          objectText(withMember(members, field, JSON.stringify('a'.repeat(room)))),
          'body over 64 KiB',
        );
      });
  }

  function transport(spec: RouteSpec): fc.Arbitrary<BodyPart> {
    const valid = spec.body ? objectText(baseMembers(spec)) : '{}';
    const malformed = fc
      .oneof(
        fc.constantFrom(
          '{',
          '{"name":',
          "{'name':'x'}",
          '{"a":1,}',
          '[1,]',
          'NaN',
          '{"a":NaN}',
          '{"a":undefined}',
          '{"a":0x10}',
          '{"a":1}}',
          '{"a":1} trailing',
          '// comment\n{}',
          'nul',
          'tru',
          '"unterminated',
          '{"a":"\\x41"}',
          '   ',
          `${valid.slice(0, -1)}`,
          `${valid},`,
        ),
        fc.string({ minLength: 1, maxLength: 60 }).filter((s) => {
          try {
            JSON.parse(s);
            return false;
          } catch {
            return true;
          }
        }),
      )
      .map((text) => json(text, 'malformed JSON'));
    const wrongType = fc
      .constantFrom(
        'text/plain',
        'application/x-www-form-urlencoded',
        'multipart/form-data; boundary=x',
        'application/xml',
        'text/json',
        'application/json-patch+json',
        'application/vnd.api+json',
        'application/octet-stream',
        'json',
        '*/*',
        '',
        null,
      )
      .map((type): BodyPart => ({
        headers: type === null ? [] : [['Content-Type', type]],
        body: valid,
        refusal: `body sent as ${type === null ? 'no content type' : JSON.stringify(type)}`,
      }));
    const charset = fc
      .constantFrom('utf-16', 'utf-16le', 'utf-32', 'latin1', 'us-ascii', 'koi8-r', 'bogus')
      .map((c): BodyPart => ({
        headers: [['Content-Type', `application/json; charset=${c}`]],
        body: valid,
        refusal: `UTF-8 body labelled ${c}`,
      }));
    const encoding = fc
      .constantFrom('gzip', 'deflate', 'br', 'x-unknown', 'gzip, gzip')
      .map((e): BodyPart => ({
        headers: [
          ['Content-Type', 'application/json'],
          ['Content-Encoding', e],
        ],
        body: valid,
        refusal: `plain body labelled ${e}`,
      }));
    return fc.oneof(malformed, wrongType, charset, encoding);
  }

  /** Bodies a route that reads none may be sent: harmless unless unreadable. */
  function noiseBody(route: string, spec: RouteSpec): fc.Arbitrary<BodyPart> {
    return fc.oneof(unknownFields(route, spec), prototypeKeys(spec), shapes(route, spec));
  }

  function anyBody(route: string, spec: RouteSpec): fc.Arbitrary<BodyPart> {
    const bad: fc.Arbitrary<BodyPart>[] = [transport(spec), oversized(spec)];
    if (spec.body || spec.noBody) bad.push(unknownFields(route, spec), shapes(route, spec));
    if (spec.body) bad.push(fieldTypes(route, spec));
    return fc.oneof(
      { arbitrary: validBody(spec), weight: 10 },
      { arbitrary: fc.oneof(...bad), weight: 1 },
    );
  }

  interface Dimensions {
    caller: fc.Arbitrary<Caller>;
    segment: (caller: Caller) => fc.Arbitrary<SegmentPart>;
    query: fc.Arbitrary<QueryPart>;
    body: fc.Arbitrary<BodyPart>;
    auth: (caller: Caller) => fc.Arbitrary<HeadersPart>;
    headers: fc.Arbitrary<HeadersPart>;
  }

  /** Each family spoils one dimension of the request; the others are mostly valid. */
  function families(route: string, spec: RouteSpec): [string, Partial<Dimensions>][] {
    const out: [string, Partial<Dimensions> | null][] = [];
    const bodyReading = spec.body !== undefined || spec.noBody === true;
    if (spec.ids) out.push(['id', { segment: (c) => badSegments(route, spec, c) }]);
    if (queryParams(route).length && !spec.mutates) out.push(['query', { query: badQuery(route) }]);
    if (spec.body) {
      out.push(['field type', { body: fieldTypes(route, spec) }]);
      const values = fieldValues(route, spec);
      if (values) out.push(['field value', { body: values }]);
      const missing = missingFields(route, spec);
      if (missing) out.push(['missing field', { body: missing }]);
    }
    if (bodyReading) {
      out.push(['unknown field', { body: unknownFields(route, spec) }]);
      out.push(['prototype key', { body: prototypeKeys(spec) }]);
      out.push(['body shape', { body: shapes(route, spec) }]);
    } else if (!spec.mutates) {
      out.push(['ignored body', { body: noiseBody(route, spec) }]);
    }
    out.push(['oversized body', { body: oversized(spec) }]);
    out.push(['transport', { body: transport(spec) }]);
    // On a public route a bad token is noise, and the builder drops it from the refusals.
    if (!isPublic(route) || !spec.mutates)
      out.push(['authorization', { auth: (c) => authHeader(c, route, true) }]);
    if (headerParams(route).length) out.push(['headers', { headers: badHeaders(route) }]);
    if (spec.staff) out.push(['not staff', { caller: fc.constant<Caller>('alice') }]);
    return out.filter((f): f is [string, Partial<Dimensions>] => f[1] !== null);
  }

  interface Parts {
    segment: SegmentPart;
    query: QueryPart;
    body: BodyPart;
    auth: HeadersPart;
    headers: HeadersPart;
  }

  function assemble(route: string, spec: RouteSpec, caller: Caller, parts: Parts): Case {
    const [method, path] = route.split(' ');
    const { segment, query, body, auth, headers } = parts;
    const refusals = [segment, query, body, headers, ...(isPublic(route) ? [] : [auth])]
      .map((p) => p.refusal)
      .filter((r): r is string => r !== undefined);
    if (spec.staff && caller === 'alice') refusals.push('not staff');
    const q = [query.query, auth.query].filter((x) => x).join('&');
    const c: Case = {
      route,
      caller,
      method,
      path: path.replace('{id}', segment.segment) + (q ? `?${q}` : ''),
      headers: [...auth.headers, ...body.headers, ...headers.headers],
      body: body.body,
      refusals,
    };
    return Object.assign(c, { [fc.toStringMethod]: () => curl(c) });
  }

  function caseArbitrary(route: string, spec: RouteSpec, focus: Partial<Dimensions>) {
    const dims: Dimensions = {
      caller: spec.staff ? fc.constant<Caller>('admin') : fc.constantFrom<Caller>('alice', 'admin'),
      segment: (c) => anySegment(route, spec, c),
      query: anyQuery(route, spec),
      body: anyBody(route, spec),
      auth: (c) => anyAuth(c, route),
      headers: anyHeaders(route),
      ...focus,
    };
    return dims.caller.chain((caller) =>
      fc
        .record({
          segment: spec.ids ? dims.segment(caller) : fc.constant<SegmentPart>({ segment: '' }),
          query: dims.query,
          body: dims.body,
          auth: dims.auth(caller),
          headers: dims.headers,
        })
        .map((parts) => assemble(route, spec, caller, parts)),
    );
  }

  /**
   * Requests every run makes, before the generated ones: each field of the body null, a wrong
   * value for each field, and the keys every JavaScript object has, each on its own in an
   * otherwise valid request, so that no field is left out by the luck of the draw.
   */
  function examples(route: string, spec: RouteSpec, family: string): [Case][] {
    const caller: Caller = spec.staff ? 'admin' : 'alice';
    const real = spec.ids ? realSegments(route, spec, caller) : [];
    const valid = {
      segment: real.find((x) => !x.refusal) ?? real[0] ?? { segment: '' },
      query: { query: '' },
      auth: { headers: [['Authorization', `Bearer ${tokens[caller]}`]] as Header[] },
      headers: { headers: [] },
    };
    const props = Object.entries(bodySchema(route)?.properties ?? {});
    const field = (name: string, raw: string, refusal: string) =>
      json(objectText(withMember(baseMembers(spec), name, raw)), refusal);
    let bodies: BodyPart[] = [];
    if (family === 'field type')
      bodies = props
        .filter(([, schema]) => !schema.nullable)
        .map(([name]) => field(name, 'null', `${name}: null`));
    if (family === 'field value')
      bodies = props.flatMap(([name, schema]) => {
        const values = wrongValues(schema);
        return values
          ? [field(name, fc.sample(values, { seed: SEED, numRuns: 1 })[0], `${name}: bad value`)]
          : [];
      });
    if (family === 'prototype key')
      bodies = ['__proto__', 'constructor', 'prototype'].map((k) =>
        judged(
          spec,
          json(
            objectText(withMember(baseMembers(spec), k, '{"is_staff":true}')),
            spec.body ? `unknown field ${JSON.stringify(k)}` : undefined,
          ),
        ),
      );
    return bodies.map((body) => [assemble(route, spec, caller, { ...valid, body })]);
  }

  /** The request as a command line, tokens named rather than shown. */
  function curl(c: Case): string {
    const hide = (s: string) =>
      s.split(tokens.admin).join('<ADMIN_TOKEN>').split(tokens.alice).join("<alice's token>");
    const body =
      c.body === undefined
        ? ''
        : c.body.length > 300
          ? ` --data-raw '${hide(c.body.slice(0, 300))}…' (${Buffer.byteLength(c.body)} bytes)`
          : ` --data-raw '${hide(c.body)}'`;
    const headers = c.headers
      .map(
        ([k, v]) => ` -H '${k}: ${hide(v.length > 200 ? `${v.slice(0, 200)}…(${v.length})` : v)}'`,
      )
      .join('');
    const refusal = c.refusals.length ? `must refuse: ${c.refusals.join('; ')}` : 'may be valid';
    return `curl -X ${c.method} 'http://HOST${hide(c.path.length > 300 ? `${c.path.slice(0, 300)}…` : c.path)}'${headers}${body}   [${c.caller}; ${refusal}]`;
  }

  /** What a stack trace or a database error looks like when it leaks into a body. */
  const LEAKS: RegExp[] = [
    /\bat [\w$.<>]+ \(/,
    /\n\s+at /,
    /\.ts:\d+/,
    /\.js:\d+:\d+/,
    /QueryFailedError|SqliteError|SQLITE_[A-Z]+|EntityNotFound|TypeORMError/,
    /syntax error at or near|invalid input syntax for|out of range for type|violates .* constraint/i,
    /\bSELECT\b.*\bFROM\b/i,
    /\bINSERT INTO\b/i,
    /\bUPDATE\s+"?\w+"?\s+SET\b/i,
    /TypeError|ReferenceError|RangeError|Cannot read propert/,
  ];

  function problemsWith(c: Case, res: RawResponse): string[] {
    const problems: string[] = [];
    const refused = c.refusals.length > 0;
    if (res.status >= 500) problems.push(`answered ${res.status}`);
    else if (refused && !ERROR_STATUSES.includes(res.status))
      problems.push(`answered ${res.status} where it must refuse (${c.refusals.join('; ')})`);
    else if (
      !refused &&
      !(res.status >= 200 && res.status < 300) &&
      !ERROR_STATUSES.includes(res.status)
    )
      problems.push(`answered ${res.status}, neither a success nor a documented error`);
    if (res.status >= 400 && c.route !== 'GET /api/health') {
      const body = res.json as Json;
      if (!String(res.headers['content-type']).startsWith('application/json'))
        problems.push(`error with content-type ${res.headers['content-type']}`);
      if (body === null || typeof body !== 'object' || Array.isArray(body))
        problems.push('error body is not a JSON object');
      else {
        if (Object.keys(body).sort().join() !== 'error,message,statusCode')
          problems.push(`error body has keys ${Object.keys(body).join(', ')}`);
        if (body.statusCode !== res.status)
          problems.push(`statusCode ${body.statusCode} in the body`);
        if (typeof body.error !== 'string' || !body.error) problems.push('error is not a string');
        const messages = Array.isArray(body.message) ? body.message : [body.message];
        if (!messages.length || messages.some((m: unknown) => typeof m !== 'string' || !m))
          problems.push('message is not a non-empty string (or list of them)');
      }
    }
    // Staff see error_traceback in successful answers; it is errors that must not carry one.
    const sentText = `${c.path}\n${c.body ?? ''}\n${c.headers.map((h) => h.join(': ')).join('\n')}`;
    if (res.status >= 400)
      for (const leak of LEAKS)
        if (leak.test(res.text) && !leak.test(sentText)) problems.push(`body leaks ${leak}`);
    if (res.streamed && refused) problems.push('opened an event stream');
    return problems;
  }

  async function send(c: Case): Promise<RawResponse> {
    sent.set(c.route, (sent.get(c.route) ?? 0) + 1);
    return sendRaw(port, { method: c.method, path: c.path, headers: c.headers, body: c.body });
  }

  it.each(Object.keys(ROUTES))(
    '%s refuses what it must, in the error shape, and changes nothing',
    async (route) => {
      const spec = ROUTES[route];
      expect(operation(route)).toBeDefined();
      await restoreFixtures();
      baseline = await settle();
      const failures: string[] = [];

      // Real ids are picked as each request is made, from the fixtures as they are then.
      for (const [family, focus] of families(route, spec)) {
        const property = fc.asyncProperty(caseArbitrary(route, spec, focus), async (c) => {
          if (spec.mutates) expect(c.refusals).not.toEqual([]);
          const res = await send(c);
          const problems = problemsWith(c, res);
          if (Object.getOwnPropertyNames(Object.prototype).sort().join() !== protoNames.join())
            problems.push('Object.prototype was polluted');
          if (spec.mutates && !(await unchangedAtAGlance())) {
            problems.push(...differences(baseline, await snapshot()).map((d) => `changed ${d}`));
            baseline = await settle();
          }
          if (problems.length)
            throw new Error(
              `${problems.join('\n')}\nanswer: ${res.status} ${res.text.slice(0, 500)}`,
            );
        });
        const details = await fc.check(property, {
          examples: examples(route, spec, family),
          seed: SEED,
          numRuns: RUNS,
          includeErrorInReport: true,
        });
        if (details.failed) {
          failures.push(`[${route} / ${family}] ${await fc.asyncDefaultReportMessage(details)}`);
          await refreshFixtures();
          baseline = await settle();
        }
      }

      // What a glance does not show (a user, a transition without an event) shows here.
      const changed = differences(baseline, await snapshot());
      if (changed.length) failures.push(`[${route}] changed:\n${changed.join('\n')}`);
      if (failures.length) throw new Error(failures.join('\n\n'));
    },
  );

  it('leaves the service as it found it after all of the above', async () => {
    expect(differences(initial, await settle())).toEqual([]);
  });
});
