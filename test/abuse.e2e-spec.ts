import { ApiClient, bearer } from './support/api';
import { startApp, TestApp } from './support/test-app';

/** Rate limits per token, security headers, and CORS that stays off unless configured. */
describe('rate limit per token', () => {
  let t: TestApp;
  let alice: ApiClient;
  let bob: ApiClient;

  beforeAll(async () => {
    t = await startApp({ RATE_LIMIT_PER_MINUTE: '5' });
    const admin = new ApiClient(t.http, t.adminToken);
    alice = await admin.createUser('alice');
    bob = await admin.createUser('bob');
  });
  afterAll(() => t?.close());

  it('answers 429 with Retry-After once a token spent its minute, and does nothing', async () => {
    const remaining: string[] = [];
    for (let i = 0; i < 5; i++) {
      const res = await alice.get('/api/instances').expect(200);
      remaining.push(res.headers['x-ratelimit-remaining']);
    }
    expect(remaining).toEqual(['4', '3', '2', '1', '0']);

    const refused = await alice.post('/api/instances', { name: 'over', flavor: 'small' });
    expect(refused.status).toBe(429);
    const retryAfter = Number(refused.headers['retry-after']);
    expect(Number.isInteger(retryAfter)).toBe(true);
    expect(retryAfter).toBeGreaterThanOrEqual(1);
    expect(retryAfter).toBeLessThanOrEqual(60);
    expect(refused.body).toEqual({
      statusCode: 429,
      error: 'Too Many Requests',
      message: expect.stringContaining('5 requests a minute'),
    });

    // A spent token hears 429 before anything about its body: malformed, not JSON, or unusable.
    for (const [type, text] of [
      ['application/json', '{bad'],
      ['text/plain', 'a VM please'],
      ['application/json', '{"__proto__": {}}'],
    ]) {
      const res = await t.http
        .post('/api/instances')
        .set(bearer(alice.token))
        .set('content-type', type)
        .send(text);
      expect({ type, text, status: res.status }).toEqual({ type, text, status: 429 });
      expect(res.headers['retry-after']).toBeDefined();
    }

    // Nothing was created: bob, counted apart from alice, sees through staff eyes.
    const admin = new ApiClient(t.http, t.adminToken);
    expect((await admin.get('/api/instances?name=over').expect(200)).body.total).toBe(0);
  });

  it('counts each token apart, and leaves unauthenticated and public routes alone', async () => {
    await bob.get('/api/users/me').expect(200);
    await t.http.get('/api/instances').expect(401);
    await t.http.get('/api/health').expect(200);
    await t.http.get('/api/instances').set(bearer('not-a-token')).expect(401);
  });
});

describe('rate limit switched off', () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await startApp({ RATE_LIMIT_PER_MINUTE: '0' });
  });
  afterAll(() => t?.close());

  it('never answers 429 and sends no rate-limit headers', async () => {
    const admin = new ApiClient(t.http, t.adminToken);
    for (let i = 0; i < 30; i++) {
      const res = await admin.get('/api/users/me').expect(200);
      expect(res.headers['x-ratelimit-limit']).toBeUndefined();
    }
  });
});

describe('security headers and CORS by default', () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await startApp();
  });
  afterAll(() => t?.close());

  it('sends helmet headers on API answers and errors alike', async () => {
    for (const res of [await t.http.get('/api/health'), await t.http.get('/api/nowhere')]) {
      expect(res.headers['content-security-policy']).toContain("default-src 'self'");
      expect(res.headers['x-content-type-options']).toBe('nosniff');
      expect(res.headers['x-frame-options']).toBe('SAMEORIGIN');
      expect(res.headers['x-powered-by']).toBeUndefined();
    }
  });

  it('lets Swagger UI and the dashboard load over plain HTTP: no upgrade-insecure-requests', async () => {
    // With it, a browser that opens http://<server address>:3000/api/docs (the Docker image, say)
    // fetches the page's scripts and styles over https, which Provisor does not serve, and shows
    // a blank page. Behind a TLS proxy every request is https already.
    for (const path of ['/api/docs', '/admin/queues', '/api/health']) {
      const csp = (await t.http.get(path)).headers['content-security-policy'];
      expect({ path, csp }).toEqual({ path, csp: expect.stringContaining("default-src 'self'") });
      expect({ path, csp }).toEqual({ path, csp: expect.not.stringContaining('upgrade-insecure') });
    }
  });

  it('grants no origin: no Access-Control-Allow-Origin, preflight or not', async () => {
    const preflight = await t.http
      .options('/api/instances')
      .set('Origin', 'https://evil.example')
      .set('Access-Control-Request-Method', 'POST')
      .set('Access-Control-Request-Headers', 'authorization,content-type');
    expect(preflight.headers['access-control-allow-origin']).toBeUndefined();
    const get = await t.http
      .get('/api/instances')
      .set(bearer(t.adminToken))
      .set('Origin', 'https://evil.example')
      .expect(200);
    expect(get.headers['access-control-allow-origin']).toBeUndefined();
  });
});

describe('CORS with CORS_ORIGINS', () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await startApp({ CORS_ORIGINS: 'https://console.example.com, http://localhost:5173' });
  });
  afterAll(() => t?.close());

  it('answers the preflight of a listed origin, with the headers the API needs', async () => {
    const res = await t.http
      .options('/api/instances')
      .set('Origin', 'http://localhost:5173')
      .set('Access-Control-Request-Method', 'POST')
      .set('Access-Control-Request-Headers', 'authorization,content-type,idempotency-key')
      .expect(204);
    expect(res.headers['access-control-allow-origin']).toBe('http://localhost:5173');
    expect(res.headers['access-control-allow-headers']).toMatch(/Idempotency-Key/);
    expect(res.headers['access-control-allow-credentials']).toBeUndefined();
  });

  it('allows every method the API has, and the preflight carries the base headers', async () => {
    for (const method of ['GET', 'POST', 'PATCH', 'DELETE']) {
      const res = await t.http
        .options('/api/instances/0190c6a0-0000-7000-8000-000000000000')
        .set('Origin', 'https://console.example.com')
        .set('Access-Control-Request-Method', method)
        .set('X-Request-Id', `preflight-${method}`)
        .expect(204);
      expect(res.headers['access-control-allow-methods']).toContain(method);
      expect(res.headers['x-request-id']).toBe(`preflight-${method}`);
      expect(res.headers['x-content-type-options']).toBe('nosniff');
    }
  });

  it('answers an OPTIONS request without the preflight headers as a preflight, not a 400', async () => {
    const res = await t.http.options('/api/instances').expect(204);
    expect(res.headers['access-control-allow-methods']).toContain('PATCH');
    expect(res.text).toBe('');
  });

  it('exposes Retry-After to a listed origin and ignores any other', async () => {
    const listed = await t.http
      .get('/api/users/me')
      .set(bearer(t.adminToken))
      .set('Origin', 'https://console.example.com')
      .expect(200);
    expect(listed.headers['access-control-allow-origin']).toBe('https://console.example.com');
    expect(listed.headers['access-control-expose-headers']).toMatch(/Retry-After/);
    const other = await t.http
      .get('/api/users/me')
      .set(bearer(t.adminToken))
      .set('Origin', 'https://evil.example')
      .expect(200);
    expect(other.headers['access-control-allow-origin']).toBeUndefined();
  });
});
