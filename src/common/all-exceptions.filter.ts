import {
  ArgumentsHost,
  Catch,
  ExceptionFilter,
  HttpException,
  HttpStatus,
  Logger,
} from '@nestjs/common';
import type { Response } from 'express';
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
export function toErrorBody(exception: unknown, logger?: Logger): ErrorBody {
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
  const parserError = bodyParserError(exception);
  if (parserError) return parserError;
  logger?.error(
    exception instanceof Error ? (exception.stack ?? exception.message) : String(exception),
  );
  return { statusCode: 500, error: REASON[500], message: 'Internal server error' };
}

function bodyParserError(exception: unknown): ErrorBody | null {
  if (typeof exception !== 'object' || exception === null || !('type' in exception)) return null;
  const { type, status } = exception as { type: string; status?: number };
  switch (type) {
    case 'entity.too.large':
      return {
        statusCode: 413,
        error: REASON[413],
        message: 'Request body is larger than the limit of 65536 bytes',
      };
    case 'entity.parse.failed':
      return { statusCode: 400, error: REASON[400], message: 'Malformed JSON in request body' };
    case 'encoding.unsupported':
    case 'charset.unsupported':
      return { statusCode: 415, error: REASON[415], message: 'Unsupported body encoding' };
    default:
      if (status && status >= 400 && status < 500) {
        return {
          statusCode: status,
          error: REASON[status] ?? 'Bad Request',
          message: 'Invalid request body',
        };
      }
      return null;
  }
}

function statusOf(exception: unknown, body: ErrorBody): number {
  return exception instanceof HttpException ? exception.getStatus() : body.statusCode;
}

@Catch()
export class AllExceptionsFilter implements ExceptionFilter {
  private readonly logger = new Logger('HttpErrors');

  catch(exception: unknown, host: ArgumentsHost): void {
    const response = host.switchToHttp().getResponse<Response>();
    const body = toErrorBody(exception, this.logger);
    if (response.headersSent) return;
    response.status(statusOf(exception, body)).json(body);
  }
}
