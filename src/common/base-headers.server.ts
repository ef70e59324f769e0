import { Logger } from '@nestjs/common';
import helmet from 'helmet';
import {
  createServer,
  IncomingMessage,
  Server,
  ServerOptions as ServerOptionsOfNode,
  ServerResponse,
} from 'node:http';
import { requestIdOf } from '../logging/logging.module';
import { endWithError, toErrorBody } from './all-exceptions.filter';

type Handler = (req: IncomingMessage, res: ServerResponse) => void;

/** The options Fastify would build its own server from, applied to this one alike. */
interface ServerOptions {
  http?: ServerOptionsOfNode | null;
  https?: unknown;
  http2?: unknown;
  keepAliveTimeout?: number;
  requestTimeout?: number;
  connectionTimeout?: number;
  maxRequestsPerSocket?: number;
}

/**
 * helmet's defaults but one: its content security policy's `upgrade-insecure-requests`, which
 * has a browser fetch every script and style of a page it got over http over https instead.
 * Provisor serves plain HTTP (TLS, where there is any, ends in front of it, and then every
 * request is https already), so with it Swagger UI and the queue dashboard, opened at the
 * server's address over http (the Docker image's `0.0.0.0`), would show a blank page.
 */
const securityHeaders = helmet({
  contentSecurityPolicy: { directives: { upgradeInsecureRequests: null } },
});
const logger = new Logger('HttpErrors');

/**
 * Provisor's HTTP server (Fastify's `serverFactory`): every request gets the base headers before
 * Fastify sees it, so that every answer carries them, whoever gives it (a route, a CORS
 * preflight, the queue dashboard, Fastify refusing a path it cannot decode): `X-Request-Id` and
 * helmet's security headers (`securityHeaders`: a same-origin content security policy, under
 * which Swagger UI and the queue dashboard still render).
 */
export function serverWithBaseHeaders(handler: Handler, options: ServerOptions = {}): Server {
  if (options.https || options.http2) {
    // Provisor speaks plain HTTP/1.1; TLS ends in front of it (README, "Running in production").
    throw new Error('Provisor serves plain HTTP: terminate TLS and HTTP/2 in front of it');
  }
  const server = createServer(options.http ?? {}, (req, res) => {
    res.setHeader('X-Request-Id', requestIdOf(req));
    securityHeaders(req, res, (error?: unknown) => {
      if (!error) return handler(req, res);
      // helmet fails only on a bad configuration of its own: a fault of the server.
      endWithError(res, toErrorBody(error, logger));
    });
  });
  if (options.keepAliveTimeout !== undefined) server.keepAliveTimeout = options.keepAliveTimeout;
  if (options.requestTimeout !== undefined) server.requestTimeout = options.requestTimeout;
  if (options.connectionTimeout) server.setTimeout(options.connectionTimeout);
  if (options.maxRequestsPerSocket) server.maxRequestsPerSocket = options.maxRequestsPerSocket;
  return server;
}
