import { ApiProperty, ApiPropertyOptional } from '@nestjs/swagger';
import { Type } from 'class-transformer';
import { IsInt, IsOptional, IsString, IsUUID, Max, Min } from 'class-validator';
import { LowerCase } from '../../common/uuid.pipe';
import type { InstanceEvent } from '../../state-machine/instance-event.entity';

/** Event ids are a 32-bit integer column on both databases. */
export const MAX_EVENT_ID = 2_147_483_647;

/** What the event list and the stream share: an optional instance to follow. */
class EventFilterQuery {
  @ApiPropertyOptional({ format: 'uuid', description: 'Only events of this instance' })
  @IsOptional()
  @IsUUID('all', { message: 'instance_id must be a UUID' })
  @LowerCase()
  instance_id?: string;
}

export class ListEventsQuery extends EventFilterQuery {
  @ApiPropertyOptional({
    type: 'integer',
    minimum: 0,
    description: 'An event id: only later events are listed',
  })
  @IsOptional()
  @Type(() => Number)
  @IsInt({ message: 'after must be an event id (a whole number)' })
  @Min(0, { message: 'after must be an event id (a whole number)' })
  @Max(MAX_EVENT_ID, {
    message: `after must be an event id (a whole number up to ${MAX_EVENT_ID})`,
  })
  after?: number;

  @ApiPropertyOptional({ type: 'integer', minimum: 1, maximum: 500, default: 100 })
  @IsOptional()
  @Type(() => Number)
  @IsInt({ message: 'limit must be a whole number from 1 to 500' })
  @Min(1, { message: 'limit must be a whole number from 1 to 500' })
  @Max(500, { message: 'limit must be a whole number from 1 to 500' })
  limit: number = 100;
}

export class EventDto {
  @ApiProperty({ type: 'integer', description: 'Increasing; pass as `after` to read on' })
  id: number;
  @ApiProperty({
    example: 'instance.start.succeeded',
    description:
      'instance.<action>.scheduled|started|succeeded|failed, instance.updated or instance.deleted',
  })
  type: string;
  @ApiProperty({ format: 'uuid' }) instance_id: string;
  @ApiProperty({ description: "The instance's state after the event; 'deleted' once removed" })
  state: string;
  @ApiProperty() error_message: string;
  @ApiProperty({ format: 'date-time' }) at: string;

  static of(e: InstanceEvent): EventDto {
    return {
      id: e.id,
      type: e.type,
      instance_id: e.instanceId,
      state: e.state,
      error_message: e.errorMessage,
      at: e.at.toISOString(),
    };
  }
}

export class EventListDto {
  @ApiProperty({ type: [EventDto] }) items: EventDto[];
}

export class StreamEventsQuery extends EventFilterQuery {
  @ApiPropertyOptional({
    description:
      "The API token, for clients that cannot send headers (a browser's EventSource); prefer the Authorization header",
  })
  @IsOptional()
  @IsString({ message: 'access_token must be a string' })
  access_token?: string;
}
