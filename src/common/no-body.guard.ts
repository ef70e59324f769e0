import {
  BadRequestException,
  CanActivate,
  ExecutionContext,
  Injectable,
  UseGuards,
} from '@nestjs/common';
import type { FastifyRequest as Request } from 'fastify';

/**
 * For routes that take no body: any field sent is unknown, and unknown fields are a `400`, in
 * the words the validation pipe uses for other routes. A guard, not an interceptor: it only
 * refuses, and a route with no interceptor skips Nest's per-request interceptor chain.
 */
@Injectable()
export class NoBodyGuard implements CanActivate {
  canActivate(context: ExecutionContext): boolean {
    const body: unknown = context.switchToHttp().getRequest<Request>().body;
    if (body === undefined || body === null) return true;
    if (typeof body !== 'object' || Array.isArray(body)) {
      throw new BadRequestException(['This request takes no body']);
    }
    const fields = Object.keys(body);
    if (fields.length > 0) {
      throw new BadRequestException(fields.map((field) => `property ${field} should not exist`));
    }
    return true;
  }
}

/** The route takes no body. */
export const NoBody = () => UseGuards(NoBodyGuard);
