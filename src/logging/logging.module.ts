import { MiddlewareConsumer, Module, NestModule } from '@nestjs/common';
import type { NextFunction, Request, Response } from 'express';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { randomUUID } from 'node:crypto';
import { LoggerModule } from 'nestjs-pino';
import { AppConfig } from '../config/app-config';
import { RequestContext } from './request-context';

const REQUEST_ID = /^[A-Za-z0-9._-]{1,128}$/;

/**
 * Structured logs with pino: one JSON line per request (pretty with LOG_FORMAT=pretty) carrying a
 * request id, which is also answered as `X-Request-Id` and carried into the jobs the request
 * scheduled. Tokens never reach the log: the Authorization header is redacted and
 * `access_token` is cut from logged URLs.
 */
@Module({
  imports: [
    LoggerModule.forRootAsync({
      inject: [AppConfig],
      useFactory: (config: AppConfig) => ({
        pinoHttp: {
          level: config.logLevel,
          transport:
            config.logFormat === 'pretty'
              ? {
                  target: 'pino-pretty',
                  options: { singleLine: true, translateTime: 'SYS:HH:MM:ss.l' },
                }
              : undefined,
          genReqId: (req: IncomingMessage, res: ServerResponse) => {
            const given = req.headers['x-request-id'];
            const id = typeof given === 'string' && REQUEST_ID.test(given) ? given : randomUUID();
            res.setHeader('X-Request-Id', id);
            return id;
          },
          redact: ['req.headers.authorization', 'req.headers.cookie'],
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
        },
        forRoutes: ['*path'],
      }),
    }),
  ],
})
export class LoggingModule implements NestModule {
  /** Work a request starts (the jobs it schedules) remembers which request it was. */
  configure(consumer: MiddlewareConsumer): void {
    consumer
      .apply((req: Request & { id?: unknown }, _res: Response, next: NextFunction) =>
        RequestContext.run(String(req.id ?? ''), next),
      )
      .forRoutes('*path');
  }
}
