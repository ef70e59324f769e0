import { applyDecorators } from '@nestjs/common';
import { ApiResponse } from '@nestjs/swagger';
import { ErrorBodyDto } from './error-body.dto';

const DESCRIPTIONS: Record<number, string> = {
  400: 'Invalid input: the message says which field and why',
  401: 'Missing or unknown bearer token',
  403: 'Staff only',
  404: 'No such resource (or not yours)',
  409: 'Not allowed in the current state, or a conflicting change',
  413: 'Body larger than 64 KiB',
  422: 'Idempotency-Key reused for a different request',
};

/** Documents the error answers of a route, all in the one error shape. */
export function ApiErrors(...statuses: number[]) {
  return applyDecorators(
    ...statuses.map((status) =>
      ApiResponse({ status, description: DESCRIPTIONS[status], type: ErrorBodyDto }),
    ),
  );
}
