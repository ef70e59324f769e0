import {
  CallHandler,
  ExecutionContext,
  HttpException,
  Injectable,
  NestInterceptor,
} from '@nestjs/common';
import { HTTP_CODE_METADATA } from '@nestjs/common/constants';
import type { Request, Response } from 'express';
import { createHash } from 'node:crypto';
import { Observable, catchError, from, mergeMap, of, throwError } from 'rxjs';
import type { Actor } from '../auth/actor';
import { toErrorBody } from '../common/all-exceptions.filter';
import { DomainError, DomainErrorCode } from '../common/domain-error';
import { IdempotencyKey } from './idempotency-key.entity';
import { IdempotencyStore } from './idempotency.store';

/**
 * `Idempotency-Key`: the first request with a key reserves it, runs, and stores its answer; a
 * repeat by the same user within 24 hours gets that answer again and schedules nothing. A repeat
 * while the first is still running is a `409`; the key on a different request is a `422`.
 * Of the errors only the domain's answers are kept (the instance was not found, or its state did
 * not allow the action); a request refused as invalid, or failed by a fault of ours, frees the
 * key for a corrected retry.
 */
const KEPT_ERRORS = new Set([404, 409]);

@Injectable()
export class IdempotencyInterceptor implements NestInterceptor {
  constructor(private readonly store: IdempotencyStore) {}

  intercept(context: ExecutionContext, next: CallHandler): Observable<unknown> {
    const http = context.switchToHttp();
    const request = http.getRequest<Request & { actor: Actor }>();
    const response = http.getResponse<Response>();
    const key = request.header('idempotency-key');
    if (key === undefined) return next.handle();
    if (key.length < 1 || key.length > 255) {
      return throwError(
        () =>
          new DomainError(
            DomainErrorCode.BadRequest,
            'Idempotency-Key must be 1 to 255 characters',
          ),
      );
    }
    const fingerprint = createHash('sha256')
      .update(`${request.method} ${request.path} ${JSON.stringify(request.body ?? null)}`)
      .digest('hex');
    const userId = request.actor.id;
    const status: number =
      Reflect.getMetadata(HTTP_CODE_METADATA, context.getHandler()) ??
      (request.method === 'POST' ? 201 : 200);

    return from(this.store.reserve(userId, key, fingerprint)).pipe(
      mergeMap((earlier) => {
        if (earlier) return of(this.replay(earlier, response));
        return next.handle().pipe(
          mergeMap((body) =>
            from(
              this.store.complete(userId, key, status, response.getHeader('location'), body),
            ).pipe(mergeMap(() => of(body))),
          ),
          catchError((error: unknown) => {
            const answer = toErrorBody(error);
            const kept = KEPT_ERRORS.has(answer.statusCode)
              ? this.store.complete(userId, key, answer.statusCode, undefined, answer)
              : this.store.release(userId, key);
            return from(kept).pipe(mergeMap(() => throwError(() => error)));
          }),
        );
      }),
    );
  }

  private replay(earlier: IdempotencyKey, response: Response): unknown {
    if (earlier.statusCode! >= 400) {
      throw new HttpException(earlier.body as Record<string, unknown>, earlier.statusCode!);
    }
    response.status(earlier.statusCode!);
    if (earlier.location) response.location(earlier.location);
    return earlier.body;
  }
}
