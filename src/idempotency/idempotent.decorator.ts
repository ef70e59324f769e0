import { UseInterceptors } from '@nestjs/common';
import { IdempotencyInterceptor } from './idempotency.interceptor';

/** The route honours `Idempotency-Key`. */
export const Idempotent = () => UseInterceptors(IdempotencyInterceptor);
