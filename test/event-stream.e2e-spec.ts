import { ApiClient } from './support/api';
import { startApp, TestApp } from './support/test-app';

interface StreamedEvent {
  id: string;
  data: { id: number; type: string; instance_id: string; state: string };
  lines: string[];
}

/** A Server-Sent Events client over fetch: collects events until told to stop. */
class SseClient {
  readonly events: StreamedEvent[] = [];
  private readonly abort = new AbortController();
  status = 0;
  contentType = '';

  static async open(url: string, headers: Record<string, string> = {}): Promise<SseClient> {
    const client = new SseClient();
    const res = await fetch(url, { headers, signal: client.abort.signal });
    client.status = res.status;
    client.contentType = res.headers.get('content-type') ?? '';
    if (res.ok && res.body) void client.read(res.body);
    return client;
  }

  private async read(body: ReadableStream<Uint8Array>): Promise<void> {
    const decoder = new TextDecoder();
    let buffer = '';
    try {
      for await (const chunk of body) {
        buffer += decoder.decode(chunk, { stream: true });
        let end: number;
        while ((end = buffer.indexOf('\n\n')) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const lines = block.split('\n');
          const id = lines.find((l) => l.startsWith('id: '))?.slice(4);
          const data = lines.find((l) => l.startsWith('data: '))?.slice(6);
          if (id !== undefined && data !== undefined)
            this.events.push({ id, data: JSON.parse(data), lines });
        }
      }
    } catch {
      // closed by the test
    }
  }

  async waitFor(count: number, timeoutMs = 10_000): Promise<StreamedEvent[]> {
    const deadline = Date.now() + timeoutMs;
    while (this.events.length < count && Date.now() < deadline)
      await new Promise((r) => setTimeout(r, 25));
    return this.events;
  }

  close(): void {
    this.abort.abort();
  }
}

describe('GET /api/events/stream', () => {
  let t: TestApp;
  let admin: ApiClient;
  let alice: ApiClient;
  let bob: ApiClient;
  let base: string;
  const open: SseClient[] = [];

  beforeAll(async () => {
    t = await startApp();
    await t.app.listen(0, '127.0.0.1');
    base = await t.app.getUrl();
    admin = new ApiClient(t.http, t.adminToken);
    alice = await admin.createUser('alice');
    bob = await admin.createUser('bob');
  });
  afterEach(() => open.splice(0).forEach((c) => c.close()));
  afterAll(() => t.close());

  const stream = async (path: string, headers: Record<string, string> = {}) => {
    const client = await SseClient.open(`${base}${path}`, headers);
    open.push(client);
    return client;
  };

  it('needs a token: 401 without one', async () => {
    expect((await stream('/api/events/stream')).status).toBe(401);
    expect((await stream('/api/events/stream?access_token=nope')).status).toBe(401);
    // The stream's refusal says how to send a token without a header (a browser's EventSource);
    // other routes take the header alone, and say only that.
    const refused = await t.http.get('/api/events/stream').expect(401);
    expect(refused.body.message).toContain('?access_token=<token>');
    const elsewhere = await t.http.get('/api/events').expect(401);
    expect(elsewhere.body.message).toBe('Missing bearer token: send Authorization: Bearer <token>');
  });

  it('sends each event as it happens, with id: and data: only, in order (token as ?access_token=)', async () => {
    const sse = await stream(`/api/events/stream?access_token=${alice.token}`);
    expect(sse.status).toBe(200);
    expect(sse.contentType).toMatch(/^text\/event-stream/);
    await new Promise((r) => setTimeout(r, 200));
    const vm = await alice.online();
    const got = await sse.waitFor(3);
    const stored = await alice.events(vm.id);
    expect(got.map((e) => e.data)).toEqual(stored);
    expect(got.map((e) => e.id)).toEqual(stored.map((e) => String(e.id)));
    for (const e of got) expect(e.lines.some((l) => l.startsWith('event:'))).toBe(false);
  });

  it('resumes after Last-Event-ID with no gap and no duplicate', async () => {
    const vm = await alice.online();
    await alice.action(vm.id, 'stop');
    await alice.waitForState(vm.id, 'offline');
    const stored = await alice.events(vm.id);
    const resumeAfter = stored[2].id;

    const sse = await stream(`/api/events/stream?instance_id=${vm.id}`, {
      Authorization: `Bearer ${alice.token}`,
      'Last-Event-ID': String(resumeAfter),
    });
    const got = await sse.waitFor(stored.length - 3);
    await new Promise((r) => setTimeout(r, 300));
    expect(got.map((e) => e.data)).toEqual(stored.slice(3));
  });

  it("shows a user only their own instances' events", async () => {
    const sse = await stream('/api/events/stream', { Authorization: `Bearer ${alice.token}` });
    await new Promise((r) => setTimeout(r, 200));
    const theirs = await bob.online({ name: 'bobs' });
    const mine = await alice.online({ name: 'alices' });
    await sse.waitFor(3);
    await new Promise((r) => setTimeout(r, 500));
    const ids = new Set(sse.events.map((e) => e.data.instance_id));
    expect(ids.has(mine.id)).toBe(true);
    expect(ids.has(theirs.id)).toBe(false);
  });

  it('ends open streams when the app shuts down, so closing does not wait for clients', async () => {
    const other = await startApp();
    await other.app.listen(0, '127.0.0.1');
    const client = await SseClient.open(`${await other.app.getUrl()}/api/events/stream`, {
      Authorization: `Bearer ${other.adminToken}`,
    });
    open.push(client);
    expect(client.status).toBe(200);
    const started = Date.now();
    await other.close();
    expect(Date.now() - started).toBeLessThan(5000);
  });

  it('refuses a Last-Event-ID that is not an event id', async () => {
    const res = await t.http
      .get('/api/events/stream')
      .set('Authorization', `Bearer ${alice.token}`)
      .set('Last-Event-ID', 'yesterday');
    expect(res.status).toBe(400);
    expect(res.body.message).toMatch(/Last-Event-ID/);
  });
});

/** APP_ROLE=api and APP_ROLE=worker apart need PostgreSQL. */
const onPostgres = process.env.TEST_DATABASE_URL?.startsWith('postgres') ? describe : describe.skip;

onPostgres('GET /api/events/stream across processes', () => {
  let api: TestApp;
  let worker: TestApp;

  beforeAll(async () => {
    api = await startApp({ APP_ROLE: 'api' });
    worker = await startApp({
      APP_ROLE: 'worker',
      DATABASE_URL: api.env.DATABASE_URL,
      QUEUE_PREFIX: api.env.QUEUE_PREFIX,
      ADMIN_TOKEN: api.adminToken,
    });
    await api.app.listen(0, '127.0.0.1');
  });
  afterAll(async () => {
    await worker?.close();
    await api?.close();
  });

  it('streams from the API process the events a worker process makes', async () => {
    const client = await SseClient.open(`${await api.app.getUrl()}/api/events/stream`, {
      Authorization: `Bearer ${api.adminToken}`,
    });
    try {
      const admin = new ApiClient(api.http, api.adminToken);
      const vm = await admin.online({ name: 'split' });
      const got = await client.waitFor(3);
      expect(got.map((e) => e.data.type)).toEqual([
        'instance.provision.scheduled',
        'instance.provision.started',
        'instance.provision.succeeded',
      ]);
      expect(got.every((e) => e.data.instance_id === vm.id)).toBe(true);
    } finally {
      client.close();
    }
  });
});
