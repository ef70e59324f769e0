import { createParamDecorator, ExecutionContext } from '@nestjs/common';
import { HTTP_CODE_METADATA } from '@nestjs/common/constants';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { createHash } from 'node:crypto';
import type { Actor } from '../auth/actor';
import { DomainError, DomainErrorCode } from '../common/domain-error';

/** A request that carries an `Idempotency-Key`: what `Idempotency.run` keeps its answer by. */
export interface IdempotentCall {
  key: string;
  userId: string;
  /** Method, path and body: the same key on a different request is refused. */
  fingerprint: string;
  /** The route's success status, kept with the answer. */
  status: number;
  response: FastifyReply;
}

/**
 * A route parameter: the request's `Idempotency-Key` as an `IdempotentCall`, or null when the
 * request has none. The handler runs its work through `Idempotency.run`. A key outside 1 to 255
 * characters is a `400`.
 */
export const Idempotent = createParamDecorator(
  (_: unknown, context: ExecutionContext): IdempotentCall | null => {
    const http = context.switchToHttp();
    const request = http.getRequest<FastifyRequest & { actor: Actor }>();
    // Node joins a repeated header of this name into one string.
    const key = request.headers['idempotency-key'] as string | undefined;
    if (key === undefined) return null;
    if (key.length < 1 || key.length > 255) {
      throw new DomainError(
        DomainErrorCode.BadRequest,
        'Idempotency-Key must be 1 to 255 characters',
      );
    }
    const fingerprint = createHash('sha256')
      .update(
        `${request.method} ${request.url.split('?')[0]} ${JSON.stringify(request.body ?? null)}`,
      )
      .digest('hex');
    const status: number =
      Reflect.getMetadata(HTTP_CODE_METADATA, context.getHandler()) ??
      (request.method === 'POST' ? 201 : 200);
    return {
      key,
      userId: request.actor.id,
      fingerprint,
      status,
      response: http.getResponse<FastifyReply>(),
    };
  },
);
