import {
  BadRequestException,
  CallHandler,
  ExecutionContext,
  Injectable,
  NestInterceptor,
  UseInterceptors,
} from '@nestjs/common';
import type { Request } from 'express';
import { Observable } from 'rxjs';

/**
 * For routes that take no body: any field sent is unknown, and unknown fields are a `400`, in
 * the words the validation pipe uses for other routes.
 */
@Injectable()
export class NoBodyInterceptor implements NestInterceptor {
  intercept(context: ExecutionContext, next: CallHandler): Observable<unknown> {
    const body: unknown = context.switchToHttp().getRequest<Request>().body;
    if (body === undefined || body === null) return next.handle();
    if (typeof body !== 'object' || Array.isArray(body)) {
      throw new BadRequestException(['This request takes no body']);
    }
    const fields = Object.keys(body);
    if (fields.length > 0) {
      throw new BadRequestException(fields.map((field) => `property ${field} should not exist`));
    }
    return next.handle();
  }
}

/** The route takes no body. */
export const NoBody = () => UseInterceptors(NoBodyInterceptor);
