import type { AddressInfo } from 'node:net';
import { serverWithBaseHeaders } from './base-headers.server';

describe('serverWithBaseHeaders', () => {
  it('gives the server the timeouts and limits Fastify was given', () => {
    const server = serverWithBaseHeaders(() => undefined, {
      keepAliveTimeout: 72_000,
      requestTimeout: 300_000,
      maxRequestsPerSocket: 100,
    });
    expect({
      keepAliveTimeout: server.keepAliveTimeout,
      requestTimeout: server.requestTimeout,
      maxRequestsPerSocket: server.maxRequestsPerSocket,
    }).toEqual({ keepAliveTimeout: 72_000, requestTimeout: 300_000, maxRequestsPerSocket: 100 });
  });

  it('refuses TLS and HTTP/2 rather than serve plain HTTP in their place', () => {
    expect(() => serverWithBaseHeaders(() => undefined, { https: {} })).toThrow(/TLS/);
    expect(() => serverWithBaseHeaders(() => undefined, { http2: true })).toThrow(/TLS/);
  });

  it('sets X-Request-Id and the security headers before the handler runs', async () => {
    const server = serverWithBaseHeaders((_req, res) => res.end('ok'));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const { port } = server.address() as AddressInfo;
      const given = await fetch(`http://127.0.0.1:${port}/`, {
        headers: { 'X-Request-Id': 'from-client-1' },
      });
      expect(given.headers.get('x-request-id')).toBe('from-client-1');
      expect(given.headers.get('x-content-type-options')).toBe('nosniff');
      const made = await fetch(`http://127.0.0.1:${port}/`, {
        headers: { 'X-Request-Id': 'not a valid id!' },
      });
      expect(made.headers.get('x-request-id')).toMatch(/^[0-9a-f-]{36}$/);
    } finally {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    }
  });
});
