import { BadRequestException, ParseUUIDPipe } from '@nestjs/common';

/** Ids must be UUIDs; anything else is a `400` that says so, never a `404` or a SQL error. */
export function parseUuid(name = 'id', optional = false): ParseUUIDPipe {
  return new ParseUUIDPipe({
    optional,
    exceptionFactory: () => new BadRequestException(`${name} must be a UUID`),
  });
}
