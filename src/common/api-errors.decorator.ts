import { applyDecorators } from '@nestjs/common';
import { ApiExtraModels, ApiResponse, getSchemaPath } from '@nestjs/swagger';
import { ErrorBodyDto } from './error-body.dto';

const ERRORS: Record<number, { description: string; error: string; message: string | string[] }> = {
  400: {
    description: 'Invalid input: the message says which field and why',
    error: 'Bad Request',
    message: ['flavor must be one of: small, medium, large'],
  },
  401: {
    description: 'Missing or unknown bearer token',
    error: 'Unauthorized',
    message: 'Missing bearer token: send Authorization: Bearer <token>',
  },
  403: { description: 'Staff only', error: 'Forbidden', message: 'Only staff may do this' },
  404: {
    description: 'No such resource (or not yours)',
    error: 'Not Found',
    message: 'Instance not found',
  },
  409: {
    description: 'Not allowed in the current state, or a conflicting change',
    error: 'Conflict',
    message: "Cannot start instance in state 'online'; allowed from: offline",
  },
  413: {
    description: 'Body larger than 64 KiB',
    error: 'Payload Too Large',
    message: 'Request body is larger than the limit of 65536 bytes',
  },
  422: {
    description: 'Idempotency-Key reused for a different request',
    error: 'Unprocessable Entity',
    message: 'Idempotency-Key was already used for a different request; use a new key',
  },
};

/** Documents the error answers of a route, all in the one error shape, each with its own example. */
export function ApiErrors(...statuses: number[]) {
  return applyDecorators(
    ApiExtraModels(ErrorBodyDto),
    ...statuses.map((status) => {
      const { description, error, message } = ERRORS[status];
      return ApiResponse({
        status,
        description,
        schema: {
          allOf: [{ $ref: getSchemaPath(ErrorBodyDto) }],
          example: { statusCode: status, error, message },
        },
      });
    }),
  );
}
