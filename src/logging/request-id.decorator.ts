import { createParamDecorator, ExecutionContext } from '@nestjs/common';

/**
 * The id of the request being served (its `X-Request-Id`, or the one made up for it), for the
 * work it starts: an operation remembers it, and its job's log lines carry it.
 */
export const RequestId = createParamDecorator(
  (_: unknown, ctx: ExecutionContext): string | undefined => {
    const id = ctx.switchToHttp().getRequest<{ id?: unknown }>().id;
    return typeof id === 'string' && id !== '' ? id : undefined;
  },
);
