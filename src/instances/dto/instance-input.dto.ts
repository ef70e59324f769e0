import { ApiProperty, ApiPropertyOptional } from '@nestjs/swagger';
import { IsIn, IsString, Matches, MaxLength, MinLength } from 'class-validator';
import { OptionalButNotNull } from '../../common/present.decorator';
import { InstanceState } from '../../state-machine/instance.machine';
import { FLAVOR_NAMES, IMAGE_NAMES } from '../catalog';

export const NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/;
const NAME_MESSAGE =
  "name must be 1 to 63 characters of letters, digits, '-', '_' or '.', starting with a letter or digit";
const FLAVOR_MESSAGE = `flavor must be one of: ${FLAVOR_NAMES.join(', ')}`;

export class CreateInstanceDto {
  @ApiProperty({ example: 'web-1', pattern: NAME_PATTERN.source, minLength: 1, maxLength: 63 })
  @IsString({ message: 'name must be a string' })
  @Matches(NAME_PATTERN, { message: NAME_MESSAGE })
  name: string;

  @ApiProperty({ enum: FLAVOR_NAMES, example: 'small' })
  @IsIn(FLAVOR_NAMES, { message: FLAVOR_MESSAGE })
  flavor: string;

  @ApiPropertyOptional({
    enum: IMAGE_NAMES,
    example: 'debian-12',
    description: 'Default: debian-12',
  })
  @OptionalButNotNull()
  @IsIn(IMAGE_NAMES, { message: `image must be one of: ${IMAGE_NAMES.join(', ')}` })
  image?: string;

  @ApiPropertyOptional({ maxLength: 500, example: '', description: 'Default: empty' })
  @OptionalButNotNull()
  @IsString({ message: 'description must be a string' })
  @MaxLength(500, { message: 'description must be at most 500 characters' })
  description?: string;
}

export class UpdateInstanceDto {
  @ApiPropertyOptional({
    example: 'web-2',
    pattern: NAME_PATTERN.source,
    minLength: 1,
    maxLength: 63,
  })
  @OptionalButNotNull()
  @IsString({ message: 'name must be a string' })
  @Matches(NAME_PATTERN, { message: NAME_MESSAGE })
  name?: string;

  @ApiPropertyOptional({ maxLength: 500 })
  @OptionalButNotNull()
  @IsString({ message: 'description must be a string' })
  @MaxLength(500, { message: 'description must be at most 500 characters' })
  description?: string;
}

export class ResizeInstanceDto {
  @ApiProperty({ enum: FLAVOR_NAMES, example: 'medium' })
  @IsIn(FLAVOR_NAMES, { message: FLAVOR_MESSAGE })
  flavor: string;
}

export class SetErredDto {
  @ApiProperty({ example: 'Host lost; VM state unknown', maxLength: 2000 })
  @IsString({ message: 'error_message must be a string' })
  @MinLength(1, { message: 'error_message must say what is wrong (1 to 2000 characters)' })
  @MaxLength(2000, { message: 'error_message must be at most 2000 characters' })
  error_message: string;
}

export class SetOkDto {
  @ApiProperty({ enum: [InstanceState.Online, InstanceState.Offline] })
  @IsIn([InstanceState.Online, InstanceState.Offline], {
    message: 'state must be one of: online, offline',
  })
  state: InstanceState.Online | InstanceState.Offline;
}
