import { ApiPropertyOptional } from '@nestjs/swagger';
import { Transform, Type } from 'class-transformer';
import { IsIn, IsInt, IsOptional, IsString, Max, MaxLength, Min } from 'class-validator';
import { INSTANCE_STATES, InstanceState } from '../../state-machine/instance.machine';

export class ListInstancesQuery {
  @ApiPropertyOptional({
    enum: INSTANCE_STATES,
    isArray: true,
    description: 'Repeat to match any of several: `?state=online&state=offline`',
  })
  @IsOptional()
  @Transform(({ value }) => (Array.isArray(value) ? value : [value]))
  @IsIn(INSTANCE_STATES, {
    each: true,
    message: `state must be one of: ${INSTANCE_STATES.join(', ')}`,
  })
  state?: InstanceState[];

  @ApiPropertyOptional({ description: 'Case-insensitive match anywhere in the name' })
  @IsOptional()
  @IsString({ message: 'name must be a single string' })
  @MaxLength(63, { message: 'name must be at most 63 characters' })
  name?: string;

  @ApiPropertyOptional({ type: 'integer', minimum: 1, maximum: 500, default: 50 })
  @IsOptional()
  @Type(() => Number)
  @IsInt({ message: 'limit must be a whole number from 1 to 500' })
  @Min(1, { message: 'limit must be a whole number from 1 to 500' })
  @Max(500, { message: 'limit must be a whole number from 1 to 500' })
  limit: number = 50;

  @ApiPropertyOptional({ type: 'integer', minimum: 0, maximum: 2_147_483_647, default: 0 })
  @IsOptional()
  @Type(() => Number)
  @IsInt({ message: 'offset must be a whole number from 0 to 2147483647' })
  @Min(0, { message: 'offset must be a whole number from 0 to 2147483647' })
  @Max(2_147_483_647, { message: 'offset must be a whole number from 0 to 2147483647' })
  offset: number = 0;
}
