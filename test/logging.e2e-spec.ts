import { randomUUID } from 'node:crypto';
import { PassThrough } from 'node:stream';
import { InstanceQueries } from '../src/instances/instance-queries.service';
import { LOG_DESTINATION } from '../src/logging/logging.module';
import { ApiClient } from './support/api';
import { startApp, TestApp } from './support/test-app';

type Line = Record<string, unknown> & { req?: { id?: string; method?: string; url?: string } };

/** What operators read: a JSON line per request naming it, the same id on its error lines, no secrets. */
describe('request logs', () => {
  let t: TestApp;
  let admin: ApiClient;
  let text = '';
  const lines: Line[] = [];

  beforeAll(async () => {
    const sink = new PassThrough();
    sink.on('data', (chunk: Buffer) => {
      text += chunk.toString('utf8');
      const complete = text.slice(0, text.lastIndexOf('\n') + 1);
      lines.length = 0;
      for (const line of complete.split('\n').filter(Boolean)) lines.push(JSON.parse(line) as Line);
    });
    t = await startApp({ LOG_LEVEL: 'info' }, (builder) =>
      builder.overrideProvider(LOG_DESTINATION).useValue(sink),
    );
    admin = new ApiClient(t.http, t.adminToken);
  });
  afterAll(() => t.close());

  /** The lines about one request, once `count` of them have been written. */
  async function linesOf(requestId: string, count: number): Promise<Line[]> {
    const deadline = Date.now() + 5_000;
    for (;;) {
      const found = lines.filter((line) => line.req?.id === requestId);
      if (found.length >= count || Date.now() > deadline) return found;
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
  }

  it('writes one line per request with its id, method, URL and status, and never the token', async () => {
    await admin
      .get('/api/users/me?access_token=leak-me&x=1')
      .set('X-Request-Id', 'log-line-1')
      .expect(200);
    const [line] = await linesOf('log-line-1', 1);
    expect(line).toMatchObject({
      level: 30,
      msg: 'request completed',
      req: { id: 'log-line-1', method: 'GET', url: '/api/users/me?access_token=[redacted]&x=1' },
      res: { statusCode: 200 },
    });
    expect(Object.keys(line.req!).sort()).toEqual(['id', 'method', 'url']);
    expect(text).not.toContain('leak-me');
    expect(text).not.toContain(t.adminToken);
  });

  it('logs a refused request as a warning, and health checks not at all', async () => {
    await t.http.get('/api/health').set('X-Request-Id', 'log-health').expect(200);
    await t.http.get('/api/instances').set('X-Request-Id', 'log-401').expect(401);
    const [refused] = await linesOf('log-401', 1);
    expect(refused).toMatchObject({ level: 40, res: { statusCode: 401 } });
    // Lines are written in order: had the health check been logged, its line would be here.
    expect(lines.filter((line) => line.req?.id === 'log-health')).toEqual([]);
  });

  it("logs an unexpected error's stack on a line naming the request, and answers a bare 500", async () => {
    const history = jest
      .spyOn(t.app.get(InstanceQueries), 'history')
      .mockRejectedValueOnce(new Error('history store on fire'));
    try {
      const res = await admin
        .get(`/api/instances/${randomUUID()}/transitions`)
        .set('X-Request-Id', 'log-500')
        .expect(500);
      expect(res.body).toEqual({
        statusCode: 500,
        error: 'Internal Server Error',
        message: 'Internal server error',
      });
      expect(JSON.stringify(res.body)).not.toContain('on fire');
      const found = await linesOf('log-500', 2);
      const stack = found.find((line) => line.context === 'HttpErrors');
      expect(stack).toMatchObject({ level: 50, req: { id: 'log-500', method: 'GET' } });
      expect(stack?.msg).toMatch(/^Error: history store on fire\n\s+at /);
      expect(found.find((line) => line !== stack)).toMatchObject({
        level: 50,
        msg: 'request errored',
        res: { statusCode: 500 },
        err: { type: 'Error', message: 'failed with status code 500' },
      });
    } finally {
      history.mockRestore();
    }
  });
});
