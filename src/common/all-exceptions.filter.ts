import {
  ArgumentsHost,
  Catch,
  ExceptionFilter,
  HttpException,
  HttpStatus,
  Logger,
} from '@nestjs/common';
import type { Response } from 'express';
import { QueryFailedError } from 'typeorm';
import { BODY_LIMIT_BYTES } from './body-limit';
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
 * from the body parser keep their 4xx; anything unexpected is logged and answered as a bare 500,
 * so no stack trace or SQL ever reaches a client.
 */
export function toErrorBody(exception: unknown, logger?: ErrorLog): ErrorBody {
  if (exception instanceof DomainError) {
    const statusCode = STATUS_OF[exception.code];
    return { statusCode, error: REASON[statusCode], message: exception.message };
  }
  if (exception instanceof HttpException) {
    const statusCode = exception.getStatus();
    const response = exception.getResponse();
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
  const clientError = bodyParserError(exception) ?? databaseInputError(exception);
  if (clientError) return clientError;
  logger?.error(
    exception instanceof Error ? (exception.stack ?? exception.message) : String(exception),
  );
  return { statusCode: 500, error: REASON[500], message: 'Internal server error' };
}

/** Errors of the body parser (and the decompression under it) are the client's: keep their 4xx. */
function bodyParserError(exception: unknown): ErrorBody | null {
  if (typeof exception !== 'object' || exception === null) return null;
  const { type, status } = exception as { type?: string; status?: unknown };
  if (type === 'entity.too.large') {
    return {
      statusCode: 413,
      error: REASON[413],
      message: `Request body is larger than the limit of ${BODY_LIMIT_BYTES} bytes`,
    };
  }
  if (type === 'entity.parse.failed') {
    return { statusCode: 400, error: REASON[400], message: 'Malformed JSON in request body' };
  }
  if (type === 'encoding.unsupported' || type === 'charset.unsupported') {
    return { statusCode: 415, error: REASON[415], message: 'Unsupported body encoding' };
  }
  if (typeof status === 'number' && status >= 400 && status < 500) {
    return {
      statusCode: status,
      error: REASON[status] ?? 'Bad Request',
      message: 'The request body could not be read (bad encoding or compression)',
    };
  }
  return null;
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

function statusOf(exception: unknown, body: ErrorBody): number {
  return exception instanceof HttpException ? exception.getStatus() : body.statusCode;
}

/** Where an unexpected error's stack goes: a Nest logger, or a request's own pino logger. */
interface ErrorLog {
  error(message: string): unknown;
}

@Catch()
export class AllExceptionsFilter implements ExceptionFilter {
  private readonly logger = new Logger('HttpErrors');

  catch(exception: unknown, host: ArgumentsHost): void {
    const response = host.switchToHttp().getResponse<Response>();
    // The request's logger (pino-http's `req.log`) puts its id, method and URL on the line.
    const { log } = host.switchToHttp().getRequest<{ log?: { child(b: object): ErrorLog } }>();
    const body = toErrorBody(
      exception,
      log
        ? { error: (message) => log.child({ context: 'HttpErrors' }).error(message) }
        : this.logger,
    );
    if (response.headersSent) return;
    response.status(statusOf(exception, body)).json(body);
  }
}
