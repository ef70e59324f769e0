import { createParamDecorator, ExecutionContext, SetMetadata } from '@nestjs/common';
import type { Actor } from './actor';

export const PUBLIC_ROUTE = 'provisor:public';
export const STAFF_ONLY = 'provisor:staff';
export const QUERY_TOKEN = 'provisor:query-token';

/** The route needs no token. */
export const Public = () => SetMetadata(PUBLIC_ROUTE, true);

/** The route is for staff; anyone else gets `403` before anything else is checked. */
export const Staff = () => SetMetadata(STAFF_ONLY, true);

/**
 * The route also takes the token as `?access_token=`, for clients that cannot send headers (a
 * browser's EventSource). Only where it must: URLs end up in more places than headers do.
 */
export const AllowQueryToken = () => SetMetadata(QUERY_TOKEN, true);

/** The authenticated caller. */
export const CurrentUser = createParamDecorator(
  (_: unknown, ctx: ExecutionContext): Actor => ctx.switchToHttp().getRequest().actor,
);
