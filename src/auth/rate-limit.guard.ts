import { ExecutionContext, Injectable } from '@nestjs/common';
import { ThrottlerGuard, ThrottlerModuleOptions } from '@nestjs/throttler';
import type { FastifyRequest as Request } from 'fastify';
import type { AppConfig } from '../config/app-config';
import type { Actor } from './actor';
import { RateLimitStore } from './rate-limit.store';

type AuthenticatedRequest = Request & { actor?: Actor };

/**
 * Requests per minute per user (each token is one user's), counted in this process after the
 * token is checked. Unauthenticated requests are not counted: they stop at `401`. Answers `429`
 * with `Retry-After` (seconds) and `X-RateLimit-*` headers on every counted request.
 */
@Injectable()
export class RateLimitGuard extends ThrottlerGuard {
  protected override getTracker(request: AuthenticatedRequest): Promise<string> {
    return Promise.resolve(request.actor?.id ?? '');
  }

  /** One budget per user across every route (the library's default counts per route). */
  protected override generateKey(_context: ExecutionContext, tracker: string, name: string) {
    return `${name}:${tracker}`;
  }

  protected override shouldSkip(context: ExecutionContext): Promise<boolean> {
    const request = context.switchToHttp().getRequest<AuthenticatedRequest>();
    return Promise.resolve(request.actor === undefined);
  }
}

export function rateLimitOptions(config: AppConfig): ThrottlerModuleOptions {
  const limit = config.rateLimitPerMinute;
  return {
    throttlers: [{ ttl: 60_000, limit: limit > 0 ? limit : Number.MAX_SAFE_INTEGER }],
    storage: new RateLimitStore(),
    skipIf: () => limit === 0,
    errorMessage: (_context, detail) =>
      `Too many requests: a token may make ${limit} requests a minute. ` +
      `Try again in ${detail.timeToBlockExpire} s (the Retry-After header says the same).`,
  };
}
