import {
  ArgumentsHost,
  Catch,
  ExceptionFilter,
  HttpException,
  HttpStatus,
  Logger,
} from '@nestjs/common';
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { QueryFailedError } from 'typeorm';
import { BodyError, notJson, tooLarge } from './json-body.parser';
import { DomainError, DomainErrorCode } from './domain-error';

export interface ErrorBody {
  statusCode: number;
  error: string;
  message: string | string[];
}

const STATUS_OF: Record<DomainErrorCode, HttpStatus> = {
  [DomainErrorCode.NotFound]: HttpStatus.NOT_FOUND,
  [DomainErrorCode.InvalidTransition]: HttpStatus.CONFLICT,
  [DomainErrorCode.Conflict]: HttpStatus.CONFLICT,
  [DomainErrorCode.BadRequest]: HttpStatus.BAD_REQUEST,
  [DomainErrorCode.Forbidden]: HttpStatus.FORBIDDEN,
  [DomainErrorCode.Unprocessable]: HttpStatus.UNPROCESSABLE_ENTITY,
};

const REASON: Record<number, string> = {
  400: 'Bad Request',
  401: 'Unauthorized',
  403: 'Forbidden',
  404: 'Not Found',
  405: 'Method Not Allowed',
  409: 'Conflict',
  413: 'Payload Too Large',
  415: 'Unsupported Media Type',
  422: 'Unprocessable Entity',
  429: 'Too Many Requests',
  500: 'Internal Server Error',
  503: 'Service Unavailable',
};

/**
 * Turns anything thrown into `{statusCode, error, message}`. Domain errors map by code; errors
 * of the request itself (its body, its URL) keep their 4xx; anything unexpected is logged and answered as a bare 500,
 * so no stack trace or SQL ever reaches a client.
 */
export function toErrorBody(exception: unknown, logger?: ErrorLog): ErrorBody {
  if (exception instanceof DomainError) {
    const statusCode = STATUS_OF[exception.code];
    return { statusCode, error: REASON[statusCode], message: exception.message };
  }
  if (exception instanceof BodyError) {
    const { statusCode, message } = exception;
    return { statusCode, error: REASON[statusCode], message };
  }
  if (exception instanceof HttpException) {
    const statusCode = exception.getStatus();
    // Fastify's errors about the request reach here as HttpExceptions (Nest maps them), with
    // Fastify's words: those about the body's size and type are said as the API says them.
    if (statusCode === 413) return toErrorBody(tooLarge());
    if (statusCode === 415) return toErrorBody(notJson());
    const response = exception.getResponse();
    // A server fault Fastify reported (Nest wraps it with Fastify's words): logged, and answered
    // as any unexpected error is. Provisor's own 5xx answers carry a body, not bare words.
    if (statusCode >= 500 && typeof response === 'string') {
      logger?.error(exception.stack ?? exception.message);
      const error = REASON[statusCode] ?? REASON[500];
      return { statusCode, error, message: statusCode === 500 ? 'Internal server error' : error };
    }
    // A body made on purpose (terminus's health report) is answered as it is.
    if (typeof response === 'object' && response !== null && !('message' in response)) {
      return response as ErrorBody;
    }
    const message =
      typeof response === 'object' && response !== null && 'message' in response
        ? (response as { message: string | string[] }).message
        : exception.message;
    return { statusCode, error: REASON[statusCode] ?? exception.name, message };
  }
  const clientError = databaseInputError(exception) ?? unreadableRequest(exception);
  if (clientError) return clientError;
  logger?.error(
    exception instanceof Error ? (exception.stack ?? exception.message) : String(exception),
  );
  return { statusCode: 500, error: REASON[500], message: 'Internal server error' };
}

/** PostgreSQL refuses NUL characters in text; that is the client's input, not a fault of ours. */
function databaseInputError(exception: unknown): ErrorBody | null {
  if (!(exception instanceof QueryFailedError)) return null;
  const code = (exception.driverError as { code?: string } | undefined)?.code;
  if (code === '22021' || code === '22P05') {
    return {
      statusCode: 400,
      error: REASON[400],
      message: 'Text must not contain NUL (\\u0000) characters',
    };
  }
  return null;
}

/**
 * A request the server could not read to its end (the client went away mid-body, a broken
 * chunked encoding): Node and Fastify mark such errors with a 4xx `statusCode`. Their words name
 * internals, so the answer says what happened in the API's.
 */
function unreadableRequest(exception: unknown): ErrorBody | null {
  const statusCode = (exception as { statusCode?: unknown } | null)?.statusCode;
  if (!(exception instanceof Error) || typeof statusCode !== 'number') return null;
  if (statusCode < 400 || statusCode > 499) return null;
  return {
    statusCode,
    error: REASON[statusCode] ?? REASON[400],
    message: 'The request could not be read',
  };
}

function statusOf(exception: unknown, body: ErrorBody): number {
  return exception instanceof HttpException ? exception.getStatus() : body.statusCode;
}

/** Where an unexpected error's stack goes: a Nest logger, or a request's own pino logger. */
export interface ErrorLog {
  error(message: string): unknown;
}

/** Answers `body` on Node's own response, where no Fastify reply is at hand. */
export function endWithError(res: ServerResponse, body: ErrorBody, status = body.statusCode): void {
  res.statusCode = status;
  res.setHeader('Content-Type', 'application/json; charset=utf-8');
  res.end(JSON.stringify(body));
}

@Catch()
export class AllExceptionsFilter implements ExceptionFilter {
  private readonly logger = new Logger('HttpErrors');

  catch(exception: unknown, host: ArgumentsHost): void {
    // Fastify's reply and request, or, for an error thrown in a middleware, Node's own.
    const reply = host.switchToHttp().getResponse<FastifyReply | ServerResponse>();
    const request = host.switchToHttp().getRequest<FastifyRequest | IncomingMessage>();
    const raw = 'raw' in request ? request.raw : request;
    // The request's logger (pino-http's, on the raw request) puts its id, method and URL on the
    // line.
    const { log } = raw as { log?: { child(b: object): ErrorLog } };
    const body = toErrorBody(
      exception,
      log
        ? { error: (message) => log.child({ context: 'HttpErrors' }).error(message) }
        : this.logger,
    );
    const status = statusOf(exception, body);
    if (!('raw' in reply)) {
      if (!reply.headersSent) endWithError(reply, body, status);
      return;
    }
    if (reply.sent || reply.raw.headersSent) return;
    // JSON whatever the route said it answers (`/metrics` is text).
    void reply.status(status).type('application/json; charset=utf-8').send(body);
  }
}
