import { Global, Inject, MiddlewareConsumer, Module, NestModule } from '@nestjs/common';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { randomUUID } from 'node:crypto';
import { Logger, PARAMS_PROVIDER_TOKEN, PinoLogger, type Params } from 'nestjs-pino';
import pino from 'pino';
import { pinoHttp } from 'pino-http';
import { AppConfig } from '../config/app-config';

const REQUEST_ID = /^[A-Za-z0-9._-]{1,128}$/;

/** The process's pino logger: Nest's own log lines and every request line go through it. */
export const ROOT_LOGGER = Symbol('ROOT_LOGGER');

/**
 * Structured logs with pino: one JSON line per request (pretty with LOG_FORMAT=pretty) carrying a
 * request id, which is also answered as `X-Request-Id` and carried into the jobs the request
 * scheduled (`@RequestId()`). Tokens never reach the log: the Authorization header is redacted
 * and `access_token` is cut from logged URLs.
 *
 * Nest's `Logger` writes through nestjs-pino's adapter. Its `LoggerModule` is not used: that
 * binds each request's logger with an `AsyncLocalStorage`, and on Node 20 any active
 * `AsyncLocalStorage` installs promise hooks that run for every promise the process makes, about
 * a tenth of the CPU an operation costs (measured by `npm run bench`). What a request logs
 * itself goes through `req.log`, pino-http's logger bound to that request.
 */
@Global()
@Module({
  providers: [
    {
      provide: ROOT_LOGGER,
      inject: [AppConfig],
      useFactory: (config: AppConfig): pino.Logger =>
        pino({
          level: config.logLevel,
          transport:
            config.logFormat === 'pretty'
              ? {
                  target: 'pino-pretty',
                  options: { singleLine: true, translateTime: 'SYS:HH:MM:ss.l' },
                }
              : undefined,
          redact: ['req.headers.authorization', 'req.headers.cookie'],
        }),
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
    consumer
      .apply(
        pinoHttp({
          logger: this.logger,
          genReqId: (req: IncomingMessage, res: ServerResponse) => {
            const given = req.headers['x-request-id'];
            const id = typeof given === 'string' && REQUEST_ID.test(given) ? given : randomUUID();
            res.setHeader('X-Request-Id', id);
            return id;
          },
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
        }),
      )
      .forRoutes('*path');
  }
}
