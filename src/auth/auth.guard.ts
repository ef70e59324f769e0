import {
  CanActivate,
  ExecutionContext,
  ForbiddenException,
  Injectable,
  UnauthorizedException,
} from '@nestjs/common';
import { Reflector } from '@nestjs/core';
import type { FastifyRequest as Request } from 'fastify';
import { PUBLIC_ROUTE, QUERY_TOKEN, STAFF_ONLY } from './auth.decorators';
import { UsersService } from './users.service';

/** Global: every route needs a bearer token unless marked `@Public()`. */
@Injectable()
export class AuthGuard implements CanActivate {
  constructor(
    private readonly reflector: Reflector,
    private readonly users: UsersService,
  ) {}

  async canActivate(context: ExecutionContext): Promise<boolean> {
    const targets = [context.getHandler(), context.getClass()];
    if (this.reflector.getAllAndOverride<boolean>(PUBLIC_ROUTE, targets)) return true;
    const request = context.switchToHttp().getRequest<Request & { actor?: unknown }>();
    const allowQuery = this.reflector.getAllAndOverride<boolean>(QUERY_TOKEN, targets);
    const token = bearerToken(request) ?? (allowQuery ? queryToken(request) : null);
    if (!token) {
      throw new UnauthorizedException(
        allowQuery
          ? 'Missing bearer token: send Authorization: Bearer <token>, or ?access_token=<token> ' +
              'where a header cannot be sent (a browser EventSource)'
          : 'Missing bearer token: send Authorization: Bearer <token>',
      );
    }
    const actor = await this.users.authenticate(token);
    if (!actor) throw new UnauthorizedException('Unknown or revoked token');
    request.actor = actor;
    if (this.reflector.getAllAndOverride<boolean>(STAFF_ONLY, targets) && !actor.isStaff) {
      throw new ForbiddenException('Only staff may do this');
    }
    return true;
  }
}

function bearerToken(request: Request): string | null {
  const header = request.headers.authorization;
  if (!header) return null;
  const match = /^Bearer\s+(\S+)\s*$/i.exec(header);
  return match ? match[1] : null;
}

function queryToken(request: Request): string | null {
  const token = (request.query as Record<string, unknown>).access_token;
  return typeof token === 'string' && token.length > 0 ? token : null;
}
