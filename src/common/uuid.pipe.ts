import { ArgumentMetadata, BadRequestException, ParseUUIDPipe } from '@nestjs/common';
import { ApiParam } from '@nestjs/swagger';
import { Transform } from 'class-transformer';

/**
 * Ids must be UUIDs; anything else is a `400` that says so, never a `404` or a SQL error. A UUID
 * is the same in either case, so it is lower-cased: both databases then find the same row.
 */
class LowerCaseUuidPipe extends ParseUUIDPipe {
  async transform(value: string, metadata: ArgumentMetadata): Promise<string> {
    const uuid = await super.transform(value, metadata);
    return typeof uuid === 'string' ? uuid.toLowerCase() : uuid;
  }
}

export function parseUuid(name = 'id', optional = false): ParseUUIDPipe {
  return new LowerCaseUuidPipe({
    optional,
    exceptionFactory: () => new BadRequestException(`${name} must be a UUID`),
  });
}

/** For UUID fields of DTOs: the same lower-casing as `parseUuid`. */
export const LowerCase = () =>
  Transform(({ value }: { value: unknown }) =>
    typeof value === 'string' ? value.toLowerCase() : value,
  );

/** Documents the `{id}` path parameter of a route as a UUID. */
export const ApiIdParam = (description = 'The resource id') =>
  ApiParam({ name: 'id', type: String, format: 'uuid', description });
