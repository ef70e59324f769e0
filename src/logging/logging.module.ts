import { Global, Inject, MiddlewareConsumer, Module, NestModule } from '@nestjs/common';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { randomUUID } from 'node:crypto';
import { Logger, PARAMS_PROVIDER_TOKEN, PinoLogger, type Params } from 'nestjs-pino';
import pino from 'pino';
import { pinoHttp } from 'pino-http';
import { AppConfig } from '../config/app-config';

const REQUEST_ID = /^[A-Za-z0-9._-]{1,128}$/;

/** Where a request keeps its id once made, so that every part asking gets the same one. */
const ID = Symbol('provisor.requestId');

/**
 * A request's id: its `X-Request-Id` when that is a sane one, else a new UUID, made once. The
 * server makes it as the request arrives (`serverWithBaseHeaders`), and Fastify takes the same
 * (`genReqId`); the request log, the response header and the jobs the request schedules all
 * carry it.
 */
export function requestIdOf(req: IncomingMessage): string {
  const request = req as IncomingMessage & { [ID]?: string };
  if (request[ID] === undefined) {
    const given = req.headers['x-request-id'];
    request[ID] = typeof given === 'string' && REQUEST_ID.test(given) ? given : randomUUID();
  }
  return request[ID];
}

/** The process's pino logger: Nest's own log lines and every request line go through it. */
export const ROOT_LOGGER = Symbol('ROOT_LOGGER');

/** Where JSON log lines go: null for standard output; a test may give a stream of its own. */
export const LOG_DESTINATION = Symbol('LOG_DESTINATION');

/**
 * Structured logs with pino: one JSON line per request (pretty with LOG_FORMAT=pretty) carrying a
 * request id, which is also answered as `X-Request-Id` (`serverWithBaseHeaders`) and carried
 * into the jobs the request scheduled (`@RequestId()`). Tokens never reach the log: the
 * Authorization header is redacted and `access_token` is cut from logged URLs.
 *
 * Nest's `Logger` writes through nestjs-pino's adapter. Its `LoggerModule` is not used: that
 * binds each request's logger with an `AsyncLocalStorage`, and on Node 20 an entered
 * `AsyncLocalStorage` installs promise hooks that run for every promise the process makes (11 to
 * 14 % of the CPU of an operation in `npm run bench`). So Nest's `Logger` never knows the
 * request: what must name one logs on `req.log`, pino-http's logger bound to that request, and
 * nestjs-pino's request-scoped features (`PinoLogger.assign`, `@InjectPinoLogger`) are not
 * provided.
 */
@Global()
@Module({
  providers: [
    { provide: LOG_DESTINATION, useValue: null },
    {
      provide: ROOT_LOGGER,
      inject: [AppConfig, LOG_DESTINATION],
      useFactory: (config: AppConfig, destination: pino.DestinationStream | null): pino.Logger => {
        const options: pino.LoggerOptions = {
          level: config.logLevel,
          redact: ['req.headers.authorization', 'req.headers.cookie'],
        };
        const logger = destination
          ? pino(options, destination)
          : pino({
              ...options,
              transport:
                config.logFormat === 'pretty'
                  ? {
                      target: 'pino-pretty',
                      options: { singleLine: true, translateTime: 'SYS:HH:MM:ss.l' },
                    }
                  : undefined,
            });
        // What nestjs-pino's LoggerModule would set: its documented handle on the root logger
        // (to change the level at run time, say).
        (PinoLogger as { root: pino.Logger }).root = logger;
        return logger;
      },
    },
    {
      provide: PARAMS_PROVIDER_TOKEN,
      inject: [ROOT_LOGGER],
      useFactory: (logger: pino.Logger): Params => ({ pinoHttp: { logger } }),
    },
    PinoLogger,
    Logger,
  ],
  exports: [Logger, PinoLogger, ROOT_LOGGER],
})
export class LoggingModule implements NestModule {
  constructor(@Inject(ROOT_LOGGER) private readonly logger: pino.Logger) {}

  configure(consumer: MiddlewareConsumer): void {
    const logRequest = pinoHttp({
      logger: this.logger,
      genReqId: requestIdOf,
      serializers: {
        res: (res: { statusCode: number }) => ({ statusCode: res.statusCode }),
        req: (req: { id: string; method: string; url: string }) => ({
          id: req.id,
          method: req.method,
          url: req.url.replace(/([?&]access_token=)[^&]*/g, '$1[redacted]'),
        }),
      },
      // Health is polled every few seconds, and its 503 only repeats what the Redis or
      // database connection logged once when it went; any other 503 says "not ready", not
      // a fault of Provisor's.
      customLogLevel: (req: IncomingMessage, res: ServerResponse, error?: Error) =>
        req.url === '/api/health'
          ? 'silent'
          : error || (res.statusCode >= 500 && res.statusCode !== 503)
            ? 'error'
            : res.statusCode >= 400
              ? 'warn'
              : 'info',
      autoLogging: { ignore: (req: IncomingMessage) => req.url === '/api/health' },
    });
    consumer
      .apply((req: IncomingMessage, res: ServerResponse, next: () => void) => {
        // Fastify's middleware layer hands over its logger (silent: Provisor gives Fastify
        // none) as `log`; the request's logger is pino-http's instead. Its id is Fastify's, the
        // one `requestIdOf` made.
        (req as { log?: unknown }).log = undefined;
        (res as { log?: unknown }).log = undefined;
        logRequest(req, res, next);
      })
      .forRoutes('*path');
  }
}
